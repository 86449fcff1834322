"""`prepare` stage: a task's source files -> `data/glue/<task>/<split>.parquet` (DESIGN.md §2).

A built-in GLUE task reads, in this order: `data.glue_dir` in params.yaml, else `$GLUE_DIR`,
else the official GLUE archive downloaded from `data.download_url` into
`data.download_cache`. DVC cannot see those, so its stage (`prepare@T`) is `always_changed`:
a new source is always picked up, and its outputs are byte-identical when the content is the
same, so nothing downstream reruns needlessly. A declared dataset reads the files in its
`dir`, which DVC tracks and its stage (`prepare_dataset@T`) depends on: it reruns exactly
when they change. Both run this module.

Everything is parsed and checked before anything is written: a missing column, an empty
split, a class absent from train or too many malformed rows fail in one line.
"""

from __future__ import annotations

import os
import shutil
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from pipeline import paths
from pipeline.errors import PipelineError
from pipeline.artifacts import atomic_path
from pipeline.io import (
    SourceRows,
    declared_task,
    file_sha256,
    infer_labels,
    parse_rows,
    read_source,
    write_table,
)
from pipeline.logs import get_logger, stage_run
from pipeline.params import DataParams, load_params
from pipeline.tasks import SplitSpec, TaskSpec

log = get_logger("prepare")

BAD_LINES_SHOWN = 5


@dataclass(frozen=True)
class PreparedSplit:
    split: SplitSpec
    table: pa.Table
    bad_lines: list[tuple[int, str]]
    total_rows: int  # data rows in the source, good and bad


def prepare_split(
    rows: SourceRows,
    task: TaskSpec,
    split: SplitSpec,
    source: str,
    max_rows: int | None,
    max_bad_fraction: float,
    max_text_chars: int | None = None,
    max_tokens: int | None = None,
) -> PreparedSplit:
    """Parse one split and enforce the bad-row budget; pure (rows in, table out)."""
    parsed = parse_rows(rows, task, split, source, max_text_chars, max_tokens)
    total = parsed.rows + len(parsed.bad_lines)
    if total == 0:
        raise PipelineError(f"{source}: empty split (no data rows); the {split.name} split needs rows")
    if parsed.rows == 0:
        first_line, why = parsed.bad_lines[0]
        raise PipelineError(f"{source}: no usable rows ({total} data rows, all malformed or empty; line {first_line}: {why})")
    bad_fraction = len(parsed.bad_lines) / total
    if bad_fraction > max_bad_fraction:
        raise PipelineError(
            f"{source}: {len(parsed.bad_lines)} of {total} rows malformed "
            f"({bad_fraction:.2%} > data.max_bad_fraction={max_bad_fraction}); first: "
            f"{_describe(parsed.bad_lines)}"
        )
    return PreparedSplit(split, parsed.to_table(max_rows), parsed.bad_lines, total)


def _describe(bad_lines: list[tuple[int, str]]) -> str:
    return "; ".join(f"line {n}: {why}" for n, why in bad_lines[:BAD_LINES_SHOWN])


def check_classes_in_train(task: TaskSpec, train: PreparedSplit, source: str, max_rows: int | None) -> None:
    """Every class must have training rows: a student cannot learn one it never sees."""
    seen = set(train.table.column("label").to_pylist())
    absent = [name for i, name in enumerate(task.label_names) if i not in seen]
    if not absent:
        return
    if max_rows is not None and train.table.num_rows == max_rows:
        fix = f"data.max_train_rows={max_rows} keeps too few rows; raise it or shuffle the file"
    elif task.builtin:
        fix = f"is this the GLUE {task.source_dir} train file?"
    else:
        fix = f"add rows of every class to train, or drop the class from datasets.{task.name}.labels"
    raise PipelineError(f"{source}: no training row of class(es) {', '.join(map(repr, absent))}; {fix}")


def check_f1_class(task: TaskSpec) -> None:
    """`f1` scores one class, which must be a class of the task (inferred ones included)."""
    if "f1" not in task.metrics:
        return
    if task.positive_label is not None and task.positive_label not in task.label_names:
        raise PipelineError(
            f"datasets.{task.name}.positive_label: {task.positive_label!r} is not one of the classes "
            f"{list(task.label_names)}"
        )
    if task.positive_label is None and task.num_labels > 2:
        raise PipelineError(
            f"datasets.{task.name}.metrics: f1 scores one class of {list(task.label_names)}; "
            "name it in positive_label (or use macro_f1)"
        )


# --------------------------------------------------------------------------- sources


