"""Artifacts are saved whole (a save interrupted at any step leaves the old output or the new
one) and a damaged one is one line naming the file and how to restore it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import artifacts
from pipeline.artifacts import atomic_path, damaged, reading, require_artifact, restore_hint
from pipeline.errors import PipelineError

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("shape", ["teacher", "student", "export"])
@pytest.mark.parametrize("protocol", ["exchange", "fallback"])
@pytest.mark.parametrize("mode", ["exit", "raise"])
def test_a_save_interrupted_at_any_step_leaves_the_old_output_or_the_new(tmp_path, shape, protocol, mode):
    """tests/interrupted_save.py interrupts the save at each filesystem step in turn (a forked
    child exits at once, as a kill -9 does, or raises) and reports what is left there."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "interrupted_save.py"), str(tmp_path), shape, protocol, mode],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    steps = json.loads(result.stdout)
    assert len(steps) > 20 and not steps[-1]["interrupted"] and all(s["interrupted"] for s in steps[:-1])
    left = [s["after_kill"] for s in steps[:-1]]
    assert {"old", "new"} <= set(left), left  # the interruptions span the swap
    # Exchanged in one step, the path holds old or new at every instant. Without an exchange a
    # kill between its two moves leaves the old output aside, which the next reader moves back.
    allowed = {"old", "new"} if protocol == "exchange" or mode == "raise" else {"old", "new", "missing"}
    assert set(left) <= allowed, steps
    assert left.count("missing") <= 1
    assert {s["after_read"] for s in steps} <= {"old", "new"}
    assert {s["after_rerun"] for s in steps} == {"new"}
    assert all(s["leftovers"] == [] for s in steps)


def test_the_exchange_swaps_two_directories_in_one_step(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x").write_text("a")
    (tmp_path / "b").mkdir()
    if not artifacts.exchange(tmp_path / "a", tmp_path / "b"):
        pytest.skip("this OS or filesystem has no exchange rename; the fallback test covers it")
    assert (tmp_path / "b" / "x").read_text() == "a" and not any((tmp_path / "a").iterdir())


def test_a_file_replaces_a_directory_and_back(tmp_path):
    target = tmp_path / "out"
    with atomic_path(target) as tmp:
        tmp.mkdir()
    with atomic_path(target) as tmp:
        tmp.write_text("file")
    assert target.read_text() == "file"
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "f").write_text("dir")
    assert (target / "f").read_text() == "dir" and [p.name for p in tmp_path.iterdir()] == ["out"]


# --------------------------------------------------------------------------- reading


