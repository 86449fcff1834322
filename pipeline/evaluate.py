"""`evaluate` stage: dev metrics, sizes and speed of the teacher and both students.

Three models, one protocol (METHOD.md §1.10, §4): each is scored on every labelled dev
split of the task with the shared GLUE metrics, its parameters are counted with and without
the embedding tables (the paper's 0.96 M excludes them, BERT's 335 M includes them), and it
is timed by `pipeline.speed` on the same training sentences, on the CPU always and on the
GPU when there is one. All models run in float32, the paper's setting.

Two outputs, so a noisy timing never invalidates an accuracy:
- `metrics/evaluate/<task>.json`: metrics, parameter counts and the data sizes behind them, plus each
  model's dev score per training epoch (from the teacher's `training.json` and the students'
  curves) so the report can show what keeping the best dev epoch adds over the last one;
  deterministic, so `dvc metrics diff` shows only real changes. An optional eval split the
  source lacked (MNLI dev_mismatched) gets no metric keys at all, only an `unavailable` entry
  with the reason: never a zero or a NaN.
- `metrics/evaluate/<task>_speed.json`: timings per device and model, plus the environment
  (CPU/GPU model, threads, versions) they were taken in.

Every text is put in the canonical form (`pipeline.text.normalize`) that teacher and
students were trained on, except for the exported students (`pipeline.serve`): they are
served raw text and tokenise it themselves, so their scores and end-to-end timings cover the
whole text -> label path. Each export is scored against its PyTorch student on the same dev
rows (the float32 export must not change a single prediction; int8 reports its delta) and
timed on the CPU with the same protocol, with the size of its model file on disk.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

import numpy as np
import pyarrow.parquet as pq
import torch
from torch import nn

from pipeline import paths
from pipeline.artifacts import damaged, reading, require_artifact
from pipeline.bert import load_teacher
from pipeline.device import pick_device
from pipeline.errors import PipelineError
from pipeline.io import SPLIT_SCHEMA, load_task, read_metadata, read_table, write_json
from pipeline.logs import get_logger, stage_run
from pipeline.metrics import compute_metrics
from pipeline.params import EvaluateParams, load_params
from pipeline.speed import TimedExport, Timeable, environment, measure_latency, measure_throughput
from pipeline.tasks import SplitSpec, TaskSpec
from pipeline.serve import ExportedStudent
from pipeline.text import normalize

log = get_logger("evaluate")

DTYPE = torch.float32
TEACHER = "teacher"
TEACHER_TRAINING_FILE = "training.json"  # written by the teacher stage beside its weights


class Classifier(Timeable, Protocol):
    """What evaluate needs from a model: predictions, sizes, and the speed harness's calls."""

    def to(self, device: torch.device) -> None:
        """Move the model to `device`; `encode` then places inputs there too."""

    def predict_logits(
        self, text_a: Sequence[str], text_b: Sequence[str] | None, batch_size: int
    ) -> np.ndarray:
        """float32 logits [n, K] for canonical text."""

    def num_parameters(self, include_embeddings: bool) -> int: ...


# --------------------------------------------------------------------------- the models


def predict_in_batches(
    model: Timeable, text_a: Sequence[str], text_b: Sequence[str] | None, batch_size: int
) -> np.ndarray:
    """float32 logits [n, K] through `encode` and `forward`, `batch_size` rows at a time."""
    out = []
    with torch.inference_mode():
        for i in range(0, len(text_a), batch_size):
            b = None if text_b is None else text_b[i : i + batch_size]
            logits = model.forward(model.encode(text_a[i : i + batch_size], b))
            out.append(logits.float().cpu().numpy())
    return np.concatenate(out)


