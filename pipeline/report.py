"""`report` stage: `reports/results.md` and its figures, from the metrics files alone.

Every number of ours is read from `metrics/evaluate/<task>.json` and `metrics/evaluate/<task>_speed.json`
(written by `evaluate`, which also copies each model's per-epoch dev scores there), and from
`metrics/evaluate/<task>_ablation.json` for the tasks `ablation@<task>` ran on. What the
report says about each task's data (official split sizes, known copies, where it comes from)
and the published scores printed beside ours come from the task's declaration
(pipeline/tasks.py, or `datasets` in params.yaml), so the report describes whatever tasks it
is given. The report names the environment lock (`requirements.lock`) by its sha256, so a
reader sees which packages made the numbers; the lock is the report's dependency, not the
measuring stages'. The only constants of the literature left here are the paper's training settings
and its Table 2, shown only when the report has a task they are about. Ours are dev
scores; the paper's Table 1 is GLUE **test** (the test labels are hidden), so the peers'
dev numbers are the closer comparison (METHOD.md §1.1, §2.4).
"""

from __future__ import annotations

import csv
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import paths
from pipeline.artifacts import atomic_path
from pipeline.errors import PipelineError
from pipeline.io import file_sha256, read_json
from pipeline.logs import get_logger, stage_run
from pipeline.metrics import primary_metric
from pipeline.params import load_params
from pipeline.tasks import TaskSpec

log = get_logger("report")

TEACHER, DISTILLED, BASELINE = "teacher", *paths.STUDENT_VARIANTS
OURS = {
    TEACHER: "BERT teacher (ours)",
    DISTILLED: "BiLSTM distilled (ours)",
    BASELINE: "BiLSTM baseline (ours)",
}
# The exported students (`pipeline.serve`), keyed as evaluate writes them.
EXPORTS = {
    paths.export_key(variant, int8): f"BiLSTM {variant}, ONNX {'int8' if int8 else 'fp32'} (ours)"
    for variant in paths.STUDENT_VARIANTS
    for int8 in (False, True)
}
FIGURES = "figures"
PLOTS = "plots"  # per-task CSVs for `dvc plots show` (top-level `plots:` in dvc.yaml)
METRIC_ABBREVIATIONS = {"accuracy": "acc", "f1": "F1", "macro_f1": "macro-F1", "matthews": "MCC"}
METRIC_NAMES = {"accuracy": "accuracy", "f1": "F1", "macro_f1": "macro-F1", "matthews": "MCC"}

# --------------------------------------------------------------------------- the literature

PAPER = "Tang et al."  # how the paper's published rows name their source (pipeline/tasks.py)
PAPER_TABLE2_TASK = "sst2"  # the task the paper timed in its Table 2

# The paper's Table 2: SST-2 models over 67,350 training sentences at batch 512 on one
# V100 (METHOD.md §2.2, §4.1): model, parameters (millions; the BiLSTM's exclude its
# embeddings), seconds, and the ratios to BiLSTM_SOFT as printed.
PAPER_TABLE2 = (
    ("BERT-large", "335", "1060.48", "349×", "434×"),
    ("ELMo", "93.6", "36.71", "98×", "15×"),
    ("BiLSTM_SOFT", "0.96", "2.44", "1×", "1×"),
)

# How the paper trained (METHOD.md §1.9, §0.8; constants of the literature like Table 2).
PAPER_SETTINGS = (
    "The paper: a BERT-large teacher (fine-tuning lr 2e-5 for SST-2 and QQP, 5e-5 for MNLI, 3 "
    "epochs); transfer sets from n_iter 20 (SST-2) and 10 (QQP, MNLI) on the full training sets; "
    "students trained with AdaDelta at batch 50 (SST-2) and 256 (pairs), epochs not stated "
    "(METHOD.md §1.9). docs/results.md says why ours differ where they do."
)

# A published row of the accuracy table: (model, source, evaluated on).
PublishedRow = tuple[str, str, str]

# --------------------------------------------------------------------------- the ablation

# The keys the report reads of metrics/evaluate/<task>_ablation.json, and of each of its arms.
ABLATION_KEYS = ("dev_split", "metric_keys", "seeds", "arms")
ARM_KEYS = ("name", "role", "description", "transfer_rows", "logits", "originals_only", "seeds", "mean", "spread")
# How the table names an arm by its role, so that its two ends, the recipes of the accuracy
# table's two students, stand out from the arms between them.
ARM_LABELS = {"baseline": "{name} (CE, gold labels)", "arm": "{name}", "full": "full method ({name})"}
LOGITS_SOURCES = {"none": "none", "task": "label@{task} reused", "own": "own label stage"}


