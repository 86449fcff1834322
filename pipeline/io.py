"""Data contracts (DESIGN.md §2), atomic writes and the GLUE TSV reader.

Every artifact is written to a temporary sibling and renamed into place at the end, so a
failed or interrupted stage never leaves a file DVC could mistake for a finished output.
Every reader fails in one line naming the file and its fix: a missing, misplaced (a
directory) or unreadable artifact names the stage that rewrites it.
Parquet files carry their provenance (params, seeds, hashes) as JSON under the
`pipeline` key of the file's key-value metadata.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import PipelineError
from pipeline.paths import producing_stage
from pipeline.tasks import SplitSpec, TaskSpec

METADATA_KEY = b"pipeline"

SPLIT_SCHEMA = pa.schema(
    [
        ("idx", pa.int64()),
        ("text_a", pa.string()),
        ("text_b", pa.string()),
        ("label", pa.int64()),
    ]
)

AUGMENTED_SCHEMA = pa.schema(
    [
        ("idx", pa.int64()),
        ("source_idx", pa.int64()),
        ("text_a", pa.string()),
        ("text_b", pa.string()),
        ("label", pa.int64()),
        ("is_original", pa.bool_()),
    ]
)


def logits_schema(num_labels: int) -> pa.Schema:
    return pa.schema([("idx", pa.int64()), ("logits", pa.list_(pa.float32(), num_labels))])


# --------------------------------------------------------------------------- atomic writes


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the body succeeds.

    Works for files and directories. The old `path` stays untouched until the rename. The
    temporary lives in a sibling directory `.<name>.<8 hex digits>.tmp` (ignored by git and
    DVC). A process killed mid-write cannot remove it, so each write first deletes those that
    earlier writes of the same `path` left: one process writes an output at a time (DVC's
    repo lock; under torchrun only the leader saves), so any that exists is debris.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in _temp_siblings(path):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    tmp.mkdir()
    target = tmp / path.name
    try:
        yield target
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(target, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _temp_siblings(path: Path) -> list[Path]:
    """The temporaries `atomic_path` made for `path`: for `sst2`, not those of `sst2.json`."""
    own = re.compile(rf"\.{re.escape(path.name)}\.[0-9a-f]{{8}}\.tmp")
    return [p for p in path.parent.iterdir() if own.fullmatch(p.name)]


def with_metadata(schema: pa.Schema, metadata: dict[str, Any] | None) -> pa.Schema:
    if metadata is None:
        return schema
    encoded = json.dumps(metadata, sort_keys=True, default=str).encode()
    return schema.with_metadata({METADATA_KEY: encoded})


def write_table(table: pa.Table, path: Path | str, metadata: dict[str, Any] | None = None) -> Path:
    """Write `table` atomically, deterministically (same table -> same bytes), with metadata."""
    table = table.replace_schema_metadata(with_metadata(table.schema, metadata).metadata)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return Path(path)


def write_json(data: Any, path: Path | str) -> Path:
    """Write JSON atomically with sorted keys, so equal content means equal bytes."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return Path(path)


# --------------------------------------------------------------------------- reading


def require_file(path: Path, what: str, fix: str) -> None:
    """Fail in one line unless `path` is a file; a directory there is called one, not missing."""
    if path.is_dir():
        raise PipelineError(f"{path}: is a directory, not a {what} ({fix})")
    if not path.is_file():
        raise PipelineError(f"{path}: {what} not found ({fix})")


def read_utf8(path: Path, what: str, fix: str) -> str:
    """The UTF-8 text of a source file (`what`; `fix` says where it should be)."""
    require_file(path, what, fix)
    return decode_utf8(path.read_bytes(), str(path))