class TeacherClassifier:
    """The fine-tuned BERT teacher: WordPiece per batch (padded to its longest row), then BERT.

    "Without embeddings" removes BERT's embeddings module (word, position and segment
    tables and their LayerNorm).
    """

    def __init__(self, model: nn.Module, tokenizer: Any, max_length: int):
        self.model = model.to(DTYPE).eval()
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.device = torch.device("cpu")

    @property
    def architecture(self) -> dict[str, int]:
        config = self.model.config
        return {"num_layers": config.num_hidden_layers, "hidden_size": config.hidden_size}

    def to(self, device: torch.device) -> None:
        self.model.to(device)
        self.device = device

    def encode(self, text_a: Sequence[str], text_b: Sequence[str] | None) -> Any:
        encoded = self.tokenizer(
            list(text_a),
            None if text_b is None else list(text_b),
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        return encoded.to(self.device)

    def forward(self, inputs: Any) -> torch.Tensor:
        return self.model(**inputs).logits

    def predict_logits(
        self, text_a: Sequence[str], text_b: Sequence[str] | None, batch_size: int
    ) -> np.ndarray:
        return predict_in_batches(self, text_a, text_b, batch_size)

    def num_parameters(self, include_embeddings: bool) -> int:
        total = sum(p.numel() for p in self.model.parameters())
        if include_embeddings:
            return total
        return total - sum(p.numel() for p in self.model.base_model.embeddings.parameters())


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class EvalSplit:
    """One labelled split in canonical text, and as prepared (raw) for the exports."""

    spec: SplitSpec
    text_a: list[str]
    text_b: list[str] | None
    labels: np.ndarray
    raw_a: list[str]
    raw_b: list[str] | None


def canonical_texts(task: TaskSpec, table: Any) -> tuple[list[str], list[str] | None]:
    """The split's text columns in the canonical form the models were trained on."""
    text_a = [normalize(t) for t in table.column("text_a").to_pylist()]
    text_b = [normalize(t) for t in table.column("text_b").to_pylist()] if task.is_pair else None
    return text_a, text_b


def raw_texts(task: TaskSpec, table: Any) -> tuple[list[str], list[str] | None]:
    """The split's text columns as prepare wrote them (what a served model is given)."""
    return table.column("text_a").to_pylist(), table.column("text_b").to_pylist() if task.is_pair else None


def load_eval_split(task: TaskSpec, spec: SplitSpec) -> EvalSplit:
    table = read_table(paths.prepared_split(task.name, spec.name), SPLIT_SCHEMA, task.name)
    text_a, text_b = canonical_texts(task, table)
    return EvalSplit(spec, text_a, text_b, table.column("label").to_numpy(), *raw_texts(task, table))


def split_sizes(task: TaskSpec, spec: SplitSpec) -> dict[str, int]:
    """Rows used, rows in the GLUE source file, rows skipped as malformed and the source
    file's sha256 (which copy of the data it was), for the report."""
    path = paths.prepared_split(task.name, spec.name)
    meta = read_metadata(path)
    if "source_rows" not in meta or "skipped_rows" not in meta:
        raise PipelineError(
            f"{path}: no source row counts in its metadata (rerun: dvc repro prepare@{task.name})"
        )
    return {
        f"{spec.name}_rows": pq.read_metadata(path).num_rows,
        f"{spec.name}_source_rows": meta["source_rows"],
        f"{spec.name}_source_sha256": meta.get("source_sha256", ""),
        f"{spec.name}_skipped_rows": meta["skipped_rows"],
    }


# --------------------------------------------------------------------------- core


def score(
    task: TaskSpec, model: Classifier, splits: Sequence[EvalSplit], batch_size: int
) -> dict[str, float]:
    """The task's GLUE metrics on every split (keys suffixed per split) and the parameter counts."""
    result: dict[str, float] = {}
    for split in splits:
        logits = model.predict_logits(split.text_a, split.text_b, batch_size)
        result.update(compute_metrics(task, split.spec, logits.argmax(axis=1), split.labels))
    result["params_total"] = model.num_parameters(include_embeddings=True)
    result["params_no_embeddings"] = model.num_parameters(include_embeddings=False)
    return result


def score_export(
    task: TaskSpec, export: ExportedStudent, splits: Sequence[EvalSplit], batch_size: int,
    student: Classifier,
) -> dict[str, Any]:
    """An export's GLUE metrics on raw text, how many predictions differ from its PyTorch
    student's on the same rows, and the size of its model file."""
    result: dict[str, Any] = {"predictions_differing": 0}
    for split in splits:
        predicted = export.predict_logits(split.raw_a, split.raw_b, batch_size).argmax(axis=1)
        reference = student.predict_logits(split.text_a, split.text_b, batch_size).argmax(axis=1)
        result.update(compute_metrics(task, split.spec, predicted, split.labels))
        result["predictions_differing"] += int((predicted != reference).sum())
    result["model_file"] = export.model_file.name
    result["model_file_bytes"] = export.model_file.stat().st_size
    return result


def time_model(
    model: Timeable, text_a: Sequence[str], text_b: Sequence[str] | None, params: EvaluateParams
) -> dict[str, float]:
    """Throughput over all rows at the Table 2 batch size, and batch-1 latency."""
    return {
        **measure_throughput(model, text_a, text_b, params.throughput_batch_size, params.warmup_batches),
        **measure_latency(model, text_a, text_b, params.latency_repeats, params.warmup_batches),
    }


def speed_devices() -> list[torch.device]:
    """The CPU always (where a student is meant to run), the GPU when present."""
    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    return devices


def measure_speed(
    models: dict[str, Classifier],
    text_a: Sequence[str],
    text_b: Sequence[str] | None,
    params: EvaluateParams,
    devices: Sequence[torch.device],
) -> dict[str, Any]:
    """Timings per device and model, plus the protocol and environment behind them.

    Models are timed one after the other on the same rows; each goes back to the CPU when
    done, so only one model occupies the GPU at a time.
    """
    result: dict[str, Any] = {}
    for device in devices:
        result[device.type] = {}
        for name, model in models.items():
            model.to(device)
            result[device.type][name] = time_model(model, text_a, text_b, params)
            model.to(torch.device("cpu"))
            log.info("timed %s on %s: %s", name, device.type, _brief(result[device.type][name]))
    result["protocol"] = {
        "rows": len(text_a),
        "batch_size": params.throughput_batch_size,
        "latency_repeats": params.latency_repeats,
        "warmup_batches": params.warmup_batches,
    }
    result["environment"] = environment(devices, DTYPE)
    return result


def _brief(timing: dict[str, float]) -> str:
    return (
        f"{timing['throughput_model_rows_per_s']:.0f} rows/s, "
        f"batch-1 median {timing['latency_model_ms_median']:.2f} ms"
    )


# --------------------------------------------------------------------------- command


def _check_inputs(task: TaskSpec) -> None:
    """Fail on a missing input before any model is loaded."""
    needed = [
        (paths.prepared_split(task.name, spec.name), f"prepare@{task.name}")
        for spec in (task.train_split, *paths.prepared_eval_splits(task))
    ]
    needed.append((paths.teacher_dir(task.name) / TEACHER_TRAINING_FILE, f"teacher@{task.name}"))
    needed += [(paths.export_dir(task.name, v), f"export@{task.name}-{v}") for v in paths.STUDENT_VARIANTS]
    for variant in paths.STUDENT_VARIANTS:
        stage = f"student@{task.name}-{variant}"
        needed += [(paths.student_dir(task.name, variant), stage), (paths.curve_file(task.name, variant), stage)]
    for path, stage in needed:
        require_artifact(path, {"": "directory", ".parquet": "Parquet", ".json": "JSON", ".csv": "CSV"}[path.suffix], stage)


def unavailable_splits(task: TaskSpec) -> dict[str, str]:
    """Optional eval splits prepare did not find, each with the reason the report prints."""
    present = paths.prepared_eval_splits(task)
    absent = [spec for spec in task.eval_splits if spec not in present]
    if not absent:
        return {}
    # Where prepare read the task's files: beside its train file (the source of record).
    source_dir = PurePosixPath(read_metadata(paths.prepared_split(task.name, "train"))["source_file"]).parent
    source = "the GLUE source" if task.builtin else "the source"
    return {spec.name: f"{source_dir}/{spec.file} was not in {source} prepare read" for spec in absent}


def training_history(task: TaskSpec, name: str) -> dict[str, Any]:
    """The epoch kept and every epoch's train loss and dev metrics of one model.

    Teacher and students keep their best dev epoch (the GLUE norm); the last epoch's score
    beside it shows how much that selection on dev adds. Timings are left out: this goes to
    the deterministic metrics file.
    """
    if name == TEACHER:
        path = paths.teacher_dir(task.name) / TEACHER_TRAINING_FILE
        with reading(path, "teacher training record"):
            training = json.loads(path.read_text(encoding="utf-8"))
            epochs = [{"epoch": e["epoch"], "train_loss": e["train_loss"], **e["metrics"]} for e in training["epochs"]]
            return {"best_epoch": training["best_epoch"], "epochs": epochs, "settings": teacher_settings(training)}
    from pipeline.models import TRAINING_FILE

    path, curve = paths.student_dir(task.name, name) / TRAINING_FILE, paths.curve_file(task.name, name)
    with reading(path, "student training record"):
        training = json.loads(path.read_text(encoding="utf-8"))
        settings = student_settings(name, training)
    with reading(curve, "training curve CSV"), curve.open(newline="", encoding="utf-8") as fh:
        epochs = [
            {"epoch": int(row["epoch"]), "train_loss": float(row["train_loss"]),
             **{k: float(v) for k, v in row.items() if k.startswith("eval_")}}
            for row in csv.DictReader(fh)
        ]
    return {"best_epoch": training["best_epoch"], "epochs": epochs, "settings": settings}


def teacher_settings(training: dict[str, Any]) -> dict[str, Any]:
    """What the report needs to say how the teacher was trained, from its own training record
    (not from params.yaml, which may have moved on since)."""
    params = training["params"]
    return {
        "model": training["checkpoint"]["name"],
        "lr": params["lr"],
        "epochs": params["epochs"],
        "batch_size": params["batch_size"],
        "precision": training["dtype"],
        "train_rows": training["train_rows"],
    }


def student_settings(variant: str, training: dict[str, Any]) -> dict[str, Any]:
    """A student's training settings as its training record holds them; the distilled one's
    rows are the transfer set, the baseline's the original training rows."""
    params = training["params"]
    distilled = variant == paths.STUDENT_VARIANTS[0]
    settings = {
        "batch_size": params["batch_size"],
        "epochs": params["epochs"] if distilled else params["baseline_epochs"],
        "hidden_size": params["hidden_size"],
        "train_rows": training["train_rows"],
    }
    return settings | ({"alpha": params["alpha"]} if distilled else {})


def load_models(task: TaskSpec, params: EvaluateParams) -> dict[str, Classifier]:
    """Teacher and both students on the CPU, in float32."""
    from pipeline.models import load_student

    model, tokenizer = load_teacher(paths.teacher_dir(task.name), task)
    models: dict[str, Classifier] = {TEACHER: TeacherClassifier(model, tokenizer, params.max_length)}
    for variant in paths.STUDENT_VARIANTS:
        student = load_student(paths.student_dir(task.name, variant), label_names=task.label_names)
        student.model.to(DTYPE)
        models[variant] = student
    return models


def load_exports(task: TaskSpec) -> dict[tuple[str, bool], ExportedStudent]:
    """(variant, int8) -> each exported student, float32 and (when exported) int8, on as
    many CPU threads as the PyTorch models use."""
    from pipeline.serve import INT8_FILE, load_export

    exports = {}
    for variant in paths.STUDENT_VARIANTS:
        directory = paths.export_dir(task.name, variant)
        exports[variant, False] = load_export(directory, threads=torch.get_num_threads())
        found = exports[variant, False]
        if (found.task, found.label_names) != (task.name, task.label_names):
            raise damaged(directory, f"an export of task {found.task} with classes {list(found.label_names)}, "
                          f"not of {task.name} with {list(task.label_names)}")
        if INT8_FILE in found.manifest["files"]:
            exports[variant, True] = load_export(directory, int8=True, threads=torch.get_num_threads())
    return exports


def main(task_name: str, params_path: Path) -> None:
    task = load_task(task_name)
    params = load_params(params_path).evaluate
    _check_inputs(task)
    if params.threads is not None:
        torch.set_num_threads(params.threads)
    device = pick_device()
    with stage_run(log, f"evaluate@{task.name}", device=device, threads=torch.get_num_threads()) as summary:
        eval_specs = paths.prepared_eval_splits(task)
        data = {
            key: value
            for spec in (task.train_split, *eval_specs)
            for key, value in split_sizes(task, spec).items()
        }
        splits = [load_eval_split(task, spec) for spec in eval_specs]
        train = read_table(paths.prepared_split(task.name, task.train_split.name), SPLIT_SCHEMA, task.name)
        if params.throughput_rows is not None:
            train = train.slice(0, params.throughput_rows)
        train_a, train_b = canonical_texts(task, train)
        models = load_models(task, params)

        metrics: dict[str, Any] = {}
        for name, model in models.items():
            model.to(device)
            metrics[name] = score(task, model, splits, params.throughput_batch_size)
            metrics[name].update(training_history(task, name))
            model.to(torch.device("cpu"))
            log.info("%s: %s", name, metrics[name])
        metrics[TEACHER].update(models[TEACHER].architecture)
        exports = load_exports(task)
        for (variant, int8), export in exports.items():
            name = paths.export_key(variant, int8)
            metrics[name] = score_export(task, export, splits, params.throughput_batch_size, models[variant])
            log.info("%s: %s", name, metrics[name])
        metrics["data"] = data
        if unavailable := unavailable_splits(task):
            metrics["unavailable"] = unavailable
            for split, reason in unavailable.items():
                log.info("%s: not scored (%s)", split, reason)
        speed = measure_speed(models, train_a, train_b, params, speed_devices())
        raw_a, raw_b = raw_texts(task, train)
        for (variant, int8), export in exports.items():  # CPU only: what an export is for
            name = paths.export_key(variant, int8)
            speed["cpu"][name] = time_model(TimedExport(export), raw_a, raw_b, params)
            log.info("timed %s on cpu: %s", name, _brief(speed["cpu"][name]))

        write_json(metrics, paths.metrics_file(task.name))
        write_json(speed, paths.speed_file(task.name))
        summary["out"] = f"{paths.metrics_file(task.name)},{paths.speed_file(task.name)}"
