"""Data contracts (DESIGN.md §2), the Parquet and JSON artifacts' writers and readers, and
the source-file readers (TSV, CSV, JSON Lines, Parquet, and YAML as DVC reads it).

Artifacts are written and read through `pipeline.artifacts`: written whole or not at all,
and a missing, damaged or mismatched one fails in one line naming the file and the stage
that restores it.
Parquet files carry their provenance (params, seeds, hashes) as JSON under the
`pipeline` key of the file's key-value metadata.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.artifacts import atomic_path, damaged, reading, require_artifact
from pipeline.errors import PipelineError
from pipeline.paths import prepare_stage, prepared_split, settings_file
from pipeline.tasks import Column, SplitSpec, TaskSpec

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


def check_logits_match(
    logits_path: Path | str, corpus_path: Path | str, task: TaskSpec
) -> dict[str, Any]:
    """Refuse a logits file that was not computed for this corpus and task; return its metadata.

    Consumers (the student stage) call this before joining logits to corpus rows by `idx`;
    it lives here, with the schema, so that no stage module imports another.
    """
    logits_path, corpus_path = Path(logits_path), Path(corpus_path)
    require_artifact(logits_path, "logits")
    meta = read_metadata(logits_path)
    if meta.get("task") != task.name or meta.get("num_labels") != task.num_labels:
        raise damaged(
            logits_path,
            f"logits are for task {meta.get('task')} with {meta.get('num_labels')} labels, "
            f"not {task.name} with {task.num_labels}",
        )
    check_schema(pq.read_schema(logits_path), logits_schema(task.num_labels), logits_path)
    if meta.get("corpus_sha256") != file_sha256(corpus_path):
        raise damaged(logits_path, f"computed for another version of {corpus_path} (corpus hash differs)")
    rows = pq.ParquetFile(logits_path).metadata.num_rows
    corpus_rows = pq.ParquetFile(corpus_path).metadata.num_rows
    if not rows == meta.get("rows") == corpus_rows:
        raise damaged(
            logits_path, f"{rows} rows (metadata says {meta.get('rows')}) but {corpus_path} has {corpus_rows}"
        )
    return meta


# --------------------------------------------------------------------------- writing


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


def parse_yaml(text: str, source: Path | str) -> Any:
    """YAML exactly as DVC reads params.yaml, dvc.yaml and dvc.lock: ruamel.yaml's safe
    loader (YAML 1.2). Unlike PyYAML's YAML 1.1, `yes`/`no`/`on`/`off` and `1:20` are
    strings, `3e-05` is a number and `010` is ten, so the pipeline and DVC never see two
    values in one file (DVC's `-S` rewrites would otherwise turn a class named `no` into
    False). A repeated key is refused, as DVC refuses it; a syntax error is one line with
    its line and column."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import MarkedYAMLError, YAMLError

    try:
        return YAML(typ="safe").load(text)
    except MarkedYAMLError as exc:
        if exc.problem_mark is None:
            raise PipelineError(f"{source}: {exc.problem or exc.context}; fix the YAML syntax") from None
        inside = f" ({exc.context} from {_at(exc.context_mark)})" if exc.context and exc.context_mark else ""
        raise PipelineError(f"{source} {_at(exc.problem_mark)}: {exc.problem}{inside}; fix the YAML syntax") from None
    except YAMLError as exc:
        raise PipelineError(f"{source}: {str(exc).splitlines()[0]}; fix the YAML syntax") from None


def read_yaml(path: Path | str) -> Any:
    """A YAML file (params.yaml, dvc.yaml, dvc.lock) read as DVC reads it (`parse_yaml`)."""
    path = Path(path)
    return parse_yaml(read_utf8(path, "YAML file", "check the path"), path)


def _at(mark: Any) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}"


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


def read_table(path: Path | str, schema: pa.Schema | None = None, task: str | None = None) -> pa.Table:
    """Read a Parquet artifact, checking it is whole, carries the expected columns and types
    and (`task`) was not written for another task, as its metadata would say (a prepared split
    or an augmented corpus copied from another task has the same columns)."""
    path = Path(path)
    with reading(path, "Parquet"):
        table = pq.read_table(path)
        written_for = _provenance(table.schema).get("task")
    if schema is not None:
        check_schema(table.schema, schema, path)
    if task is not None and written_for not in (None, task):
        raise damaged(path, f"written for task {written_for}, not {task}")
    return table


def read_json(path: Path | str, stage: str | None = None) -> Any:
    """Read a JSON artifact (metrics), failing in one line when it is missing or truncated."""
    path = Path(path)
    with reading(path, "JSON", stage):
        return json.loads(path.read_text(encoding="utf-8"))