def decode_utf8(data: bytes, source: str) -> str:
    """`data` as UTF-8 text; a bad byte fails naming the line it is on (counted from its offset)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise PipelineError(
            f"{source} line {line}: not UTF-8 (byte {exc.start}: {exc.reason}); "
            "convert it, e.g. iconv -f latin1 -t utf-8"
        ) from None


@contextmanager
def _artifact_read(path: Path, kind: str, stage: str | None) -> Iterator[None]:
    """Check an artifact exists; turn a truncated or corrupt one into a line naming its stage.

    `stage` defaults to the stage whose output `path` is (`paths.producing_stage`).
    """
    stage = stage or producing_stage(path)
    repro = f"dvc repro {stage}" if stage else "dvc repro"
    require_file(path, "file", f"run: {repro}")
    try:
        yield
    except (ValueError, OSError, pa.ArrowException) as exc:  # ArrowInvalid, JSONDecodeError, ...
        reason = str(exc).strip().splitlines()[0]
        raise PipelineError(f"{path}: unreadable {kind} file ({reason}); rerun: {repro}") from None


def read_table(path: Path | str, schema: pa.Schema | None = None) -> pa.Table:
    """Read a Parquet artifact, checking it is whole and carries the expected columns and types."""
    path = Path(path)
    with _artifact_read(path, "Parquet", None):
        table = pq.read_table(path)
    if schema is not None:
        check_schema(table.schema, schema, path)
    return table


def read_json(path: Path | str, stage: str | None = None) -> Any:
    """Read a JSON artifact (metrics), failing in one line when it is missing or truncated."""
    path = Path(path)
    with _artifact_read(path, "JSON", stage):
        return json.loads(path.read_text(encoding="utf-8"))


def check_schema(actual: pa.Schema, expected: pa.Schema, path: Path | str) -> None:
    for field_ in expected:
        if field_.name not in actual.names:
            raise PipelineError(f"{path}: missing column {field_.name!r} (expected {expected.names})")
        got = actual.field(field_.name).type
        if got != field_.type:
            raise PipelineError(
                f"{path}: column {field_.name!r} has type {got}, expected {field_.type}"
            )


def read_metadata(path: Path | str) -> dict[str, Any]:
    """The provenance JSON stored with a Parquet artifact ({} when there is none)."""
    path = Path(path)
    with _artifact_read(path, "Parquet", None):
        raw = pq.read_schema(path).metadata or {}
    return json.loads(raw[METADATA_KEY]) if METADATA_KEY in raw else {}


def file_sha256(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def dir_sha256(path: Path | str) -> str:
    """Content hash of a directory: file names and bytes, in sorted order."""
    root = Path(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(root)).encode() + b"\0")
        digest.update(file_sha256(file).encode())
    return digest.hexdigest()


# --------------------------------------------------------------------------- GLUE TSV


@dataclass
class ParsedSplit:
    """Rows of one GLUE split in the SPLIT_SCHEMA columns, plus what could not be parsed."""

    idx: list[int] = field(default_factory=list)
    text_a: list[str] = field(default_factory=list)
    text_b: list[str | None] = field(default_factory=list)
    label: list[int] = field(default_factory=list)
    bad_lines: list[tuple[int, str]] = field(default_factory=list)  # (1-based line, reason)

    @property
    def rows(self) -> int:
        return len(self.idx)

    def to_table(self, limit: int | None = None) -> pa.Table:
        end = self.rows if limit is None else min(limit, self.rows)
        return pa.table(
            {
                "idx": self.idx[:end],
                "text_a": self.text_a[:end],
                "text_b": self.text_b[:end],
                "label": self.label[:end],
            },
            schema=SPLIT_SCHEMA,
        )


def parse_glue_tsv(
    text: str, task: TaskSpec, split: SplitSpec, source: str, max_text_chars: int | None = None
) -> ParsedSplit:
    """Parse one GLUE TSV held in memory.

    Fields are split on tabs with no quote handling: GLUE text holds literal `"` characters
    (csv quoting would merge rows and strip quotes; DESIGN.md §7). A row whose field count
    differs from the header's, whose label is not in the task's vocabulary, or whose text is
    empty or longer than `max_text_chars` is recorded in `bad_lines` and skipped. `idx` is
    the row's position among the file's data rows, so skipped rows leave a gap rather than
    renumbering the rest. Surrounding whitespace of the text is stripped (SST-2 lines end in
    a space), and so is a leading byte-order mark (the official MRPC files start with one).
    """
    lines = text.removeprefix("\ufeff").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise PipelineError(f"{source}: empty file (expected a GLUE TSV with a header row)")
    header = lines[0].rstrip("\r").split("\t")
    wanted = [task.text_a] + ([task.text_b] if task.text_b else [])
    if split.labelled:
        wanted.append(task.label_column)
    missing = [c for c in wanted if c not in header]
    if missing:
        raise PipelineError(
            f"{source}: header lacks column(s) {', '.join(missing)} (got {header}); "
            f"is this the GLUE {task.glue_dir} {split.file}?"
        )
    col_a = header.index(task.text_a)
    col_b = header.index(task.text_b) if task.text_b else None
    col_label = header.index(task.label_column) if split.labelled else None
    out = ParsedSplit()
    for position, line in enumerate(lines[1:]):
        line_no = position + 2
        fields = line.rstrip("\r").split("\t")
        if len(fields) != len(header):
            out.bad_lines.append((line_no, f"{len(fields)} fields, header has {len(header)}"))
            continue
        text_a = fields[col_a].strip()
        text_b = fields[col_b].strip() if col_b is not None else None
        if not text_a or text_b == "":
            out.bad_lines.append((line_no, "empty text"))
            continue
        longest = max(len(text_a), len(text_b or ""))
        if max_text_chars is not None and longest > max_text_chars:
            why = f"{longest:,} characters, over data.max_text_chars={max_text_chars}"
            out.bad_lines.append((line_no, why))
            continue
        label = -1
        if col_label is not None:
            found = task.label_index(fields[col_label].strip())
            if found is None:
                out.bad_lines.append((line_no, f"label {fields[col_label]!r} not in {task.raw_labels}"))
                continue
            label = found
        out.idx.append(position)
        out.text_a.append(text_a)
        out.text_b.append(text_b)
        out.label.append(label)
    return out