def published_rows(tasks: Sequence[TaskSpec]) -> dict[PublishedRow, dict[str, Mapping[str, str]]]:
    """The published rows for these tasks: row -> task name -> scores, in first-seen order.

    Each task declares its own published scores; one published model spans several tasks
    (the paper's BiLSTM_SOFT on SST-2, QQP and MNLI), so rows are merged on (model, source,
    evaluated on) to print it once, across the tasks' columns.
    """
    rows: dict[PublishedRow, dict[str, Mapping[str, str]]] = {}
    for task in tasks:
        for p in task.published:
            rows.setdefault((p.model, p.source, p.evaluated_on), {})[task.name] = p.scores
    return rows


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class TaskResults:
    """Everything the report shows for one task, as read from metrics/."""

    task: TaskSpec
    metrics: dict[str, Any]  # metrics/evaluate/<task>.json
    speed: dict[str, Any]  # metrics/evaluate/<task>_speed.json
    ablation: dict[str, Any] | None = None  # metrics/evaluate/<task>_ablation.json, where ablated

    @property
    def metric_keys(self) -> list[str]:
        """The task's metric keys, one per metric and eval split, as evaluate writes them
        (an unavailable split's keys included: its cells say why they are empty)."""
        return metric_keys(self.task)

    @property
    def unavailable(self) -> dict[str, str]:
        """Metric key -> why it has no score (its optional split was absent from the source)."""
        reasons = self.metrics.get("unavailable", {})
        return {
            f"eval_{m}{s.metric_suffix}": reasons[s.name]
            for s in self.task.eval_splits
            if s.name in reasons
            for m in self.task.metrics
        }

    @property
    def curves(self) -> dict[str, list[dict[str, float]]]:
        """Student variant -> one row per epoch (epoch, train_loss, dev metrics)."""
        return {v: self.metrics[v]["epochs"] for v in paths.STUDENT_VARIANTS}


def metric_keys(task: TaskSpec) -> list[str]:
    return [f"eval_{m}{s.metric_suffix}" for s in task.eval_splits for m in task.metrics]


def _read_json(path: Path, stage: str) -> dict[str, Any]:
    return read_json(path, stage)


def load_results(task: TaskSpec, ablated: bool = False) -> TaskResults:
    """A task's evaluate files, and its ablation table when `ablation.tasks` lists the task
    (a table left behind by an earlier run of the ablation is not the recorded run's)."""
    stage = f"evaluate@{task.name}"
    metrics = _read_json(paths.metrics_file(task.name), stage)
    missing = [m for m in (TEACHER, DISTILLED, BASELINE, "data") if m not in metrics]
    missing += [
        f"{m}.{key}"
        for m in (TEACHER, DISTILLED, BASELINE)
        for key in ("epochs", "settings")
        if m in metrics and key not in metrics[m]
    ]
    if missing:
        raise PipelineError(
            f"{paths.metrics_file(task.name)}: no entry for {', '.join(missing)} (rerun: dvc repro {stage})"
        )
    speed = _read_json(paths.speed_file(task.name), stage)
    return TaskResults(task, metrics, speed, load_ablation(task) if ablated else None)


def load_ablation(task: TaskSpec) -> dict[str, Any]:
    """The task's ablation table.

    A malformed file fails here, before the report writes anything, in one line that says
    what is wrong and which stage rewrites it.
    """
    path, stage = paths.ablation_metrics(task.name), f"ablation@{task.name}"
    ablation = _read_json(path, stage)
    problems = ablation_problems(task, ablation)
    if problems:
        raise PipelineError(f"{path}: {'; '.join(problems)} (rerun: dvc repro {stage})")
    return ablation


def ablation_problems(task: TaskSpec, ablation: dict[str, Any]) -> list[str]:
    """What in an ablation file the report could not render ([] when nothing)."""
    missing = [key for key in ABLATION_KEYS if key not in ablation]
    if missing:
        return [f"no entry for {', '.join(missing)}"]
    keys, seeds, arms = ablation["metric_keys"], ablation["seeds"], ablation["arms"]
    problems = [f"{key} is not a metric key of {task.name}" for key in keys if key not in metric_keys(task)]
    problems += [f"no {what}" for what, given in (("metric keys", keys), ("seeds", seeds)) if not given]
    roles = [arm.get("role") for arm in arms]
    if len(arms) < 2 or roles != ["baseline", *["arm"] * (len(arms) - 2), "full"]:
        problems.append(f"arm roles {roles}, expected baseline first, full last and arm between")
    for i, arm in enumerate(arms):
        name = arm.get("name", f"arms[{i}]")
        missing = [key for key in ARM_KEYS if key not in arm]
        if missing:
            problems.append(f"arm {name}: no entry for {', '.join(missing)}")
            continue
        arm_seeds = [entry.get("seed") for entry in arm["seeds"]]
        if arm_seeds != seeds:
            problems.append(f"arm {name}: seeds {arm_seeds}, expected the file's seeds {seeds}")
        if arm["logits"] not in LOGITS_SOURCES:
            problems.append(f"arm {name}: logits {arm['logits']!r}, expected one of {', '.join(LOGITS_SOURCES)}")
        missing = [f"{part}.{key}" for part in ("mean", "spread") for key in keys if key not in arm[part]]
        missing += [f"seed {entry.get('seed')}.{key}" for entry in arm["seeds"] for key in keys if key not in entry]
        if missing:
            problems.append(f"arm {name}: no entry for {', '.join(missing)}")
    return problems


# --------------------------------------------------------------------------- formatting


def pct(value: float) -> str:
    return f"{100 * value:.2f}"


def millions(count: float) -> str:
    return f"{count / 1e6:.2f} M"