def check_schema(actual: pa.Schema, expected: pa.Schema, path: Path | str) -> None:
    """Refuse an artifact without the contract's columns and types (another stage's or
    another version's file)."""
    for field_ in expected:
        if field_.name not in actual.names:
            raise damaged(path, f"missing column {field_.name!r} (expected {expected.names})")
        got = actual.field(field_.name).type
        if got != field_.type:
            raise damaged(path, f"column {field_.name!r} has type {got}, expected {field_.type}")


def read_metadata(path: Path | str) -> dict[str, Any]:
    """The provenance JSON stored with a Parquet artifact ({} when there is none)."""
    path = Path(path)
    with reading(path, "Parquet"):
        return _provenance(pq.read_schema(path))


def _provenance(schema: pa.Schema) -> dict[str, Any]:
    raw = (schema.metadata or {}).get(METADATA_KEY)
    return json.loads(raw) if raw else {}


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


# --------------------------------------------------------------------------- source files


@dataclass
class ParsedSplit:
    """Rows of one split in the SPLIT_SCHEMA columns, plus what could not be parsed."""

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


# One data row of a source file: its line (1-based; Parquet: row number + 1, as if under a
# header), and its fields by column (name, or position without a header), or why it has none.
Record = tuple[int, dict[Column, Any] | str]


@dataclass(frozen=True)
class SourceRows:
    """A source file's data rows, with the columns it has (to name them when one is missing)."""

    columns: list[Column]
    records: list[Record]


def parse_glue_tsv(text: str, task: TaskSpec, split: SplitSpec, source: str) -> ParsedSplit:
    """Parse one GLUE TSV held in memory (`glue_tsv_rows`, then `parse_rows`, no length bounds)."""
    return parse_rows(glue_tsv_rows(text, task, source), task, split, source)


def glue_tsv_rows(text: str, task: TaskSpec, source: str) -> SourceRows:
    """The rows of a TSV file, as GLUE's are read: fields split on tabs with no quote handling.

    GLUE text holds literal `"` characters (csv quoting would merge rows and strip quotes;
    DESIGN.md §7), and a quote opened by mistake cannot swallow the rows after it. A row
    whose field count differs from the header's (in a file without one, like CoLA's, from
    the columns the task names) is malformed. A leading byte-order mark is dropped (the
    official MRPC files start with one).
    """
    lines = text.removeprefix("\ufeff").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        what = "a header row" if task.header else "rows"
        raise PipelineError(f"{source}: empty file (expected a TSV with {what})")
    if task.header:
        columns: list[Column] = list(lines[0].rstrip("\r").split("\t"))
        body, offset = lines[1:], 2
    else:
        named = [c for c in (task.text_a, task.text_b, task.label_column) if isinstance(c, int)]
        columns, body, offset = list(range(max(named) + 1)), lines, 1
    records: list[Record] = []
    for position, line in enumerate(body):
        fields = line.rstrip("\r").split("\t")
        if len(fields) != len(columns):
            what = "header has" if task.header else "the task reads"
            records.append((position + offset, f"{len(fields)} fields, {what} {len(columns)}"))
        else:
            records.append((position + offset, dict(zip(columns, fields, strict=True))))
    return SourceRows(columns, records)


def csv_rows(text: str, source: str) -> SourceRows:
    """The rows of a CSV file with a header row, standard quoting (`csv` module)."""
    csv.field_size_limit(1 << 30)  # an overlong text is a malformed row (max_text_chars), not a failure
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""))
    try:
        header = next(reader, None)
        if header is None:
            raise PipelineError(f"{source}: empty file (expected a header row naming the columns)")
        repeated = sorted({name for name in header if header.count(name) > 1})
        if repeated:
            raise PipelineError(f"{source}: column {repeated[0]!r} is named twice in the header; rename one")
        records: list[Record] = []
        for fields in reader:
            line = reader.line_num
            if not fields:
                continue  # a blank line
            if len(fields) != len(header):
                records.append((line, f"{len(fields)} fields, header has {len(header)}"))
            else:
                records.append((line, dict(zip(header, fields, strict=True))))
    except csv.Error as exc:
        raise PipelineError(f"{source} line {reader.line_num}: not readable as CSV ({exc})") from None
    return SourceRows(list(header), records)


