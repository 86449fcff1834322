"""`ablation` stage: one task's ablation table -> `metrics/evaluate/<task>_ablation.json`.

The paper never separates what soft targets add from what each augmentation rule adds
(METHOD.md §2.3). Each row of the table is one way of training the student, from the CE
baseline through the declared arms (`ablation` in params.yaml) to the full method, at every
seed of `ablation.seeds`; seed `student.seed` of the baseline and of the full method is the
DAG's own student, the other seeds come from the `ablation_seeds` stages. A row gives each
seed's dev score of its kept epoch (as its training wrote it, on the task's first eval
split), their mean and their spread (max - min), so a difference smaller than the spread
reads as such, and the precision its teacher logits were computed in (label records it), since
an arm labelled on a CPU without bf16 is fp32 beside the full method's bf16 logits. The file
sits beside evaluate's, where the report reads it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline import paths
from pipeline.errors import PipelineError
from pipeline.io import file_sha256, load_task, read_json, read_metadata, write_json
from pipeline.logs import get_logger, stage_run
from pipeline.models import TRAINING_FILE
from pipeline.params import AblationParams, ArmStudent, ablation_order, load_arm, load_params
from pipeline.tasks import TaskSpec

log = get_logger("ablation")

ROLES = {"baseline": "baseline", "distilled": "full"}  # the DAG's own students; arms are "arm"


def describe(arm: str, ablation: AblationParams) -> str:
    """What a row changes, in the words of its declaration in params.yaml."""
    if arm == "baseline":
        return "CE on the gold labels of the original rows"
    if arm == "distilled":
        return "the full method: the task's transfer set and its teacher logits"
    if arm in ablation.reused_logits:
        declared = ablation.reused_logits[arm]
        parts = ["teacher logits of the original rows only" if declared.originals_only else "the task's teacher logits"]
    else:
        declared = ablation.new_logits[arm]
        parts = ["augment " + _settings(declared.augment)]
    if declared.student:
        parts.append("student " + _settings(declared.student))
    return "; ".join(parts)


def _settings(values: dict[str, Any]) -> str:
    return ", ".join(f"{key} {value:g}" if isinstance(value, float) else f"{key} {value}" for key, value in values.items())


def summarize_row(
    arm: str,
    description: str,
    row: ArmStudent,
    metric_keys: Sequence[str],
    trainings: Sequence[dict[str, Any]],
    logits_dtype: str | None,
) -> dict[str, Any]:
    """One table row from what it trains, its students' training.json files (one per seed,
    in seed order) and the dtype of the logits it trains on (None: none)."""
    seeds = []
    for training in trainings:
        scores = training["best_dev"]
        seeds.append({"seed": training["params"]["seed"], "best_epoch": training["best_epoch"]}
                     | {key: scores[key] for key in metric_keys})
    first = trainings[0]
    return {
        "name": arm,
        "role": ROLES.get(arm, "arm"),
        "description": description,
        "logits": "none" if row.variant == "baseline" else row.logits,
        "logits_dtype": logits_dtype,
        "originals_only": row.originals_only,
        "transfer_rows": first["train_rows"],
        "settings": {"alpha": first["alpha"], "epochs": first["epochs"]},
        "seeds": seeds,
        "mean": {key: sum(s[key] for s in seeds) / len(seeds) for key in metric_keys},
        "spread": {key: max(s[key] for s in seeds) - min(s[key] for s in seeds) for key in metric_keys},
    }


def ablation_table(
    task: TaskSpec,
    ablation: AblationParams,
    rows: dict[str, ArmStudent],
    trainings: dict[str, list[dict[str, Any]]],
    logits_dtypes: dict[str, str | None],
) -> dict[str, Any]:
    """The whole table: rows in table order, each seed in `ablation.seeds` order."""
    split = task.eval_splits[0]
    metric_keys = [f"eval_{metric}{split.metric_suffix}" for metric in task.metrics]
    table = []
    for arm in ablation_order(ablation):
        by_seed = {t["params"]["seed"]: t for t in trainings[arm]}
        missing = [s for s in ablation.seeds if s not in by_seed]
        if missing:
            raise PipelineError(f"ablation row {arm!r} of {task.name} has no student for seed {missing[0]}")
        ordered = [by_seed[s] for s in ablation.seeds]
        table.append(summarize_row(arm, describe(arm, ablation), rows[arm], metric_keys, ordered, logits_dtypes[arm]))
    return {
        "task": task.name,
        "dev_split": split.name,
        "metric_keys": metric_keys,
        "seeds": list(ablation.seeds),
        "arms": table,
    }


def read_trainings(task: str, arm: str, row: ArmStudent) -> list[dict[str, Any]]:
    """The training.json of each of a row's students: the DAG's own (baseline, full method)
    and those of the row's ablation stage."""
    stage = paths.arm_student_stage(task, arm, row.logits)
    found = [read_json(paths.arm_student_dir(task, arm, seed) / TRAINING_FILE, stage) for seed in row.seeds]
    if arm in paths.STUDENT_VARIANTS:
        found.append(read_json(paths.student_dir(task, arm) / TRAINING_FILE, f"student@{task}-{arm}"))
    return found


def logits_dtype(task: str, arm: str, row: ArmStudent, trainings: Sequence[dict[str, Any]]) -> str | None:
    """The dtype the row's teacher logits were computed in, from label's metadata. The task's
    logits are this stage's dependency; an arm's own logits are read where its students'
    training.json says they trained on, and must still be the file they hashed (a student
    dependency, so a changed file reruns them and then this stage)."""
    if row.variant == "baseline":
        return None
    if row.logits == "own":
        used = trainings[0]["inputs"]
        path, stage = Path(used["logits"]), f"ablation_label@{task}-{arm}"
        if not path.is_file() or file_sha256(path) != used["logits_sha256"]:
            raise PipelineError(
                f"{path}: not the logits ablation row {arm!r} trained on; restore them (dvc pull {stage}) "
                f"or re-make the row (dvc repro ablation_student@{task}-{arm})"
            )
    else:
        path, stage = paths.logits(task), f"label@{task}"
    dtype = read_metadata(path).get("dtype")
    if dtype is None:
        raise PipelineError(f"{path}: its metadata names no dtype; re-make it with dvc repro {stage}")
    return dtype


def main(task_name: str, params_path: Path) -> None:
    task = load_task(task_name)
    ablation = load_params(params_path).ablation
    if task.name not in ablation.tasks:
        raise PipelineError(f"{task.name} is not in ablation.tasks: add it there to run its ablation")
    out = paths.ablation_metrics(task.name)
    with stage_run(log, f"ablation@{task.name}", seeds=ablation.seeds) as summary:
        rows = {arm: load_arm(task.name, arm, params_path) for arm in ablation_order(ablation)}
        trainings = {arm: read_trainings(task.name, arm, row) for arm, row in rows.items()}
        dtypes = {arm: logits_dtype(task.name, arm, row, trainings[arm]) for arm, row in rows.items()}
        table = ablation_table(task, ablation, rows, trainings, dtypes)
        write_json(table, out)
        primary = table["metric_keys"][0]
        for row in table["arms"]:
            log.info("%-12s %s mean %.4f spread %.4f over seeds %s", row["name"], primary,
                     row["mean"][primary], row["spread"][primary], table["seeds"])
        summary["out"] = out