def ratio(value: float) -> str:
    return f"{value:.1f}×" if value < 10 else f"{value:.0f}×"


def versus_teacher(name: str, teacher_value: float, value: float) -> str:
    """How many times the teacher's figure is this model's ("—" on the teacher's own row)."""
    return "—" if name == TEACHER else ratio(teacher_value / value)


def column_label(task: TaskSpec, key: str) -> str:
    """"SST-2 acc", "QQP F1", "MNLI-m acc", "MNLI-mm acc", ... for a metric key of `task`."""
    for split in task.eval_splits:
        for metric in task.metrics:
            if key == f"eval_{metric}{split.metric_suffix}":
                which = split.metric_suffix.replace("_", "-") or ("-m" if len(task.eval_splits) > 1 else "")
                return f"{task.title}{which} {METRIC_ABBREVIATIONS.get(metric, metric)}"
    raise KeyError(f"{key} is not a metric of task {task.name}")


def _listing(items: Sequence[object]) -> str:
    """"a", "a and b", "a, b and c"."""
    words = [str(item) for item in items]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


# --------------------------------------------------------------------------- sections


def cites_paper(results: Sequence[TaskResults]) -> bool:
    """Whether the report prints the paper's rows, and so should also say how the paper trained."""
    return any(p.source.startswith(PAPER) for r in results for p in r.task.published)


def all_glue(results: Sequence[TaskResults]) -> bool:
    """Whether every task is a built-in GLUE one (whose dev split is GLUE's)."""
    return all(r.task.builtin for r in results)


def data_note(task: TaskSpec, data: dict[str, Any], unavailable: dict[str, str]) -> str:
    """Rows used per split, against the official sizes where the task declares them, whether
    the run is reduced, and where the data comes from (the task's description, and the note
    on a known copy of its training file).

    A reduced run is flagged because its scores cannot be set beside published ones; a task
    with neither official sizes nor published scores (your own data) has nothing to be
    compared with, so it gets the rows alone.
    """
    official = task.official_rows
    parts, reduced = [], False
    for spec in (task.train_split, *task.eval_splits):
        if spec.name in unavailable:
            parts.append(f"{spec.name} not available ({unavailable[spec.name]})")
            reduced = True
            continue
        rows, source = data[f"{spec.name}_rows"], data[f"{spec.name}_source_rows"]
        skipped = data[f"{spec.name}_skipped_rows"]
        text = f"{spec.name} {rows:,} rows"
        if skipped:
            text += f" ({skipped:,} malformed source row{'s' if skipped > 1 else ''} skipped)"
        if spec.name in official and source < official[spec.name]:
            text += (
                f"; the source file holds {source:,} of GLUE's {official[spec.name]:,} rows: **reduced data**"
            )
            reduced = True
        elif rows + skipped < source:
            text += f"; first {rows:,} of {source:,} rows (data.max_*_rows): **reduced run**"
            reduced = True
        parts.append(text)
    if reduced:
        comparable_with = official or task.published
        verdict = " Scores are **not comparable** with published numbers for this task." if comparable_with else ""
    else:
        verdict = " Full official splits." if official else ""
    known = task.source_notes.get(data.get(f"{task.train_split.name}_source_sha256", ""), "")
    sources = "; ".join(s for s in (task.description, known) if s)
    source_note = f" Source: {sources}" if sources else ""
    return f"- **{task.title}**: " + "; ".join(parts) + "." + verdict + source_note


def scores_in_percent(results: Sequence[TaskResults]) -> str:
    """"Accuracy and F1 in percent.": the metrics the table holds, named once each."""
    listed = _listing(list(dict.fromkeys(METRIC_NAMES[m] for r in results for m in r.task.metrics)))
    return f"{listed[0].upper()}{listed[1:]} in percent."


def accuracy_section(results: Sequence[TaskResults]) -> list[str]:
    """Our dev scores beside the published rows the report's tasks declare."""
    header = ["Model", "Evaluated on"] + [column_label(r.task, k) for r in results for k in r.metric_keys]
    dev = "GLUE **dev**" if all_glue(results) else "**dev**"

    def ours(name: str) -> list[str]:
        scores = [
            "not available" if k in r.unavailable else pct(r.metrics[name][k])
            for r in results
            for k in r.metric_keys
        ]
        return [OURS[name], "GLUE dev (ours)" if all_glue(results) else "dev (ours)", *scores]

    def published(row: PublishedRow, scores: dict[str, Mapping[str, str]]) -> list[str]:
        model, _, evaluated_on = row
        cells = [scores.get(r.task.name, {}).get(k, "—") for r in results for k in r.metric_keys]
        return [model, evaluated_on, *cells]

    gain = ["Distilled − baseline (ours)", "points"] + [
        "—" if k in r.unavailable else f"{100 * (r.metrics[DISTILLED][k] - r.metrics[BASELINE][k]):+.2f}"
        for r in results
        for k in r.metric_keys
    ]
    notes = [
        f"{column_label(r.task, k)} not available: {reason}."
        for r in results
        for k, reason in r.unavailable.items()
    ]
    literature = published_rows([r.task for r in results])
    rows = [ours(TEACHER), ours(DISTILLED), ours(BASELINE), gain]
    rows += [published(row, scores) for row, scores in literature.items()]
    if literature:
        notes.append("Published numbers: " + "; ".join(sorted({source for _, source, _ in literature})) + ".")
    if cites_paper(results):
        intro = [
            f"{scores_in_percent(results)} Ours are on the {dev} sets; the paper's Table 1 is the GLUE",
            "**test** server, whose labels are hidden, so the re-implementations' dev scores are the closer",
            "comparison. Teachers differ: ours is the `teacher.model` checkpoint fine-tuned here (size below),",
            "the paper's is BERT-large.",
        ]
    else:
        intro = [
            f"{scores_in_percent(results)} Ours are on the {dev} splits; our teacher is the `teacher.model`",
            "checkpoint fine-tuned here (size below).",
        ]
    return [
        "## 1. Accuracy (paper Table 1 shape)",
        "",
        *intro,
        "",
        *_table(header, rows),
        *[line for note in notes for line in ("", note)],
    ]


