"""The data shipped in the repository: the GLUE sample and the POS tagger are what their
PROVENANCE.md files say, and a fresh process finds the tagger with no `$NLTK_DATA`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.bundled import NLTK_DATA, ROOT, SAMPLE_GLUE
from pipeline.io import file_sha256
from pipeline.text import TAGGER_FILES, TAGGER_RESOURCE


def provenance_table(path: Path) -> list[dict[str, str]]:
    """The rows of the markdown table in a PROVENANCE.md, keyed by its header."""
    rows = [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in path.read_text().splitlines()
        if line.startswith("| ") and not line.startswith("| ---")
    ]
    header, *body = rows
    return [dict(zip(header, row)) for row in body]


SAMPLE_FILES = provenance_table(SAMPLE_GLUE / "PROVENANCE.md")
TAGGER_TABLE = provenance_table(NLTK_DATA / "PROVENANCE.md")


def test_every_sample_file_is_listed_with_its_sha256_and_row_count():
    listed = {row["file"] for row in SAMPLE_FILES}
    assert listed == {str(p.relative_to(SAMPLE_GLUE)) for p in SAMPLE_GLUE.glob("*/*")}
    for row in SAMPLE_FILES:
        sample = SAMPLE_GLUE / row["file"]
        first, last = map(int, row["data rows"].split("-"))
        assert first == 1 and len(sample.read_text().splitlines()) == 1 + last, row["file"]
        assert file_sha256(sample) == row["sha256"], row["file"]


@pytest.mark.parametrize("row", SAMPLE_FILES, ids=[row["file"] for row in SAMPLE_FILES])
def test_sample_files_are_the_first_rows_of_their_source(glue_dir, row):
    source = glue_dir / row["source file"]
    if not source.is_file() or file_sha256(source) != row["source sha256"]:
        pytest.skip(f"{source} is not the source file recorded in samples/glue/PROVENANCE.md")
    rows = int(row["data rows"].split("-")[1])
    with source.open("rb") as fh:
        head = b"".join(fh.readline() for _ in range(1 + rows))
    assert (SAMPLE_GLUE / row["file"]).read_bytes() == head


def test_shipped_tagger_files_are_as_recorded():
    tagger_dir = NLTK_DATA / TAGGER_RESOURCE
    assert sorted(row["file"] for row in TAGGER_TABLE) == sorted(TAGGER_FILES)
    for row in TAGGER_TABLE:
        path = tagger_dir / row["file"]
        assert (path.stat().st_size, file_sha256(path)) == (int(row["bytes"]), row["sha256"])


def test_shipped_tagger_is_the_shared_one(shared_nltk_data):
    shared = shared_nltk_data / TAGGER_RESOURCE
    for name in TAGGER_FILES:
        assert file_sha256(NLTK_DATA / TAGGER_RESOURCE / name) == file_sha256(shared / name)


def tagger_sha256_in_fresh_process(tmp_path: Path, **env: str) -> str:
    """`tagger_identity()` in a new interpreter with an empty home directory and `env`."""
    clean = {k: v for k, v in os.environ.items() if k != "NLTK_DATA"}
    done = subprocess.run(
        [sys.executable, "-c", "from pipeline.text import tagger_identity; print(tagger_identity()['sha256'])"],
        env={**clean, "HOME": str(tmp_path), "PYTHONPATH": str(ROOT), **env},
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=True,
    )
    return done.stdout.strip()


def test_a_fresh_process_finds_the_shipped_tagger_and_nltk_data_still_wins(tmp_path):
    from pipeline.text import tagger_identity

    assert tagger_sha256_in_fresh_process(tmp_path) == tagger_identity()["sha256"]
    other = tmp_path / "other_nltk_data"
    shutil.copytree(NLTK_DATA / "taggers", other / "taggers")
    classes = other / TAGGER_RESOURCE / "averaged_perceptron_tagger_eng.classes.json"
    classes.write_text(classes.read_text() + "\n")  # same tagger, other bytes: another identity
    assert tagger_sha256_in_fresh_process(tmp_path, NLTK_DATA=str(other)) != tagger_identity()["sha256"]
