"""`configure` stage: one task's resolved settings -> `data/params/<task>/<section>.json`.

Why a stage: a task's settings are a section's shared values plus its optional per-task
subsection (`teacher.mnli.lr`). DVC can only declare params keys that exist, so declaring
`teacher.${item}` stops `dvc repro` for every task without such a subsection. Instead this
stage declares whole sections and writes what each task gets, one file per section, with
sorted keys: a change to `student.mnli` rewrites only `mnli/student.json`, so only
`student@mnli-*` reruns, and a change to `student.lr` reruns every task's students. The
other stages depend on these files, not on params keys. `source.json` is the task's
declaration (built in, or under `datasets`), the dependency of its prepare stage;
`task.json` is the same without where the files are and how to read them, for the stages
after prepare. A task in `ablation.tasks` also gets its ablation rows' settings under
`arms/<arm>/`: each row's `student.json` (what it trains, at which seeds) and, for an arm with
logits of its own, `augment.json`, the dependencies of that row's stages alone.

Configure runs first in the DAG, before DVC removes any expensive output, so it also refuses
a `teacher.model` that resolves to nothing (`bert.check_teacher_model`): a typo stops `dvc
repro` here instead of deleting the trained teacher and then failing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline import paths
from pipeline.artifacts import atomic_path
from pipeline.bert import check_teacher_model
from pipeline.io import write_json
from pipeline.logs import get_logger, stage_run
from pipeline.params import ArmStudent, AugmentParams, PerTaskSection, ablation_order, load_params
from pipeline.tasks import TaskSpec

log = get_logger("configure")


def resolve_settings(task: TaskSpec, sections: dict[str, PerTaskSection]) -> dict[str, dict[str, Any]]:
    """File name -> content: the task for prepare (`source`) and for the stages after it
    (`task`), and its resolved sections."""
    return {"source": task.to_dict(with_source=True), "task": task.to_dict(with_source=False)} | {
        name: section.for_task(task.name).model_dump() for name, section in sections.items()
    }


def resolve_arms(rows: dict[str, ArmStudent], augments: dict[str, AugmentParams]) -> dict[str, dict[str, Any]]:
    """`arms/<arm>/<section>` -> content: each ablation row's student settings, and the
    augment settings of the arms that augment a transfer set of their own."""
    return {f"arms/{arm}/student": row.model_dump() for arm, row in rows.items()} | {
        f"arms/{arm}/augment": augment.model_dump() for arm, augment in augments.items()
    }


def main(task_name: str, params_path: Path) -> None:
    params = load_params(params_path)
    out_dir = paths.settings_dir(task_name)
    with stage_run(log, f"configure@{task_name}", params=params_path) as summary:
        sections = {"teacher": params.teacher, "augment": params.augment, "student": params.student}
        settings = resolve_settings(params.task(task_name), sections)
        unchecked = check_teacher_model(settings["teacher"]["model"])  # a typo fails here, before DVC removes the teacher
        if unchecked:
            log.warning(unchecked)
        if task_name in params.ablation.tasks:
            rows = {arm: params.arm(task_name, arm) for arm in ablation_order(params.ablation)}
            augments = {arm: params.arm_augment(task_name, arm) for arm in params.ablation.new_logits}
            settings |= resolve_arms(rows, augments)
        with atomic_path(out_dir) as tmp_dir:
            tmp_dir.mkdir()
            for name, content in settings.items():
                (tmp_dir / name).parent.mkdir(parents=True, exist_ok=True)
                write_json(content, tmp_dir / f"{name}.json")
        summary["out"] = out_dir
        summary["files"] = len(settings)
