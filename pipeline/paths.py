"""Where each stage reads and writes, relative to the project root.

These are the `deps`/`outs` of `dvc.yaml`; `tests/test_dvc_yaml.py` checks the two agree.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.tasks import SplitSpec, TaskSpec

DATA = Path("data")
MODELS = Path("models")
METRICS = Path("metrics")
REPORTS = Path("reports")
SCRATCH = Path("scratch")  # resumable state kept outside DVC outputs (persisted, git-ignored)

STUDENT_VARIANTS = ("distilled", "baseline")


def prepared_dir(task: str) -> Path:
    return DATA / "glue" / task


def prepared_split(task: str, split: str) -> Path:
    return prepared_dir(task) / f"{split}.parquet"


def prepared_eval_splits(task: TaskSpec) -> tuple[SplitSpec, ...]:
    """The eval splits a stage scores: every required one (a missing file is then the reader's
    error), and an optional one (MNLI dev_mismatched) only when prepare found and wrote it."""
    return tuple(
        s for s in task.eval_splits if s.required or prepared_split(task.name, s.name).is_file()
    )


def augmented(task: str) -> Path:
    return DATA / "augmented" / f"{task}.parquet"


def logits(task: str) -> Path:
    return DATA / "logits" / f"{task}.parquet"


def teacher_dir(task: str) -> Path:
    return MODELS / "teacher" / task


def student_dir(task: str, variant: str) -> Path:
    return MODELS / "student" / task / variant


def metrics_file(task: str) -> Path:
    return METRICS / f"{task}.json"


def speed_file(task: str) -> Path:
    return METRICS / f"{task}_speed.json"


def label_scratch(task: str) -> Path:
    return SCRATCH / "label" / task


def teacher_metrics(task: str) -> Path:
    return METRICS / "teacher" / f"{task}.json"


def curve_file(task: str, variant: str) -> Path:
    return METRICS / "curves" / f"{task}-{variant}.csv"
