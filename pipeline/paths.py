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
ENVIRONMENT_LOCK = Path("requirements.lock")  # every Python package, pinned and hashed (.ci/update-lock)

STUDENT_VARIANTS = ("distilled", "baseline")


def export_key(variant: str, int8: bool) -> str:
    """How an exported student is keyed in the metrics files: `distilled_onnx_int8`, ..."""
    return f"{variant}_onnx" + ("_int8" if int8 else "")


def settings_dir(task: str) -> Path:
    """configure's output: the task's declaration and resolved sections, one JSON each."""
    return DATA / "params" / task


def settings_file(task: str, name: str) -> Path:
    """`task.json` (the declaration), `teacher.json`, `augment.json`, `student.json`."""
    return settings_dir(task) / f"{name}.json"


def arms_settings_dir(task: str) -> Path:
    """Every ablation row's resolved settings (configure writes them for `ablation.tasks`)."""
    return settings_dir(task) / "arms"


def arm_settings_file(task: str, arm: str, name: str) -> Path:
    """An ablation row's resolved settings: `student.json` (every row), `augment.json` (an arm
    with logits of its own)."""
    return arms_settings_dir(task) / arm / f"{name}.json"


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


def arm_augmented(task: str, arm: str) -> Path:
    """The transfer set of an ablation arm with logits of its own."""
    return DATA / "ablation" / task / arm / "augmented.parquet"


def arm_logits(task: str, arm: str) -> Path:
    return DATA / "ablation" / task / arm / "logits.parquet"


def teacher_dir(task: str) -> Path:
    return MODELS / "teacher" / task


def student_dir(task: str, variant: str) -> Path:
    return MODELS / "student" / task / variant


def ablation_students_dir(task: str) -> Path:
    """Every ablation row's students of a task: what `ablation@<task>` depends on."""
    return MODELS / "ablation" / task


def arm_students_dir(task: str, arm: str) -> Path:
    """An ablation row's students, one directory per seed (`arm_student_dir`)."""
    return ablation_students_dir(task) / arm


def arm_student_dir(task: str, arm: str, seed: int) -> Path:
    return arm_students_dir(task, arm) / f"seed-{seed}"


def export_dir(task: str, variant: str) -> Path:
    return MODELS / "export" / task / variant


def evaluate_metrics_dir() -> Path:
    """Evaluate's outputs and the ablation tables, nothing else: exactly what the report reads
    (its one data dep)."""
    return METRICS / "evaluate"


def metrics_file(task: str) -> Path:
    return evaluate_metrics_dir() / f"{task}.json"


def speed_file(task: str) -> Path:
    return evaluate_metrics_dir() / f"{task}_speed.json"


def ablation_metrics(task: str) -> Path:
    """The ablation table's rows (`ablation@<task>`), beside evaluate's files: the report reads both."""
    return evaluate_metrics_dir() / f"{task}_ablation.json"


def label_scratch(task: str, arm: str | None = None) -> Path:
    return SCRATCH / "label" / task if arm is None else SCRATCH / "ablation_label" / task / arm


def teacher_metrics(task: str) -> Path:
    return METRICS / "teacher" / f"{task}.json"


def curve_file(task: str, variant: str) -> Path:
    return METRICS / "curves" / f"{task}-{variant}.csv"


def ablation_stage(parts: tuple[str, ...]) -> str | None:
    """The stage of data/ablation/<task>/<arm>/{augmented,logits}.parquet."""
    if len(parts) < 5:
        return None
    kind = "label" if parts[4].startswith("logits") else "augment"
    return f"ablation_{kind}@{parts[2]}-{parts[3]}"


def arm_student_stage(task: str, arm: str, logits: str) -> str:
    """The stage that trains an ablation row's students: the DAG's own variants at other seeds,
    an arm on the task's logits, or one on logits of its own (dvc.yaml says why three)."""
    if arm in STUDENT_VARIANTS:
        family = "ablation_seeds"
    else:
        family = "ablation_student" if logits == "own" else "ablation_reused"
    return f"{family}@{task}-{arm}"


def prepare_stage(task: str) -> str:
    """Built-in GLUE tasks and declared datasets have a prepare stage each (dvc.yaml says why)."""
    return f"prepare@{task}" if task in TASKS else f"prepare_dataset@{task}"


def producing_stage(path: Path | str) -> str | None:
    """The `dvc.yaml` stage whose output is `path` or holds it (None for no stage's output).

    A missing or unreadable artifact is fixed by rerunning this stage, so readers name it.
    Outputs are recognised by their place in the layout above, for any task name.
    """
    parts = Path(os.path.relpath(path)).parts
    layouts = {
        # (leading parts, stage family); the task is the next part, minus any suffix
        ("data", "params"): "configure",
        ("data", "glue"): "prepare",
        ("data", "augmented"): "augment",
        ("data", "logits"): "label",
        ("models", "teacher"): "teacher",
        ("metrics", "teacher"): "teacher",
        ("metrics", "evaluate"): "evaluate",
        ("models", "student"): "student",
        ("models", "export"): "export",
        ("metrics", "curves"): "student",
        ("data", "ablation"): "ablation",  # an arm's transfer set and logits
    }
    family = layouts.get(parts[:2])
    if family is None or len(parts) < 3:
        return None
    name = parts[2].split(".")[0]
    if family == "prepare":
        return prepare_stage(name)
    if family == "evaluate":
        if name.endswith("_ablation"):
            return f"ablation@{name.removesuffix('_ablation')}"
        return f"evaluate@{name.removesuffix('_speed')}"
    if family == "ablation":
        return ablation_stage(parts)
    if parts[:2] == ("metrics", "curves"):  # metrics/curves/<task>-<variant>.csv
        return f"student@{name}"
    if family in ("student", "export"):
        return f"{family}@{name}-{parts[3]}" if len(parts) > 3 else None
    return f"{family}@{name}"