def jsonl_rows(text: str, source: str) -> SourceRows:
    """The rows of a JSON Lines file: one JSON object per line; its columns, every key seen."""
    columns: dict[str, None] = {}
    records: list[Record] = []
    # Split on newlines alone: JSON strings may hold other Unicode line breaks (U+2028, ...).
    for line_no, line in enumerate(text.removeprefix("\ufeff").split("\n"), start=1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            records.append((line_no, f"not JSON ({exc.msg})"))
            continue
        if not isinstance(row, dict):
            records.append((line_no, f"a JSON {type(row).__name__}, not an object"))
            continue
        columns.update(dict.fromkeys(row))
        records.append((line_no, row))
    return SourceRows(list(columns), records)


def parquet_rows(path: Path) -> SourceRows:
    """The rows of a Parquet file (numbered from 2, as if under a header line)."""
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise PipelineError(f"{path}: not a readable Parquet file ({exc})") from None
    return SourceRows(table.column_names, list(enumerate(table.to_pylist(), start=2)))


def read_source(path: Path, task: TaskSpec, split: SplitSpec) -> SourceRows:
    """The rows of one split's source file, read by the task's format for it."""
    fmt = task.split_format(split)
    what, fix = (
        ("GLUE file", f"expected the GLUE {task.source_dir} layout")
        if task.builtin
        else ("data file", f"datasets.{task.name}.{split.name} names it")
    )
    if fmt == "parquet":
        require_file(path, what, fix)
        return parquet_rows(path)
    text = read_utf8(path, what, fix)
    if fmt == "tsv":
        return glue_tsv_rows(text, task, str(path))
    if fmt == "jsonl":
        return jsonl_rows(text, str(path))
    return csv_rows(text, str(path))


def token_count(text: str, bound: int | None) -> int:
    """The tokens the student reads for `text` (`pipeline.text.normalize`, then a whitespace
    split), counted only when they could exceed `bound`: every token holds at least one of the
    text's characters, so a text of at most `bound` characters is within it uncounted (0)."""
    if bound is None or len(text) <= bound:
        return 0
    from pipeline.text import normalize  # NLTK, for the few long rows only

    return len(normalize(text).split())


def _wrong_type(record: dict[Column, Any], task: TaskSpec, columns: list[Column]) -> str | None:
    """Why a typed row (JSON Lines, Parquet) holds a value no column of its kind can: a text
    that is not a string, a label that is neither a string nor a number nor a boolean. Such
    a value would otherwise be read as its Python spelling ("['a', 'b']")."""
    for column in columns:
        value = record[column]
        if value is None or isinstance(value, str):
            continue
        if column == task.label_column and isinstance(value, (int, float, bool)):
            continue
        if column == task.label_column:
            return f"label {column!r} is {_type_name(value)}, not a string or a number"
        return f"text {column!r} is {_type_name(value)}, not a string"
    return None


def _type_name(value: Any) -> str:
    names = {list: "a list", dict: "an object", bytes: "a byte string", bool: "a boolean", int: "a number", float: "a number"}
    return next((name for kind, name in names.items() if isinstance(value, kind)), f"a {type(value).__name__}")


def _cell(value: Any) -> str:
    """A field as text: labels and texts compare as the files spell them. Typed values
    (JSON, Parquet) read as written: 1 and 1.0 as "1", true as "true", a null or NaN as
    missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def parse_rows(
    rows: SourceRows,
    task: TaskSpec,
    split: SplitSpec,
    source: str,
    max_text_chars: int | None = None,
    max_tokens: int | None = None,
) -> ParsedSplit:
    """Check every row of a split against the task; keep the good ones in SPLIT_SCHEMA columns.

    A column the task names that the file lacks fails at once, naming the columns found. A
    row with the wrong shape, an empty text (either side of a pair), a text longer than
    `max_text_chars`, a text of more than `max_tokens` tokens (`token_count`), a value of
    the wrong type (`_wrong_type`) or a label the task does not have is recorded in `bad_lines` and
    skipped (prepare enforces `data.max_bad_fraction`). `idx` is the row's position among
    the file's data rows, so skipped rows leave a gap rather than renumbering the rest.
    Surrounding whitespace of the text is stripped (SST-2 lines end in a space).
    """
    wanted = [task.text_a] + ([task.text_b] if task.is_pair else [])
    if split.labelled:
        wanted.append(task.label_column)
    missing = [c for c in wanted if c not in rows.columns]
    if missing:
        fix = (
            f"is this the GLUE {task.source_dir} {split.name} file?"
            if task.builtin
            else f"fix the file or datasets.{task.name}.text/text_pair/label"
        )
        raise PipelineError(
            f"{source}: no column {', '.join(map(repr, missing))} (columns found: "
            f"{', '.join(map(str, rows.columns)) or 'none'}); {fix}"
        )
    out = ParsedSplit()
    for position, (line_no, record) in enumerate(rows.records):
        if isinstance(record, str):
            out.bad_lines.append((line_no, record))
            continue
        absent = [c for c in wanted if c not in record]
        if absent:
            out.bad_lines.append((line_no, f"no {', '.join(map(repr, absent))}"))
            continue
        wrong_type = _wrong_type(record, task, wanted)
        if wrong_type:
            out.bad_lines.append((line_no, wrong_type))
            continue
        text_a = _cell(record[task.text_a])
        text_b = _cell(record[task.text_b]) if task.is_pair else None
        if not text_a or text_b == "":
            side = "" if not task.is_pair else (" (first side)" if not text_a else " (second side)")
            out.bad_lines.append((line_no, f"empty text{side}"))
            continue
        longest = max(len(text_a), len(text_b or ""))
        if max_text_chars is not None and longest > max_text_chars:
            why = f"{longest:,} characters, over data.max_text_chars={max_text_chars}"
            out.bad_lines.append((line_no, why))
            continue
        most = max(token_count(text_a, max_tokens), token_count(text_b or "", max_tokens))
        if max_tokens is not None and most > max_tokens:
            out.bad_lines.append((line_no, f"{most:,} tokens, over data.max_tokens={max_tokens}"))
            continue
        label = -1
        if split.labelled:
            raw = _cell(record[task.label_column])
            found = task.label_index(raw)
            if found is None:
                out.bad_lines.append((line_no, f"label {raw!r} not in {task.raw_labels}"))
                continue
            label = found
        out.idx.append(position)
        out.text_a.append(text_a)
        out.text_b.append(text_b)
        out.label.append(label)
    return out


def infer_labels(rows: SourceRows, task: TaskSpec, source: str) -> tuple[str, ...]:
    """The classes of a training file: the distinct labels of its usable rows (both texts
    present), sorted (numerically if all are integers), so the same file always gives the
    same class ids."""
    columns = [task.text_a, task.label_column] + ([task.text_b] if task.is_pair else [])
    if any(c not in rows.columns for c in columns):
        return ()  # parse_rows names the missing column
    values = {
        _cell(record[task.label_column])
        for _, record in rows.records
        if isinstance(record, dict)
        and all(c in record for c in columns)
        and not _wrong_type(record, task, columns)
        and all(_cell(record[c]) for c in columns)
    }
    if len(values) < 2:
        raise PipelineError(
            f"{source}: labels {sorted(values)} in column {task.label_column!r}: a classifier needs at "
            "least two classes among the training rows"
        )
    if not all(re.fullmatch(r"[+-]?\d+", v) for v in values):
        return tuple(sorted(values))
    by_number: dict[int, str] = {}
    for value in sorted(values):
        if by_number.setdefault(int(value), value) != value:
            raise PipelineError(
                f"{source}: labels {by_number[int(value)]!r} and {value!r} are one number spelled two ways; "
                "write every label the same way"
            )
    return tuple(by_number[n] for n in sorted(by_number))


def declared_task(name: str, file: str = "source") -> TaskSpec:
    """The task as configure wrote it (data/params/<task>/source.json: what prepare reads)."""
    path = settings_file(name, file)
    if not path.exists():
        raise PipelineError(
            f"unknown task {name!r}: {path} not found; a task in tasks of params.yaml gets it "
            f"from: dvc repro configure@{name}"
        )
    try:
        return TaskSpec.from_dict(read_json(path))
    except (KeyError, TypeError) as exc:
        raise PipelineError(f"{path}: not a task declaration ({exc}); rerun: dvc repro configure@{name}") from None


def load_task(name: str) -> TaskSpec:
    """The task as the stages after prepare see it (data/params/<task>/task.json), with its
    classes as prepare wrote them (`prepared_task`)."""
    return prepared_task(declared_task(name, "task"))


def prepared_task(task: TaskSpec) -> TaskSpec:
    """`task` with its classes as prepare wrote them: a dataset whose labels are inferred
    learns them from its prepared train split, so every stage and `predict` agree."""
    if not task.infers_labels:
        return task
    names = read_metadata(prepared_split(task.name, "train")).get("label_names")
    if not names:
        raise PipelineError(
            f"{prepared_split(task.name, 'train')}: no label names in its metadata "
            f"(rerun: dvc repro {prepare_stage(task.name)})"
        )
    return task.with_labels(tuple(names))