def resolve_glue_dir(data: DataParams) -> Path:
    """The local GLUE root to read: params, then $GLUE_DIR; None means download."""
    configured = data.glue_dir or os.environ.get("GLUE_DIR")
    if not configured:
        return Path(data.download_cache).expanduser()
    root = Path(configured).expanduser()
    if not root.is_dir():
        origin = "data.glue_dir" if data.glue_dir else "GLUE_DIR"
        raise PipelineError(f"{origin}={configured}: no such directory (point it at a glue_data/ copy)")
    return root


def uses_download(data: DataParams) -> bool:
    return not (data.glue_dir or os.environ.get("GLUE_DIR"))


def download_task(task: TaskSpec, base_url: str, cache: Path) -> Path:
    """Fetch the official GLUE archive of `task`, check its sha256, unpack it into `cache` (once)."""
    target = cache / task.source_dir
    if (target / task.train_split.file).is_file():
        return target
    if task.archive is None or task.archive_sha256 is None:
        raise PipelineError(
            f"GLUE {task.source_dir} has no official archive to download (GLUE's script builds it); "
            f"set GLUE_DIR or data.glue_dir to a glue_data/ holding {task.source_dir}/"
        )
    url = f"{base_url.rstrip('/')}/{task.archive}"
    log.info("downloading %s", url)
    with atomic_path(target) as final:  # archive and extraction share its temporary directory
        archive = final.parent / task.archive
        try:
            with urllib.request.urlopen(url, timeout=60) as response, archive.open("wb") as out:
                shutil.copyfileobj(response, out)
        except (urllib.error.URLError, OSError) as exc:
            raise PipelineError(
                f"cannot download {url} ({exc}); set GLUE_DIR or data.glue_dir to a local glue_data/"
            ) from None
        digest = file_sha256(archive)
        if digest != task.archive_sha256:  # a truncated, altered or different file: keep nothing
            raise PipelineError(
                f"{url}: sha256 {digest} is not that of the official {task.archive} "
                f"({task.archive_sha256}); set GLUE_DIR or data.glue_dir to use other files"
            )
        try:
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(final.parent)
        except zipfile.BadZipFile:
            raise PipelineError(f"{url}: not a zip archive") from None
        if not final.is_dir():
            raise PipelineError(f"{url}: archive has no {task.source_dir}/ directory")
    return target


# --------------------------------------------------------------------------- command


def source_dir(task: TaskSpec, data: DataParams) -> Path:
    """Where the task's split files are: the GLUE copy (fetched if need be), or its `dir`."""
    if not task.builtin:
        return Path(task.source_dir)
    if uses_download(data):
        return download_task(task, data.download_url, resolve_glue_dir(data))
    return resolve_glue_dir(data) / task.source_dir


def main(task_name: str, params_path: Path) -> None:
    data = load_params(params_path).data
    task = declared_task(task_name)
    task_dir = source_dir(task, data)
    out_dir = paths.prepared_dir(task.name)
    with stage_run(log, f"prepare@{task.name}", source=task_dir) as summary:
        prepared = []
        for split in task.splits:  # parse everything first: nothing is written on a bad input
            path = task_dir / split.file
            if not split.required and not path.exists():
                if split.labelled:
                    log.info("%s: not found; %s is optional and is reported as not available", path, split.name)
                continue
            rows = read_source(path, task, split)
            if split.name == "train" and task.infers_labels:
                task = task.with_labels(infer_labels(rows, task, str(path)))
                log.info("%s: classes inferred from train, in class-id order: %s", task.name, task.label_names)
                check_f1_class(task)
            limit = data.max_train_rows if split.name == "train" else data.max_eval_rows
            result = prepare_split(
                rows, task, split, str(path), limit, data.max_bad_fraction, data.max_text_chars, data.max_tokens
            )
            if split.name == "train":
                check_classes_in_train(task, result, str(path), limit)
            if result.bad_lines:
                log.warning(
                    "%s: skipped %d malformed row(s): %s",
                    path, len(result.bad_lines), _describe(result.bad_lines),
                )
            prepared.append((path, result))
        with atomic_path(out_dir) as tmp_dir:
            tmp_dir.mkdir()
            for path, result in prepared:
                metadata = {
                    "task": task.name,
                    "split": result.split.name,
                    "source_file": f"{task.source_dir}/{result.split.file}",
                    "source_sha256": file_sha256(path),
                    "source_rows": result.total_rows,
                    "skipped_rows": len(result.bad_lines),
                    "label_names": list(task.label_names),
                    "params": data.model_dump(include={"max_train_rows", "max_eval_rows"}),
                }
                write_table(result.table, tmp_dir / f"{result.split.name}.parquet", metadata)
                summary[result.split.name] = result.table.num_rows
        summary["out"] = out_dir
