"""Atomic writes, Parquet contracts and provenance metadata."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from pipeline import paths
from pipeline.artifacts import atomic_path
from pipeline.errors import PipelineError
from pipeline.io import (
    AUGMENTED_SCHEMA,
    SPLIT_SCHEMA,
    dir_sha256,
    logits_schema,
    read_json,
    read_metadata,
    read_table,
    write_json,
    write_table,
)

ROOT = Path(__file__).resolve().parents[1]


def _split_table() -> pa.Table:
    return pa.table({"idx": [0, 1], "text_a": ["a", "b"], "text_b": [None, None], "label": [1, 0]},
                    schema=SPLIT_SCHEMA)


def test_failed_write_keeps_the_previous_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_directory_outputs_are_replaced_whole(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "stale.bin").write_text("x")
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "weights.bin").write_text("y")
    assert [p.name for p in target.iterdir()] == ["weights.bin"]


def test_parquet_round_trip_is_deterministic_and_keeps_metadata(tmp_path):
    a = write_table(_split_table(), tmp_path / "a.parquet", {"seed": 0, "task": "sst2"})
    b = write_table(_split_table(), tmp_path / "b.parquet", {"task": "sst2", "seed": 0})
    assert a.read_bytes() == b.read_bytes()
    assert read_metadata(a) == {"seed": 0, "task": "sst2"}
    assert read_table(a, SPLIT_SCHEMA).to_pylist()[0]["text_a"] == "a"


def test_schema_mismatch_is_a_clear_error(tmp_path):
    path = write_table(_split_table(), tmp_path / "split.parquet")
    with pytest.raises(PipelineError, match="missing column 'source_idx'"):
        read_table(path, AUGMENTED_SCHEMA)
    with pytest.raises(PipelineError, match="nope.parquet: Parquet file not found; check the path, or re-make it: dvc repro$"):
        read_table(tmp_path / "nope.parquet")
    logits = pa.table({"idx": [0], "logits": pa.array([[0.5, 1.5, 2.5]], pa.list_(pa.float32(), 3))})
    path = write_table(logits, tmp_path / "logits.parquet")
    with pytest.raises(PipelineError, match="column 'logits' has type"):
        read_table(path, logits_schema(2))


def test_dir_hash_follows_content_not_timestamps(tmp_path):
    for name in ("x", "y"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text("{}")
    assert dir_sha256(tmp_path / "x") == dir_sha256(tmp_path / "y")
    (tmp_path / "y" / "config.json").write_text("{ }")
    assert dir_sha256(tmp_path / "x") != dir_sha256(tmp_path / "y")


# --------------------------------------------------------------------------- bad artifacts


def test_truncated_artifacts_name_the_stage_that_rewrites_them(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    split = write_table(_split_table(), paths.prepared_split("sst2", "train"))
    split.write_bytes(split.read_bytes()[:-100])
    expected = "data/glue/sst2/train.parquet: not a readable Parquet file ("
    for read in (read_table, read_metadata):
        with pytest.raises(PipelineError) as failure:
            read(split)
        assert str(failure.value).startswith(expected), failure.value
        assert str(failure.value).endswith("; re-make it: dvc repro prepare@sst2")
    metrics = write_json({"teacher": {"eval_accuracy": 0.9}}, paths.metrics_file("qqp"))
    metrics.write_text(metrics.read_text()[:20])
    expected = r"^metrics/evaluate/qqp.json: not a readable JSON file \(.*: line 3 column 4 .*\); re-make it: dvc repro evaluate@qqp$"
    with pytest.raises(PipelineError, match=expected):
        read_json(metrics)


def test_a_directory_where_an_artifact_goes_is_called_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    paths.logits("qqp").mkdir(parents=True)
    with pytest.raises(PipelineError, match=r"^data/logits/qqp.parquet: a directory, not a Parquet file; "
                                            r"re-make it: dvc repro label@qqp$"):
        read_table(paths.logits("qqp"))


@pytest.mark.parametrize(
    ("path", "stage"),
    [
        ("data/glue/qqp/dev.parquet", "prepare@qqp"),
        ("data/glue/tickets/train.parquet", "prepare_dataset@tickets"),  # a dataset of your own
        ("data/params/mnli/teacher.json", "configure@mnli"),
        ("models/export/tickets/distilled/model.onnx", "export@tickets-distilled"),
        ("data/augmented/sst2.parquet", "augment@sst2"),
        ("./data/logits/mnli.parquet", "label@mnli"),
        ("models/teacher/sst2/config.json", "teacher@sst2"),
        ("metrics/teacher/qqp.json", "teacher@qqp"),
        ("models/student/sst2/baseline", "student@sst2-baseline"),
        ("metrics/curves/qqp-distilled.csv", "student@qqp-distilled"),
        ("metrics/evaluate/sst2_speed.json", "evaluate@sst2"),
        ("elsewhere/x.parquet", None),
    ],
)
def test_producing_stage_follows_the_layout(path, stage):
    assert paths.producing_stage(path) == stage


# --------------------------------------------------------------------------- no debris

SLOW_WRITER = """
import sys, time
from pathlib import Path
from pipeline.artifacts import atomic_path

with atomic_path(Path(sys.argv[1])) as tmp:
    tmp.mkdir()
    for n in range(4):
        (tmp / f"shard-{n}.bin").write_bytes(bytes(1 << 20))
    print("saving", flush=True)
    time.sleep(120)  # killed here, mid-save
"""


def test_a_killed_save_leaves_a_temp_the_next_save_removes(tmp_path):
    target = tmp_path / "sst2"
    writer = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, str(target)], stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert writer.stdout.readline() == "saving\n"
        writer.send_signal(signal.SIGKILL)
        assert writer.wait(timeout=60) == -signal.SIGKILL
    finally:
        writer.kill()
        writer.stdout.close()
    (debris,) = tmp_path.glob(".sst2.*.tmp")
    assert len(list(debris.rglob("shard-*.bin"))) == 4 and not target.exists()
    (tmp_path / ".sst2.json.0123abcd.tmp").mkdir()  # another output's temp (a live writer's): kept
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "weights.bin").write_text("y")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".sst2.json.0123abcd.tmp", "sst2"]


@pytest.mark.parametrize("ignore_file", [".gitignore", ".dvcignore"])
def test_temps_are_ignored_by_git_and_dvc(tmp_path, ignore_file):
    """.dvcignore has gitignore syntax, so git checks both files."""
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    shutil.copy(ROOT / ignore_file, tmp_path / ".gitignore")
    names = ["models/teacher/.sst2.0a1b2c3d.tmp", "metrics/.sst2.json.0a1b2c3d.tmp/sst2.json",
             "models/teacher/sst2/config.json", "params.yaml"]
    result = subprocess.run(["git", "check-ignore", "--no-index", *names], cwd=tmp_path,
                            capture_output=True, text=True)
    assert result.stdout.split() == names[:2]


def test_a_parquet_artifact_of_another_task_is_refused(tmp_path, monkeypatch):
    """SST-2's and CoLA's prepared splits have the same columns: their metadata tells them apart."""
    monkeypatch.chdir(tmp_path)
    split = write_table(_split_table(), paths.prepared_split("sst2", "train"), {"task": "cola"})
    with pytest.raises(PipelineError, match=r"^data/glue/sst2/train.parquet: written for task cola, not sst2; "
                                            r"re-make it: dvc repro prepare@sst2$"):
        read_table(split, SPLIT_SCHEMA, "sst2")
    assert read_table(split, SPLIT_SCHEMA, "cola").num_rows == 2
