"""Where each stage reads and writes, relative to the project root.

These are the `deps`/`outs` of `dvc.yaml`; `tests/test_dvc_yaml.py` checks the two agree.
"""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.tasks import TASKS, SplitSpec, TaskSpec

DATA = Path("data")
MODELS = Path("models")
METRICS = Path("metrics")
REPORTS = Path("reports")
SCRATCH = Path("scratch")  # resumable state kept outside DVC outputs (persisted, git-ignored)

STUDENT_VARIANTS = ("distilled", "baseline")


def export_key(variant: str, int8: bool) -> str:
    """How an exported student is keyed in the metrics files: `distilled_onnx_int8`, ..."""
    return f"{variant}_onnx" + ("_int8" if int8 else "")


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


def export_dir(task: str, variant: str) -> Path:
    return MODELS / "export" / task / variant


def evaluate_metrics_dir() -> Path:
    """Evaluate's outputs and nothing else: exactly what the report reads (its one dep)."""
    return METRICS / "evaluate"


def metrics_file(task: str) -> Path:
    return evaluate_metrics_dir() / f"{task}.json"


def speed_file(task: str) -> Path:
    return evaluate_metrics_dir() / f"{task}_speed.json"


def label_scratch(task: str) -> Path:
    return SCRATCH / "label" / task


def teacher_metrics(task: str) -> Path:
    return METRICS / "teacher" / f"{task}.json"


def curve_file(task: str, variant: str) -> Path:
    return METRICS / "curves" / f"{task}-{variant}.csv"


def producing_stage(path: Path | str) -> str | None:
    """The `dvc.yaml` stage whose output is `path` or holds it (None for no stage's output).

    A missing or unreadable artifact is fixed by rerunning this stage, so readers name it.
    """
    path = Path(os.path.relpath(path))
    for task in TASKS:
        outputs = {
            prepared_dir(task): f"prepare@{task}",
            teacher_dir(task): f"teacher@{task}",
            teacher_metrics(task): f"teacher@{task}",
            augmented(task): f"augment@{task}",
            logits(task): f"label@{task}",
            metrics_file(task): f"evaluate@{task}",
            speed_file(task): f"evaluate@{task}",
        }
        for variant in STUDENT_VARIANTS:
            student = f"student@{task}-{variant}"
            outputs[student_dir(task, variant)] = outputs[curve_file(task, variant)] = student
            outputs[export_dir(task, variant)] = f"export@{task}-{variant}"
        for output, stage in outputs.items():
            if path == output or output in path.parents:
                return stage
    return None
