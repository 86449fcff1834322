"""Atomic writes, Parquet contracts and provenance metadata."""

from __future__ import annotations

import pyarrow as pa
import pytest

from pipeline.errors import PipelineError
from pipeline.io import (
    AUGMENTED_SCHEMA,
    SPLIT_SCHEMA,
    atomic_path,
    dir_sha256,
    logits_schema,
    read_metadata,
    read_table,
    write_table,
)


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
    with pytest.raises(PipelineError, match="file not found .*dvc repro"):
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
