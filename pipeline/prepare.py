"""`prepare` stage: GLUE TSV -> `data/glue/<task>/<split>.parquet` (DESIGN.md §2).

Source, in this order: `data.glue_dir` in params.yaml, else `$GLUE_DIR`, else the official
GLUE archive downloaded from `data.download_url` into `data.download_cache`. The stage is
cheap and `dvc.yaml` marks it `always_changed`, so a new source (another `GLUE_DIR`, an
edited TSV) is always picked up; its outputs are byte-identical when the content is the
same, so nothing downstream reruns needlessly.
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
from pipeline.io import ParsedSplit, atomic_path, file_sha256, parse_glue_tsv, read_utf8, write_table
from pipeline.logs import get_logger, stage_run
from pipeline.params import DataParams, load_params
from pipeline.tasks import SplitSpec, TaskSpec, get_task

log = get_logger("prepare")

BAD_LINES_SHOWN = 5


@dataclass(frozen=True)
class PreparedSplit:
    split: SplitSpec
    table: pa.Table
    bad_lines: list[tuple[int, str]]
    total_rows: int  # data rows in the source, good and bad


def prepare_split(
    text: str,
    task: TaskSpec,
    split: SplitSpec,
    source: str,
    max_rows: int | None,
    max_bad_fraction: float,
    max_text_chars: int | None = None,
) -> PreparedSplit:
    """Parse one split and enforce the bad-row budget; pure (text in, table out)."""
    parsed: ParsedSplit = parse_glue_tsv(text, task, split, source, max_text_chars)
    total = parsed.rows + len(parsed.bad_lines)
    if parsed.rows == 0:
        raise PipelineError(f"{source}: no usable rows ({total} data rows, all malformed or empty)")
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
    target = cache / task.glue_dir
    if (target / task.train_split.file).is_file():
        return target
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
            raise PipelineError(f"{url}: archive has no {task.glue_dir}/ directory")
    return target


# --------------------------------------------------------------------------- command


def main(task_name: str, params_path: Path) -> None:
    task = get_task(task_name)
    data = load_params(params_path).data
    if uses_download(data):
        task_dir = download_task(task, data.download_url, resolve_glue_dir(data))
    else:
        task_dir = resolve_glue_dir(data) / task.glue_dir
    out_dir = paths.prepared_dir(task.name)
    with stage_run(log, f"prepare@{task.name}", source=task_dir) as summary:
        prepared = []
        for split in task.splits:  # parse everything first: nothing is written on a bad input
            tsv = task_dir / split.file
            if not split.required and not tsv.exists():
                if split.labelled:
                    log.info("%s: not found; %s is optional and is reported as not available", tsv, split.name)
                continue
            text = read_utf8(tsv, "GLUE file", f"expected the GLUE {task.glue_dir} layout")
            limit = data.max_train_rows if split.name == "train" else data.max_eval_rows
            result = prepare_split(
                text, task, split, str(tsv), limit, data.max_bad_fraction, data.max_text_chars
            )
            if result.bad_lines:
                log.warning(
                    "%s: skipped %d malformed row(s): %s",
                    tsv, len(result.bad_lines), _describe(result.bad_lines),
                )
            prepared.append((tsv, result))
        with atomic_path(out_dir) as tmp_dir:
            tmp_dir.mkdir()
            for tsv, result in prepared:
                metadata = {
                    "task": task.name,
                    "split": result.split.name,
                    "source_file": f"{task.glue_dir}/{result.split.file}",
                    "source_sha256": file_sha256(tsv),
                    "source_rows": result.total_rows,
                    "skipped_rows": len(result.bad_lines),
                    "label_names": list(task.label_names),
                    "params": data.model_dump(include={"max_train_rows", "max_eval_rows"}),
                }
                write_table(result.table, tmp_dir / f"{result.split.name}.parquet", metadata)
                summary[result.split.name] = result.table.num_rows
        summary["out"] = out_dir