def selection_section(results: Sequence[TaskResults]) -> list[str]:
    """Each model's kept (best dev) epoch against its last one: what selection on dev adds."""
    rows = []
    for r in results:
        key = primary_metric(r.task)
        for name in (TEACHER, DISTILLED, BASELINE):
            epochs = r.metrics[name]["epochs"]
            best, last = epochs[r.metrics[name]["best_epoch"] - 1], epochs[-1]
            rows.append(
                [
                    r.task.title,
                    OURS[name],
                    column_label(r.task, key),
                    f"{best['epoch']} of {last['epoch']}",
                    pct(best[key]),
                    pct(last[key]),
                    f"{100 * (best[key] - last[key]):+.2f}",
                ]
            )
    header = ["Task", "Model", "Metric", "Kept epoch", "Kept (dev)", "Last epoch (dev)", "Kept − last"]
    return [
        "### Selection on dev: kept epoch against last epoch",
        "",
        "Every model keeps its best dev epoch (the GLUE norm), so its dev score above is also",
        "the score it was selected on. The last epoch's score, which no selection touched, shows",
        "how much that choice adds.",
        "",
        *_table(header, rows),
    ]


def settings_section(results: Sequence[TaskResults]) -> list[str]:
    """How each model was trained, from its own training record, beside the paper's settings
    when the report prints the paper's scores."""
    rows = []
    for r in results:
        for name in (TEACHER, DISTILLED, BASELINE):
            s = r.metrics[name]["settings"]
            if name == TEACHER:
                what = (
                    f"{s['model']}, lr {s['lr']:g}, {s['epochs']} epochs, batch {s['batch_size']}, "
                    f"{s['precision'].removeprefix('torch.')}"
                )
            else:
                what = f"AdaDelta, batch {s['batch_size']}, {s['epochs']} epochs, H {s['hidden_size']}"
                what += f", alpha {s['alpha']:g}" if "alpha" in s else ", CE on gold labels"
            rows.append([r.task.title, OURS[name], f"{s['train_rows']:,}", what])
    header = ["Task", "Model", "Training rows", "Settings"]
    return [
        "### Training settings",
        "",
        "As each model's training record holds them (the distilled student's rows are its",
        "transfer set: the originals and their augmented copies).",
        "",
        *_table(header, rows),
        *(["", PAPER_SETTINGS] if cites_paper(results) else []),
    ]


def ablation_section(results: Sequence[TaskResults]) -> list[str]:
    """The ablation arms of each task that has them: how much of the distilled student's gain
    over the baseline comes from the teacher's logits and how much from each augmentation
    rule, the split the paper never measured (METHOD.md §2.3)."""
    ablated = [(r.task, r.ablation) for r in results if r.ablation is not None]
    if not ablated:
        return []
    lines = [
        "",
        "## What the gain is made of",
        "",
        "The paper has no ablation (METHOD.md §2.3): it never separates the teacher's soft targets from",
        "the augmentation, nor one augmentation rule from another. Each row below trains the student as",
        "its description says, from the baseline to the full method, and each step is the row against",
        "the one above it. A step *exceeds the seed spread* when |difference of the two rows' means| >",
        "max(spread of the two rows), both in points as printed.",
    ]
    for task, ablation in ablated:
        lines += ["", f"### {task.title}", "", *task_ablation(task, ablation)]
    return lines


