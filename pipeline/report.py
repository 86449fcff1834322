"""`report` stage: `reports/results.md` and its figures, from the metrics files alone.

Every number of ours is read from `metrics/evaluate/<task>.json` and `metrics/evaluate/<task>_speed.json`
(written by `evaluate`, which also copies each model's per-epoch dev scores there); the only
numbers typed in here are the published ones below, constants of the literature, each with
its source in METHOD.md. Ours are GLUE **dev** scores; the
paper's Table 1 is GLUE **test** (the test labels are hidden), so the peers' dev numbers
are the closer comparison (METHOD.md §1.1, §2.4).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import paths
from pipeline.errors import PipelineError
from pipeline.io import atomic_path, read_json
from pipeline.logs import get_logger, stage_run
from pipeline.metrics import primary_metric
from pipeline.params import load_params
from pipeline.tasks import TaskSpec, get_task

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
METRIC_ABBREVIATIONS = {"accuracy": "acc", "f1": "F1"}

# --------------------------------------------------------------------------- the literature


@dataclass(frozen=True)
class Published:
    """One row of published scores, as printed (percent), keyed by task and metric key."""

    model: str
    source: str
    evaluated_on: str  # "GLUE test" or "GLUE dev"
    scores: dict[str, dict[str, str]]


# The paper's Table 1, rows confirmed by two or more sources (METHOD.md §2.1, tag [P✓]).
PAPER_TABLE1 = (
    Published(
        "BERT-large (Devlin et al.)",
        "Tang et al. 2019, Table 1 (METHOD.md §2.1)",
        "GLUE test",
        {
            "sst2": {"eval_accuracy": "94.9"},
            "qqp": {"eval_accuracy": "89.3", "eval_f1": "72.1"},
            "mnli": {"eval_accuracy": "86.7", "eval_accuracy_mm": "85.9"},
        },
    ),
    Published(
        "BiLSTM_SOFT, distilled (paper)",
        "Tang et al. 2019, Table 1 (METHOD.md §2.1)",
        "GLUE test",
        {
            "sst2": {"eval_accuracy": "90.7"},
            "qqp": {"eval_accuracy": "88.1", "eval_f1": "68.2"},
            "mnli": {"eval_accuracy": "73.0", "eval_accuracy_mm": "72.6"},
        },
    ),
    Published(
        "BiLSTM, no distillation (paper)",
        "Tang et al. 2019, Table 1 (METHOD.md §2.1)",
        "GLUE test",
        {
            "sst2": {"eval_accuracy": "86.7"},
            "qqp": {"eval_accuracy": "86.2", "eval_f1": "63.7"},
            "mnli": {"eval_accuracy": "68.7", "eval_accuracy_mm": "68.3"},
        },
    ),
)

# Public re-implementations that report GLUE dev scores (METHOD.md §2.4).
_PADDLE = "PaddlePaddle/PaddleNLP examples/model_compression/distill_lstm (METHOD.md §2.4)"
_DSINDEX = "dsindex/distil-bilstm README (METHOD.md §2.4)"
PEERS = (
    Published(
        "PaddleNLP: bert-base-uncased teacher",
        _PADDLE,
        "GLUE dev",
        {"sst2": {"eval_accuracy": "93.00"}, "qqp": {"eval_accuracy": "90.58", "eval_f1": "87.35"}},
    ),
    Published(
        "PaddleNLP: BiLSTM distilled",
        _PADDLE,
        "GLUE dev",
        {"sst2": {"eval_accuracy": "88.76"}, "qqp": {"eval_accuracy": "87.52", "eval_f1": "83.13"}},
    ),
    Published(
        "PaddleNLP: BiLSTM, no distillation",
        _PADDLE,
        "GLUE dev",
        {"sst2": {"eval_accuracy": "85.44"}, "qqp": {"eval_accuracy": "85.66", "eval_f1": "79.97"}},
    ),
    Published(
        "dsindex: bert-large-uncased teacher", _DSINDEX, "GLUE dev", {"sst2": {"eval_accuracy": "93.00"}}
    ),
    Published("dsindex: BiLSTM distilled", _DSINDEX, "GLUE dev", {"sst2": {"eval_accuracy": "88.63"}}),
    Published("dsindex: BiLSTM, no distillation", _DSINDEX, "GLUE dev", {"sst2": {"eval_accuracy": "82.32"}}),
)

# The paper's Table 2: SST-2 models over 67,350 training sentences at batch 512 on one
# V100 (METHOD.md §2.2, §4.1): model, parameters (millions; the BiLSTM's exclude its
# embeddings), seconds, and the ratios to BiLSTM_SOFT as printed.
PAPER_TABLE2 = (
    ("BERT-large", "335", "1060.48", "349×", "434×"),
    ("ELMo", "93.6", "36.71", "98×", "15×"),
    ("BiLSTM_SOFT", "0.96", "2.44", "1×", "1×"),
)

# Known copies of a task's training file, by sha256 (../shared/glue/SOURCES.md), and what the
# report says about them; another copy (a sample, the official download) gets no note.
SOURCE_NOTES = {
    "48eac26399f8456935f81dd9e3a745c1430adb6c62e233ccfe22db4a0d15d1d1": "the official GLUE SST-2 files.",
    "b8a0265f35f88bc4603c8f9c8732308a4f9c087cf8278ae17e9317c734eb3b69": (
        "a real 23,497-pair excerpt of the official QQP *training* split (20,000 train / 3,497 dev): "
        "its dev scores are not comparable with published QQP dev numbers."
    ),
    "e524f07ab4eac83817d2a03a9a845e868419f8c994b08355da6b30433381ce75": (
        "the complete official dev_matched set and 75,571 real MultiNLI training pairs (a fifth of "
        "GLUE's train, label-balanced), without dev_mismatched: trained on a fifth of the data with "
        "balanced labels, so not comparable with published MNLI-m numbers."
    ),
}

# Official GLUE split sizes (METHOD.md §1.1): a run below them is not comparable with
# published numbers.
GLUE_ROWS = {
    "sst2": {"train": 67_349, "dev": 872},
    "qqp": {"train": 363_846, "dev": 40_430},
    "mnli": {"train": 392_702, "dev_matched": 9_815, "dev_mismatched": 9_832},
}

# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class TaskResults:
    """Everything the report shows for one task, as read from metrics/."""

    task: TaskSpec
    metrics: dict[str, Any]  # metrics/evaluate/<task>.json
    speed: dict[str, Any]  # metrics/evaluate/<task>_speed.json

    @property
    def metric_keys(self) -> list[str]:
        """The task's metric keys, one per metric and eval split, as evaluate writes them
        (an unavailable split's keys included: its cells say why they are empty)."""
        return [f"eval_{m}{s.metric_suffix}" for s in self.task.eval_splits for m in self.task.metrics]

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


def _read_json(path: Path, stage: str) -> dict[str, Any]:
    return read_json(path, stage)


def load_results(task: TaskSpec) -> TaskResults:
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
    return TaskResults(task, metrics, speed)


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
                return f"{task.glue_dir}{which} {METRIC_ABBREVIATIONS.get(metric, metric)}"
    raise KeyError(f"{key} is not a metric of task {task.name}")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


# --------------------------------------------------------------------------- sections


def data_note(task: TaskSpec, data: dict[str, Any], unavailable: dict[str, str]) -> str:
    """Rows used per split against GLUE's official sizes, and whether the run is reduced."""
    official = GLUE_ROWS.get(task.name, {})
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
        if spec.name not in official:
            text += "; official size not recorded in report.py"
        elif source < official[spec.name]:
            text += (
                f"; the source file holds {source:,} of GLUE's {official[spec.name]:,} rows: **reduced data**"
            )
            reduced = True
        elif rows + skipped < source:
            text += f"; first {rows:,} of {source:,} rows (data.max_*_rows): **reduced run**"
            reduced = True
        parts.append(text)
    if reduced:
        verdict = " Scores are **not comparable** with published numbers for this task."
    else:
        verdict = " Full official splits." if official else ""
    known = SOURCE_NOTES.get(data.get(f"{task.train_split.name}_source_sha256", ""))
    source_note = f" Source: {known}" if known else ""
    return f"- **{task.glue_dir}**: " + "; ".join(parts) + "." + verdict + source_note


def accuracy_section(results: Sequence[TaskResults]) -> list[str]:
    header = ["Model", "Evaluated on"] + [column_label(r.task, k) for r in results for k in r.metric_keys]

    def ours(name: str) -> list[str]:
        scores = [
            "not available" if k in r.unavailable else pct(r.metrics[name][k])
            for r in results
            for k in r.metric_keys
        ]
        return [OURS[name], "GLUE dev (ours)", *scores]

    def published(row: Published) -> list[str]:
        cells = [row.scores.get(r.task.name, {}).get(k, "—") for r in results for k in r.metric_keys]
        return [row.model, row.evaluated_on] + cells

    gain = ["Distilled − baseline (ours)", "points"] + [
        "—" if k in r.unavailable else f"{100 * (r.metrics[DISTILLED][k] - r.metrics[BASELINE][k]):+.2f}"
        for r in results
        for k in r.metric_keys
    ]
    why_missing = [
        f"{column_label(r.task, k)} not available: {reason}."
        for r in results
        for k, reason in r.unavailable.items()
    ]
    rows = [ours(TEACHER), ours(DISTILLED), ours(BASELINE), gain]
    rows += [published(p) for p in PAPER_TABLE1 if any(r.task.name in p.scores for r in results)]
    rows += [published(p) for p in PEERS if any(r.task.name in p.scores for r in results)]
    sources = sorted({p.source for p in (*PAPER_TABLE1, *PEERS)})
    return [
        "## 1. Accuracy (paper Table 1 shape)",
        "",
        "Accuracy and F1 in percent. Ours are on the GLUE **dev** sets; the paper's Table 1 is the GLUE",
        "**test** server, whose labels are hidden, so the re-implementations' dev scores are the closer",
        "comparison. Teachers differ: ours is the `teacher.model` checkpoint fine-tuned here (size below),",
        "the paper's is BERT-large.",
        "",
        *_table(header, rows),
        "",
        *[line for note in why_missing for line in (note, "")],
        "Published numbers: " + "; ".join(sources) + ".",
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
                    r.task.glue_dir,
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


# How the paper trained (METHOD.md §1.9, §0.8; constants of the literature like the tables above).
PAPER_SETTINGS = (
    "The paper: a BERT-large teacher (fine-tuning lr 2e-5 for SST-2 and QQP, 5e-5 for MNLI, 3 "
    "epochs); transfer sets from n_iter 20 (SST-2) and 10 (QQP, MNLI) on the full training sets; "
    "students trained with AdaDelta at batch 50 (SST-2) and 256 (pairs), epochs not stated "
    "(METHOD.md §1.9). The README says why ours differ where they do."
)


def settings_section(results: Sequence[TaskResults]) -> list[str]:
    """How each model was trained, from its own training record, beside the paper's settings."""
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
            rows.append([r.task.glue_dir, OURS[name], f"{s['train_rows']:,}", what])
    header = ["Task", "Model", "Training rows", "Settings"]
    return [
        "### Training settings",
        "",
        "As each model's training record holds them (the distilled student's rows are its",
        "transfer set: the originals and their augmented copies).",
        "",
        *_table(header, rows),
        "",
        PAPER_SETTINGS,
    ]


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
                    r.task.glue_dir,
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
                        r.task.glue_dir,
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
    table2 = _table(
        ["Model", "Params (M)", "Inference time (s)", "Params ratio", "Time ratio"],
        [list(row) for row in PAPER_TABLE2],
    )
    return lines + [
        "",
        "Speed-up = teacher time ÷ model time on the same device and rows. Ratios, not seconds, compare",
        "across hardware. The paper's Table 2 (SST-2, 67,350 sentences, batch 512, one V100; METHOD.md",
        "§2.2, what its clock covered is not stated):",
        "",
        *table2,
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
                    r.task.glue_dir,
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


def setup_section(results: Sequence[TaskResults]) -> list[str]:
    rows = []
    for r in results:
        env, protocol = r.speed["environment"], r.speed["protocol"]
        hardware = env["cpu_model"] + (f"; GPU {env['gpu_model']}" if "gpu_model" in env else "")
        rows.append(
            [
                r.task.glue_dir,
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
    ]


def render_markdown(results: Sequence[TaskResults]) -> str:
    """The whole report as Markdown: pure, so tests check it without touching disk."""
    lines = [
        "# Results: BERT → BiLSTM distillation (Tang et al. 2019)",
        "",
        "Generated by `dvc repro report` from `metrics/evaluate/`; do not edit by hand.",
        "",
        "## Data",
        "",
        "GLUE in the classic `glue_data/` layout (`data.glue_dir` or `$GLUE_DIR`). In the development",
        "workspace that is `../shared/glue`, whose `SOURCES.md` documents every file.",
        "",
        *[data_note(r.task, r.metrics["data"], r.metrics.get("unavailable", {})) for r in results],
        "",
        *accuracy_section(results),
        "",
        *selection_section(results),
        "",
        *settings_section(results),
        "",
        *size_section(results),
        *speed_section(results),
        *export_section(results),
        "",
        *setup_section(results),
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
            ax.set(title=r.task.glue_dir, xlabel=xlabel, ylabel=f"{column_label(r.task, key)}, dev (%)")
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
        loss_ax.set(title=f"{r.task.glue_dir}: training loss (own objective)", xlabel="epoch", ylabel="loss")
        dev_ax.set(title=f"{r.task.glue_dir}: dev", xlabel="epoch", ylabel=f"{column_label(r.task, key)} (%)")
        for ax in (loss_ax, dev_ax):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    written.append(_save(fig, out_dir / "training_curves.png"))
    return written


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
    tasks = [get_task(name) for name in load_params(params_path).tasks]
    with stage_run(log, "report", tasks=",".join(t.name for t in tasks)) as summary:
        results = [load_results(task) for task in tasks]
        with atomic_path(paths.REPORTS) as out:
            out.mkdir()
            (out / "results.md").write_text(render_markdown(results))
            figures = draw_figures(results, out / FIGURES)
            write_plot_data(results, out / PLOTS)
        summary["out"] = paths.REPORTS / "results.md"
        summary["figures"] = len(figures)