def test_a_damaged_artifact_is_one_line_naming_file_problem_and_stage(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = Path("models/student/sst2/distilled/model.safetensors")
    model.parent.mkdir(parents=True)
    model.write_bytes(b"\x00" * 7)
    with pytest.raises(PipelineError) as failure, reading(model, "safetensors"):
        raise ValueError("header too small\nsecond line")
    assert str(failure.value) == (
        "models/student/sst2/distilled/model.safetensors: not a readable safetensors file (header too small); "
        "re-make it: dvc repro student@sst2-distilled"
    )
    with pytest.raises(PipelineError, match=r"^models/teacher/qqp: teacher directory not found; re-make it: "
                                            r"dvc repro teacher@qqp$"):
        require_artifact("models/teacher/qqp", "teacher directory")
    with pytest.raises(PipelineError, match=r"^models/student/sst2/distilled: a directory, not a safetensors file;"):
        require_artifact(model.parent, "safetensors")
    with pytest.raises(PipelineError, match=r"^models/student/sst2/distilled/model.safetensors: a file, not a "
                                            r"student directory;"):
        require_artifact(model, "student directory")
    assert str(damaged("elsewhere/x.onnx", "truncated")) == (
        "elsewhere/x.onnx: truncated; check the path, or re-make it: dvc repro"
    )


def test_the_hint_says_checkout_when_the_cache_holds_the_recorded_output(tmp_path, monkeypatch):
    """A DVC 3 cache as `dvc.lock` and `.dvc/config` point at it: the file objects under
    files/md5/, and a directory's `.dir` listing with every file it lists."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    cache = tmp_path / "elsewhere-cache"
    (tmp_path / ".dvc").mkdir()
    (tmp_path / ".dvc" / "config").write_text("[core]\n    remote = local\n[cache]\n    dir = ../elsewhere-cache\n")
    file_md5, listing_md5 = "0" * 32, "1" * 32 + ".dir"
    (tmp_path / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  teacher@sst2:\n    outs:\n"
        f"    - path: models/teacher/sst2\n      md5: {listing_md5}\n"
    )
    stage_hint = restore_hint("models/teacher/sst2/model.safetensors")
    assert stage_hint == "re-make it: dvc repro teacher@sst2"  # nothing cached yet
    listing = cache / "files" / "md5" / "11" / ("1" * 30 + ".dir")
    listing.parent.mkdir(parents=True)
    listing.write_text(json.dumps([{"md5": file_md5, "relpath": "model.safetensors"}]))
    assert restore_hint("models/teacher/sst2/model.safetensors") == stage_hint  # a listed file is missing
    (cache / "files" / "md5" / "00").mkdir()
    (cache / "files" / "md5" / "00" / ("0" * 30)).write_bytes(b"weights")
    assert restore_hint("models/teacher/sst2/model.safetensors") == (
        "restore it: dvc checkout --force teacher@sst2 (or re-make it: dvc repro teacher@sst2)"
    )
    assert restore_hint("models/teacher/qqp") == "re-make it: dvc repro teacher@qqp"  # not in dvc.lock


def test_a_reader_moves_back_an_output_a_killed_swap_left_aside(tmp_path):
    """Without an exchange rename, a kill between the swap's two moves leaves nothing at the
    path and the old output in the temporary; the next reader puts it back (and deletes
    nothing: the next write removes the empty temporary)."""
    target = tmp_path / "student"
    parked = tmp_path / ".student.0123abcd.tmp" / artifacts.PARKED
    parked.mkdir(parents=True)
    (parked / "config.json").write_text("{}")
    require_artifact(target, "student directory")
    assert (target / "config.json").read_text() == "{}"
    with atomic_path(target) as tmp:
        tmp.mkdir()
    assert [p.name for p in tmp_path.iterdir()] == ["student"]


def test_a_reader_leaves_a_live_save_alone(tmp_path):
    """A save in progress holds a lock on its temporary: a reader that finds nothing at the
    path (a first save) or a writer mid-swap must not recover from it."""
    target = tmp_path / "student"
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "config.json").write_text("new")
        (tmp.parent / artifacts.PARKED).mkdir()  # as if between the fallback's two moves
        with pytest.raises(PipelineError, match="student directory not found"):
            require_artifact(target, "student directory")
        artifacts.recover_interrupted_write(target)  # a second writer, too
        assert (tmp / "config.json").read_text() == "new" and (tmp.parent / artifacts.PARKED).is_dir()
    assert (target / "config.json").read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["student"]


# --------------------------------------------------------------------------- every reader


DAMAGE = {
    "truncated": lambda data: data[: len(data) // 2],
    "empty": lambda data: b"",
    "another format": lambda data: b"PK\x03\x04" + bytes(60),  # a zip file's start
}


@pytest.fixture
def student_project(tmp_path, monkeypatch):
    """A student directory where the layout puts it (so errors name its stage)."""
    from pipeline.models import StudentConfig, build_model, save_student
    from pipeline.models.vocab import Vocab

    monkeypatch.chdir(tmp_path)
    vocab, _ = Vocab.build([["a good film", "a bad film"]], "unk")
    config = StudentConfig("sst2", ("negative", "positive"), False, len(vocab), 4, 3, 5, 0.0, "unk")
    directory = Path("models/student/sst2/distilled")
    save_student(directory, config, vocab, build_model(config))
    return directory


@pytest.mark.parametrize("damage", DAMAGE)
@pytest.mark.parametrize("file", ["model.safetensors", "config.json", "vocab.json"])
def test_a_damaged_student_file_is_one_line_naming_it(student_project, file, damage):
    from pipeline.models import load_student

    path = student_project / file
    path.write_bytes(DAMAGE[damage](path.read_bytes()))
    with pytest.raises(PipelineError) as failure:
        load_student(student_project)
    message = str(failure.value)
    assert message.startswith(f"{path}: ") and message.endswith("re-make it: dvc repro student@sst2-distilled")
    assert "\n" not in message


def test_weights_of_other_shapes_than_the_config_says_are_refused(student_project):
    from pipeline.models import load_student

    config = json.loads((student_project / "config.json").read_text())
    (student_project / "config.json").write_text(json.dumps({**config, "hidden_size": 7}))
    with pytest.raises(PipelineError, match=r"model.safetensors: weights do not fit config.json \(classifier.0.weight: \(5, 6\) in the file, \(5, 14\) for"):
        load_student(student_project)


def test_predict_on_a_damaged_student_prints_one_error_line_and_nothing_else(student_project):
    weights = student_project / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    result = subprocess.run([sys.executable, "-m", "pipeline", "predict", str(student_project), "a film"],
                            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.splitlines() == [
        f"error: {weights}: not a readable safetensors file ({result.stderr.split('(', 1)[1].split(')')[0]}); "
        "re-make it: dvc repro student@sst2-distilled"
    ]


@pytest.mark.parametrize("damage", DAMAGE)
@pytest.mark.parametrize("file", ["model.safetensors", "config.json", "tokenizer.json"])
def test_a_damaged_teacher_file_is_one_line_naming_it(tmp_path, monkeypatch, tiny_bert_factory, file, damage):
    import shutil

    from pipeline.bert import load_teacher
    from pipeline.tasks import get_task

    monkeypatch.chdir(tmp_path)
    teacher = Path("models/teacher/sst2")
    shutil.copytree(tiny_bert_factory(2), teacher)
    path = teacher / file
    path.write_bytes(DAMAGE[damage](path.read_bytes()))
    with pytest.raises(PipelineError) as failure:
        load_teacher(teacher, get_task("sst2"))
    message = str(failure.value)
    named = teacher if file == "tokenizer.json" else path  # the tokenizer is several files
    assert message.startswith(f"{named}: ") and message.endswith("re-make it: dvc repro teacher@sst2"), message
    assert "\n" not in message


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_parquet_and_json_artifacts_are_one_line(tmp_path, monkeypatch, damage):
    import pyarrow as pa

    from pipeline import paths
    from pipeline.io import read_json, read_metadata, read_table, write_json, write_table

    monkeypatch.chdir(tmp_path)
    table = write_table(pa.table({"idx": [0, 1]}), paths.augmented("qqp"), {"task": "qqp"})
    table.write_bytes(DAMAGE[damage](table.read_bytes()))
    metrics = write_json({"accuracy": 0.9}, paths.teacher_metrics("qqp"))
    metrics.write_bytes(DAMAGE[damage](metrics.read_bytes()))
    for read, path, stage in ((read_table, table, "augment@qqp"), (read_metadata, table, "augment@qqp"),
                              (read_json, metrics, "teacher@qqp")):
        with pytest.raises(PipelineError) as failure:
            read(path)
        message = str(failure.value)
        assert message.startswith(f"{path}: not a readable ") and message.endswith(f"re-make it: dvc repro {stage}")
        assert "\n" not in message


def test_a_teacher_or_export_of_another_task_is_refused(tmp_path, monkeypatch, tiny_bert_factory):
    """SST-2 and QQP both have two classes: the names tell their models apart."""
    import shutil

    from transformers import AutoConfig

    from pipeline.bert import load_teacher
    from pipeline.tasks import get_task

    monkeypatch.chdir(tmp_path)
    teacher = Path("models/teacher/sst2")
    shutil.copytree(tiny_bert_factory(2), teacher)
    load_teacher(teacher, get_task("sst2"))  # transformers' default class names: not a claim
    config = AutoConfig.from_pretrained(teacher)
    config.id2label = {0: "not_duplicate", 1: "duplicate"}
    config.save_pretrained(teacher)
    with pytest.raises(PipelineError, match=r"^models/teacher/sst2: a teacher for classes \['not_duplicate', "
                                            r"'duplicate'\], not task sst2's \['negative', 'positive'\]; re-make it"):
        load_teacher(teacher, get_task("sst2"))