def task_ablation(task: TaskSpec, ablation: dict[str, Any]) -> list[str]:
    """One task's ablation table, each step against the seed spread, and the gain split."""
    keys, seeds, arms = ablation["metric_keys"], ablation["seeds"], ablation["arms"]
    peer, primary = task.published_ablation, column_label(task, keys[0])
    header = ["Arm", "What it trains on", "Teacher logits", "Transfer-set rows"]
    for key in keys:
        label = column_label(task, key)
        header += [f"{label}: mean ({' / '.join(f'seed {s}' for s in seeds)})", f"{label} spread (points)"]
    header += [f"Peer {primary}"] if peer else []
    rows = []
    for arm in arms:
        row = [
            ARM_LABELS[arm["role"]].format(name=arm["name"]),
            arm["description"],
            LOGITS_SOURCES[arm["logits"]].format(task=task.name)
            + (f" ({arm['logits_dtype']})" if arm.get("logits_dtype") else ""),
            f"{arm['transfer_rows']:,}",
        ]
        for key in keys:
            each = " / ".join(pct(entry[key]) for entry in arm["seeds"])
            row += [f"{pct(arm['mean'][key])} ({each})", f"{100 * arm['spread'][key]:.2f}"]
        rows.append(row + ([peer.scores.get(arm["name"], "—")] if peer else []))
    seeds_used = f"seed{'s' * (len(seeds) > 1)} {_listing(seeds)}"
    lines = [
        f"Each row is the mean over {seeds_used} on `{ablation['dev_split']}`, each seed's value in",
        "brackets; spread = max − min over the seeds.",
        "",
        *_table(header, rows),
        "",
        *[f"- {step_sentence(task, keys[0], before, after)}" for before, after in itertools.pairwise(arms)],
        "",
        gain_split(f"The full method ({arms[-1]['name']})", _means(arms, keys[0]), arms, primary),
    ]
    precisions = sorted({arm["logits_dtype"] for arm in arms if arm.get("logits_dtype")})
    if len(precisions) > 1:
        lines += [
            "",
            f"The rows' teacher logits were computed in {' and '.join(precisions)} (column \"Teacher logits\"):",
            "a step between two of them also changes the precision, not only the arm.",
        ]
    if peer:
        lines += [
            "",
            f"Peer column: {peer.model}; {peer.source}, {peer.evaluated_on}. Its teacher and student are "
            + "not ours, so only its steps compare with ours, not its levels.",
        ]
        if all(arm["name"] in peer.scores for arm in (arms[0], arms[-1])):
            scores = {name: float(score) for name, score in peer.scores.items()}
            lines.append(gain_split("The peer's full method", scores, arms, primary))
    return lines


def _means(arms: Sequence[dict[str, Any]], key: str) -> dict[str, float]:
    """Arm name -> its mean over the seeds, in percent."""
    return {arm["name"]: 100 * arm["mean"][key] for arm in arms}


def step_sentence(task: TaskSpec, key: str, before: dict[str, Any], after: dict[str, Any]) -> str:
    """What one arm adds over the row above it, against the seed spread of the two rows.

    Both sides are compared as printed (points, 2 decimals), so the verdict always agrees
    with the two numbers beside it.
    """
    step = 100 * (after["mean"][key] - before["mean"][key])
    spread = 100 * max(after["spread"][key], before["spread"][key])
    verdict = "larger than" if round(abs(step), 2) > round(spread, 2) else "within"
    return (
        f"{after['name']} adds {step:+.2f} points over {before['name']} ({column_label(task, key)}); "
        f"that is {verdict} the seed spread ({spread:.2f} points)."
    )


def soft_targets_alone(arms: Sequence[dict[str, Any]]) -> str | None:
    """The first arm trained on the teacher's logits of the original rows alone, if any: by
    what it trains on, not by its name."""
    return next((a["name"] for a in arms if a["role"] == "arm" and a["originals_only"] and a["logits"] == "task"), None)


def gain_split(subject: str, scores: Mapping[str, float], arms: Sequence[dict[str, Any]], label: str) -> str:
    """The full method against the baseline, in `scores` (arm name -> percent): the question
    the paper leaves open, so split, where an arm trains on soft targets alone, into what they
    give (that arm − baseline) and what the augmentation adds (full − that arm)."""
    baseline, full, soft = arms[0]["name"], arms[-1]["name"], soft_targets_alone(arms)
    text = f"{subject} adds {scores[full] - scores[baseline]:+.2f} points over {baseline} ({label})"
    if soft in scores:
        text += (
            f": {scores[soft] - scores[baseline]:+.2f} from the soft targets alone ({soft} − {baseline})"
            f" and {scores[full] - scores[soft]:+.2f} from the augmentation ({full} − {soft})"
        )
    return text + "."


def _teacher_name(metrics: dict[str, Any]) -> str:
    teacher = metrics[TEACHER]
    return f"BERT {teacher['num_layers']} layers, hidden {teacher['hidden_size']}"


def size_section(results: Sequence[TaskResults]) -> list[str]:
    rows = []
    for r in results:
        teacher = r.metrics[TEACHER]
        for name in (TEACHER, DISTILLED, BASELINE):
            m = r.metrics[name]
            rows.append(
                [
                    r.task.title,
                    OURS[name] + (f": {_teacher_name(r.metrics)}" if name == TEACHER else ""),
                    millions(m["params_total"]),
                    millions(m["params_no_embeddings"]),
                    versus_teacher(name, teacher["params_total"], m["params_total"]),
                    versus_teacher(name, teacher["params_total"], m["params_no_embeddings"]),
                ]
            )
    header = [
        "Task",
        "Model",
        "Params",
        "Params w/o embeddings",
        "Teacher ÷ model",
        "Teacher ÷ model w/o emb. (paper's ratio)",
    ]
    return [
        "## 2. Size and speed (paper Table 2 shape)",
        "",
        "Parameters with and without the embedding tables (METHOD.md §0.9). The paper's \"349× fewer\"",
        "divides BERT-large *with* embeddings (335 M) by the BiLSTM *without* them (0.96 M), i.e. the",
        "last column (METHOD.md §4.2). A student's embedding tables are its two channels over the",
        "training vocabulary plus the frozen pretrained vectors of its backoff words",
        "(`student.backoff_words`), which stand in for `<unk>` on words never seen in training.",
        "",
        *_table(header, rows),
    ]


def speed_section(results: Sequence[TaskResults]) -> list[str]:
    """Our timings per device; the paper's Table 2 beside them when its task (SST-2) is here."""
    lines: list[str] = []
    devices = [d for d in ("cpu", "cuda") if any(d in r.speed for r in results)]
    for device in devices:
        rows = []
        for r in results:
            if device not in r.speed:
                continue
            timings = r.speed[device]
            teacher = timings[TEACHER]
            rows_timed = r.speed["protocol"]["rows"]
            for name in [n for n in (*OURS, *EXPORTS) if n in timings]:
                t = timings[name]
                rows.append(
                    [
                        r.task.title,
                        {**OURS, **EXPORTS}[name],
                        f"{rows_timed:,}",
                        f"{t['throughput_model_s']:.2f}",
                        versus_teacher(name, teacher["throughput_model_s"], t["throughput_model_s"]),
                        f"{t['throughput_e2e_s']:.2f}",
                        versus_teacher(name, teacher["throughput_e2e_s"], t["throughput_e2e_s"]),
                        f"{t['latency_model_ms_median']:.2f} / {t['latency_model_ms_p90']:.2f}",
                        versus_teacher(
                            name, teacher["latency_model_ms_median"], t["latency_model_ms_median"]
                        ),
                        f"{t['latency_e2e_ms_median']:.2f}",
                    ]
                )
        header = [
            "Task",
            "Model",
            "Rows",
            "Model time (s)",
            "Speed-up",
            "Incl. tokenisation (s)",
            "Speed-up",
            "Batch-1 latency median / p90 (ms)",
            "Speed-up",
            "Batch-1 incl. tokenisation (ms)",
        ]
        lines += ["", f"### Inference speed on {device.upper()}", "", *_table(header, rows)]
    lines += [
        "",
        "Speed-up = teacher time ÷ model time on the same device and rows. Ratios, not seconds, compare",
    ]
    if not any(r.task.name == PAPER_TABLE2_TASK for r in results):
        return lines + ["across hardware."]
    return lines + [
        "across hardware. The paper's Table 2 (SST-2, 67,350 sentences, batch 512, one V100; METHOD.md",
        "§2.2, what its clock covered is not stated):",
        "",
        *_table(
            ["Model", "Params (M)", "Inference time (s)", "Params ratio", "Time ratio"],
            [list(row) for row in PAPER_TABLE2],
        ),
    ]


def export_section(results: Sequence[TaskResults]) -> list[str]:
    """The served students against their PyTorch originals: score, agreement, size, speed."""
    rows = []
    for r in results:
        key = primary_metric(r.task)
        teacher_ms = r.speed["cpu"][TEACHER]["latency_e2e_ms_median"]
        for name, label in EXPORTS.items():
            if name not in r.metrics:
                continue
            m, t = r.metrics[name], r.speed["cpu"][name]
            student = name.split("_onnx")[0]
            torch_rows_per_s = r.speed["cpu"][student]["throughput_model_rows_per_s"]
            rows.append(
                [
                    r.task.title,
                    label,
                    pct(m[key]),
                    f"{100 * (m[key] - r.metrics[student][key]):+.2f}",
                    f"{m['predictions_differing']:,}",
                    f"{m['model_file_bytes'] / 1e6:.1f} MB",
                    f"{t['latency_e2e_ms_median']:.3f}",
                    ratio(teacher_ms / t["latency_e2e_ms_median"]),
                    f"{t['throughput_model_rows_per_s']:,.0f} ({t['throughput_model_rows_per_s'] / torch_rows_per_s:.1f}×)",
                ]
            )
    if not rows:
        return []
    header = [
        "Task",
        "Model",
        "Dev metric",
        "− PyTorch student (points)",
        "Dev predictions differing",
        "Model file",
        "Batch-1 text → label, median (ms)",
        "Teacher ÷ export, batch 1",
        "Batch-512 model rows/s (× PyTorch student)",
    ]
    return [
        "",
        "### Served students: the ONNX exports on the CPU",
        "",
        "`dvc repro export` writes each student as ONNX (float32, and int8 from dynamic",
        "quantisation) with its vocabulary; `pipeline.serve` runs it with onnxruntime and numpy",
        "alone. The exports are scored on the same dev rows from raw text (they tokenise it",
        "themselves), so \"text → label\" is the whole serving path; the PyTorch models' end-to-end",
        "figures start from text already in canonical form. Dev metric: the task's primary one.",
        "",
        *_table(header, rows),
    ]


def setup_section(results: Sequence[TaskResults], environment_lock: str | None) -> list[str]:
    rows = []
    for r in results:
        env, protocol = r.speed["environment"], r.speed["protocol"]
        hardware = env["cpu_model"] + (f"; GPU {env['gpu_model']}" if "gpu_model" in env else "")
        rows.append(
            [
                r.task.title,
                hardware,
                str(env["cpu_threads"]),
                env["dtype"],
                f"{protocol['batch_size']}",
                f"{protocol['latency_repeats']} after {protocol['warmup_batches']} warm-up",
                f"torch {env['torch']}, transformers {env['transformers']}",
            ]
        )
    header = ["Task", "Hardware", "CPU threads", "dtype", "Batch", "Latency calls", "Versions"]
    return [
        "### How speed was measured",
        "",
        "Throughput covers the task's training sentences in data order (METHOD.md §4.1).",
        "\"Model time\" runs the model on inputs tokenised beforehand; \"incl. tokenisation\" adds the",
        "time to tokenise them and copy them to the device. Warm-up batches run first and are not",
        "timed; GPUs are synchronised around every clock read.",
        "",
        *_table(header, rows),
        "",
        f"Environment: `{paths.ENVIRONMENT_LOCK}` sha256 `{environment_lock}` (every Python package, pinned and "
        f"hashed; `pip install --require-hashes -r {paths.ENVIRONMENT_LOCK}` installs it)."
        if environment_lock
        else f"Environment: no `{paths.ENVIRONMENT_LOCK}` beside this run; its packages are not pinned.",
    ]


def figures_section(results: Sequence[TaskResults]) -> list[str]:
    return [
        "## 3. Figures",
        "",
        f"![Dev score against parameters]({FIGURES}/accuracy_vs_params.png)",
        "",
        f"![Dev score against CPU batch-1 latency]({FIGURES}/accuracy_vs_latency.png)",
        "",
        f"![Student training curves]({FIGURES}/training_curves.png)",
        *[
            line
            for r in results
            if r.ablation is not None
            for line in ("", f"![{r.task.title} ablation arms]({FIGURES}/{ablation_figure(r.task)})")
        ],
    ]


def data_intro(results: Sequence[TaskResults]) -> list[str]:
    """Where the data was read from, for the kinds of task the report has."""
    lines = []
    if any(r.task.builtin for r in results):
        lines += [
            "GLUE in the classic `glue_data/` layout (`data.glue_dir` or `$GLUE_DIR`). In the development",
            "workspace that is `../shared/glue`, whose `SOURCES.md` documents every file.",
            "",
        ]
    if not all_glue(results):
        lines += ["Declared tasks are read from the files named under `datasets` in `params.yaml`.", ""]
    return lines


def render_markdown(results: Sequence[TaskResults], environment_lock: str | None = None) -> str:
    """The whole report as Markdown: pure, so tests check it without touching disk;
    `environment_lock` is the sha256 of the environment lock the run had, if any."""
    lines = [
        "# Results: BERT → BiLSTM distillation" + (" (Tang et al. 2019)" if cites_paper(results) else ""),
        "",
        "Generated by `dvc repro report` from `metrics/evaluate/`; do not edit by hand.",
        "",
        "## Data",
        "",
        *data_intro(results),
        *[data_note(r.task, r.metrics["data"], r.metrics.get("unavailable", {})) for r in results],
        "",
        *accuracy_section(results),
        "",
        *selection_section(results),
        "",
        *settings_section(results),
        *ablation_section(results),
        "",
        *size_section(results),
        *speed_section(results),
        *export_section(results),
        "",
        *setup_section(results, environment_lock),
        "",
        *figures_section(results),
    ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- figures


def draw_figures(results: Sequence[TaskResults], out_dir: Path) -> list[Path]:
    """Accuracy against size and latency, and the students' curves, as PNG files."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    colors = {TEACHER: "tab:red", DISTILLED: "tab:blue", BASELINE: "tab:gray"}
    n = len(results)

    # The exports share their students' parameters; on the latency axis they are new points.
    scatters = (
        (
            "accuracy_vs_params.png",
            "parameters, embeddings included (millions)",
            lambda r, m: r.metrics[m]["params_total"] / 1e6,
            (),
        ),
        (
            "accuracy_vs_latency.png",
            "CPU batch-1 latency, median (ms)",
            lambda r, m: r.speed["cpu"][m]["latency_model_ms_median"],
            tuple(EXPORTS),
        ),
    )
    for filename, xlabel, x_of, extra in scatters:
        fig = Figure(figsize=(4.5 * n, 3.6), layout="constrained")
        for ax, r in zip(fig.subplots(1, n, squeeze=False)[0], results):
            key = primary_metric(r.task)
            for name in (TEACHER, DISTILLED, BASELINE, *(e for e in extra if e in r.metrics)):
                x, y = x_of(r, name), 100 * r.metrics[name][key]
                variant = name.split("_onnx")[0]
                marker = "o" if name == variant else ("s" if name.endswith("_int8") else "D")
                ax.scatter([x], [y], color=colors[variant], marker=marker, s=60)
                ax.annotate(name, (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8)
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))  # labels within a decade
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.margins(x=0.15, y=0.15)
            ax.set(title=r.task.title, xlabel=xlabel, ylabel=f"{column_label(r.task, key)}, dev (%)")
            ax.grid(alpha=0.3)
        written.append(_save(fig, out_dir / filename))

    fig = Figure(figsize=(9, 3.4 * n), layout="constrained")
    for (loss_ax, dev_ax), r in zip(fig.subplots(n, 2, squeeze=False), results):
        key = primary_metric(r.task)
        for variant, rows in r.curves.items():
            epochs = [row["epoch"] for row in rows]
            style = {"marker": "o", "color": colors[variant], "label": variant}
            loss_ax.plot(epochs, [row["train_loss"] for row in rows], **style)
            dev_ax.plot(epochs, [100 * row[key] for row in rows], **style)
        dev_ax.axhline(100 * r.metrics[TEACHER][key], color=colors[TEACHER], linestyle="--", label="teacher")
        # Each variant logs its own objective (distillation loss vs cross-entropy): compare shapes only.
        loss_ax.set(title=f"{r.task.title}: training loss (own objective)", xlabel="epoch", ylabel="loss")
        dev_ax.set(title=f"{r.task.title}: dev", xlabel="epoch", ylabel=f"{column_label(r.task, key)} (%)")
        for ax in (loss_ax, dev_ax):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    written.append(_save(fig, out_dir / "training_curves.png"))
    written += [
        _save(ablation_bars(r.task, r.ablation), out_dir / ablation_figure(r.task))
        for r in results
        if r.ablation is not None
    ]
    return written


def ablation_figure(task: TaskSpec) -> str:
    return f"ablation_{task.name}.png"


def ablation_bars(task: TaskSpec, ablation: dict[str, Any]) -> Any:
    """One bar per arm (the mean of the primary metric), each seed a dot on it, so a step can
    be judged against the seeds' scatter at a glance; the peer's scores as hollow diamonds."""
    from matplotlib.figure import Figure

    key, arms = ablation["metric_keys"][0], ablation["arms"]
    means = [100 * arm["mean"][key] for arm in arms]
    seeds = [(x, 100 * entry[key]) for x, arm in enumerate(arms) for entry in arm["seeds"]]
    peer = task.published_ablation
    peers = [(x, float(peer.scores[arm["name"]])) for x, arm in enumerate(arms) if peer and arm["name"] in peer.scores]
    fig = Figure(figsize=(1.3 * len(arms) + 2, 3.6), layout="constrained")
    ax = fig.subplots()
    ax.bar(range(len(arms)), means, color="tab:blue", alpha=0.5, label="mean over seeds")
    ax.scatter(*zip(*seeds), color="tab:blue", s=18, zorder=3, label="one seed")
    if peers:
        peer_style = {"marker": "D", "s": 50, "facecolors": "none", "edgecolors": "tab:orange", "zorder": 4}
        ax.scatter(*zip(*peers), label="peer (other teacher, student)", **peer_style)  # hollow: seeds show through
    # Bars from 0 would hide differences of a point: the axis starts just under the lowest value.
    values = means + [y for _, y in seeds + peers]
    ax.set_ylim(min(values) - 2, max(values) + 1)
    ax.set_xticks(range(len(arms)), [arm["name"] for arm in arms], rotation=20, fontsize=8)
    ax.set(title=f"{task.title}: ablation arms", ylabel=f"{column_label(task, key)}, dev (%)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def _save(fig: Any, path: Path) -> Path:
    fig.savefig(path, dpi=120, metadata={"Software": None})
    return path


def dev_curve_table(result: TaskResults) -> list[dict[str, float | str]]:
    """One row per epoch: the students' primary dev metric beside the teacher's final one.

    The curve files hold one variant each; this puts both in one table so `dvc plots show`
    draws them on one chart. An epoch one variant lacks gets an empty cell.
    """
    key = primary_metric(result.task)
    by_epoch: dict[float, dict[str, float | str]] = {}
    for variant, rows in result.curves.items():
        for row in rows:
            by_epoch.setdefault(row["epoch"], {})[variant] = row[key]
    teacher = result.metrics[TEACHER][key]
    return [
        {"epoch": int(epoch), TEACHER: teacher, **{v: scores.get(v, "") for v in paths.STUDENT_VARIANTS}}
        for epoch, scores in sorted(by_epoch.items())
    ]


def write_plot_data(results: Sequence[TaskResults], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for result in results:
        path = out_dir / f"{result.task.name}-dev.csv"
        with path.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=["epoch", TEACHER, *paths.STUDENT_VARIANTS])
            writer.writeheader()
            writer.writerows(dev_curve_table(result))
        written.append(path)
    return written


# --------------------------------------------------------------------------- command


def main(params_path: Path) -> None:
    params = load_params(params_path)
    tasks = [params.task(name) for name in params.tasks]  # built-in or declared under `datasets`
    with stage_run(log, "report", tasks=",".join(t.name for t in tasks)) as summary:
        results = [load_results(task, ablated=task.name in params.ablation.tasks) for task in tasks]
        lock = file_sha256(paths.ENVIRONMENT_LOCK) if paths.ENVIRONMENT_LOCK.is_file() else None
        with atomic_path(paths.REPORTS) as out:
            out.mkdir()
            (out / "results.md").write_text(render_markdown(results, lock))
            figures = draw_figures(results, out / FIGURES)
            write_plot_data(results, out / PLOTS)
        summary["out"] = paths.REPORTS / "results.md"
        summary["figures"] = len(figures)
