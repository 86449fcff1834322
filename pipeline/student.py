"""`student` stage: train a BiLSTM student -> `models/student/<task>/<variant>/`.

Variants (METHOD.md §0.2, §0.7):
- distilled: the transfer set (original + synthetic rows of `data/augmented/<task>.parquet`)
  with the teacher's logits, loss `alpha * CE + (1 - alpha) * MSE`;
- baseline: the same architecture trained with CE only (alpha = 1) on the original training
  rows. It reads them as the `is_original` rows of the augmented corpus: exactly the
  canonical text (`pipeline.text.normalize` of the prepared train split) the distilled
  student and the teacher see, so the two variants differ only in the synthetic rows and
  the loss.

The vocabulary comes from the training rows only (never dev/test); the vectors' most frequent
other words back off to their frozen pretrained vectors (`student.backoff_words`, see
`pipeline.models.embeddings`). Each epoch is scored on
the task's first eval split with `pipeline.metrics`; the best epoch's weights are kept, and
one row per epoch goes to the training curve `metrics/curves/<task>-<variant>.csv`.
On the CPU a run is deterministic for a given seed: the student directory is byte-identical.
"""

from __future__ import annotations

import csv
import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from pipeline import paths
from pipeline.device import pick_device
from pipeline.errors import PipelineError
from pipeline.artifacts import atomic_path
from pipeline.io import (
    AUGMENTED_SCHEMA,
    SPLIT_SCHEMA,
    check_logits_match,
    file_sha256,
    logits_schema,
    load_task,
    read_table,
    write_json,
)
from pipeline.logs import get_logger, stage_run
from pipeline.metrics import compute_metrics, primary_metric
from pipeline.models import (
    TRAINING_FILE,
    StudentConfig,
    build_model,
    encode,
    predict_logits,
    save_student,
)
from pipeline.models.batching import batch_inputs, length_batches, sort_key
from pipeline.models.bilstm import count_parameters
from pipeline.models.embeddings import load_backoff, load_vectors, vectors_dim
from pipeline.models.vocab import Vocab
from pipeline.params import StudentParams, load_arm, load_settings
from pipeline.tasks import TaskSpec
from pipeline.text import normalize

log = get_logger("student")

CURVE_FILE = "curve.csv"  # an ablation student's training curve, beside its training.json

CeTarget = Literal["gold_for_originals", "teacher_argmax"]


# --------------------------------------------------------------------------- loss


def ce_targets(
    labels: np.ndarray, is_original: np.ndarray, teacher_logits: np.ndarray, policy: CeTarget
) -> np.ndarray:
    """Class ids the CE term aims at (METHOD.md §0.2).

    "gold_for_originals" (paper): the gold label for original rows, the teacher's argmax for
    synthetic rows, which have no label. "teacher_argmax" (official code): argmax everywhere.
    """
    argmax = teacher_logits.argmax(axis=1)
    if policy == "teacher_argmax":
        return argmax
    return np.where(is_original, labels, argmax)


def student_loss(
    logits: torch.Tensor, targets: torch.Tensor, teacher_logits: torch.Tensor | None, alpha: float
) -> torch.Tensor:
    """`alpha * CE + (1 - alpha) * MSE` (METHOD.md §0.2), averaged over the batch.

    MSE is the squared L2 distance between teacher and student logits summed over the K
    classes (the paper's ||z_B - z_S||^2, not torch's mean over classes), no temperature.
    Without teacher logits (the baseline) the loss is CE alone, which needs alpha = 1.
    """
    ce = F.cross_entropy(logits, targets)
    if teacher_logits is None:
        if alpha != 1.0:
            raise ValueError(f"alpha={alpha} needs teacher logits; without them only alpha = 1 works")
        return ce
    mse = (logits - teacher_logits).square().sum(dim=1).mean()
    return alpha * ce + (1.0 - alpha) * mse


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class LabelledTexts:
    """Canonical text columns and one class id per row (CE targets, or gold dev labels)."""

    text_a: pa.Array
    text_b: pa.Array | None
    labels: np.ndarray
    teacher_logits: np.ndarray | None = None  # float32 [rows, K], distilled training only

    def __len__(self) -> int:
        return len(self.text_a)

    @property
    def columns(self) -> list[pa.Array]:
        return [self.text_a] + ([self.text_b] if self.text_b is not None else [])


def _text_columns(table: pa.Table, task: TaskSpec) -> tuple[pa.Array, pa.Array | None]:
    text_b = table.column("text_b").combine_chunks() if task.is_pair else None
    return table.column("text_a").combine_chunks(), text_b


def join_logits(corpus: pa.Table, logits: pa.Table, task: TaskSpec, source: Path) -> np.ndarray:
    """Teacher logits [rows, K] float32 in corpus row order, joined on `idx`.

    `pipeline.io.check_logits_match` has already tied the file to this corpus (hash, task, row
    count); an `idx` without a logits row still fails here, before training.
    """
    corpus_idx = corpus.column("idx").to_numpy()
    logits_idx = logits.column("idx").to_numpy()
    order = np.argsort(logits_idx, kind="stable")
    position = np.minimum(np.searchsorted(logits_idx[order], corpus_idx), len(order) - 1)
    missing = logits_idx[order][position] != corpus_idx
    if missing.any():
        raise PipelineError(
            f"{source}: no logits for {missing.sum()} corpus rows (first idx "
            f"{corpus_idx[missing][0]}); rerun dvc repro label@{task.name}"
        )
    values = logits.column("logits").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return np.array(values, dtype=np.float32).reshape(-1, task.num_labels)[order[position]]


def distilled_set(
    corpus: pa.Table, teacher: np.ndarray, task: TaskSpec, policy: CeTarget
) -> LabelledTexts:
    """Every transfer-set row with its teacher logits and CE target."""
    labels = corpus.column("label").to_numpy()
    is_original = corpus.column("is_original").to_numpy()
    targets = ce_targets(labels, is_original, teacher, policy)
    if (targets < 0).any():
        raise PipelineError("the augmented corpus has original rows without a gold label (label -1)")
    return LabelledTexts(*_text_columns(corpus, task), targets, teacher)


def baseline_set(corpus: pa.Table, task: TaskSpec) -> LabelledTexts:
    """The original training rows with their gold labels."""
    originals = corpus.filter(corpus.column("is_original"))
    if originals.num_rows == 0:
        raise PipelineError("the augmented corpus has no original rows: rerun dvc repro augment")
    return LabelledTexts(*_text_columns(originals, task), originals.column("label").to_numpy().copy())


def eval_set(split: pa.Table, task: TaskSpec) -> LabelledTexts:
    """A prepared eval split in canonical text (`normalize`d as at teacher and label time)."""
    text_a, text_b = _text_columns(split, task)
    return LabelledTexts(
        pa.array([normalize(t) for t in text_a.to_pylist()], pa.string()),
        None if text_b is None else pa.array([normalize(t) for t in text_b.to_pylist()], pa.string()),
        split.column("label").to_numpy().copy(),
    )


# --------------------------------------------------------------------------- training


@dataclass
class TrainedStudent:
    config: StudentConfig
    vocab: Vocab
    model: nn.Module  # holding the best epoch's weights
    curve: list[dict[str, float]]  # one row per epoch
    best_epoch: int
    vectors_found: int  # vocabulary words with a pretrained vector
    token_coverage: float  # share of training tokens with a pretrained vector


def fit_student(
    task: TaskSpec,
    train: LabelledTexts,
    dev: LabelledTexts,
    params: StudentParams,
    alpha: float,
    epochs: int,
    device: torch.device,
) -> TrainedStudent:
    """Build the vocabulary, embeddings and model from `train`, train, keep the best dev epoch."""
    rng = np.random.default_rng(params.seed)
    torch.manual_seed(params.seed)
    trained_vocab, counts = Vocab.build(train.columns, params.mask_policy)
    vectors = load_vectors(params.vectors, trained_vocab.words, params.random_dim, rng)
    token_coverage = float(counts[vectors.found].sum() / max(counts.sum(), 1))
    backoff_words, backoff = load_backoff(params.vectors, set(trained_vocab.words), params.backoff_words)
    vocab = trained_vocab.with_backoff(backoff_words)
    log.info(
        "vocabulary %d words; %d (%.1f%%) in %s, covering %.1f%% of training tokens; "
        "%d more words back off to their pretrained vectors",
        len(trained_vocab),
        vectors.found.sum(),
        100 * vectors.found.mean(),
        params.vectors,
        100 * token_coverage,
        len(backoff_words),
    )
    config = StudentConfig(
        task=task.name,
        label_names=task.label_names,
        is_pair=task.is_pair,
        vocab_size=len(trained_vocab),
        embedding_dim=vectors.matrix.shape[1],
        hidden_size=params.hidden_size,
        fc_size=params.fc_size,
        dropout=params.dropout,
        mask_policy=params.mask_policy,
        backoff_size=len(backoff_words),
    )
    model = build_model(config)
    model.encoder.embedding.initialise(vectors.matrix, backoff)
    model.to(device)
    curve, best_epoch = train_epochs(
        model, task, train, dev, vocab, params, alpha, epochs, device, rng
    )
    found = int(vectors.found.sum())
    return TrainedStudent(config, vocab, model, curve, best_epoch, found, token_coverage)


def train_epochs(
    model: nn.Module,
    task: TaskSpec,
    train: LabelledTexts,
    dev: LabelledTexts,
    vocab: Vocab,
    params: StudentParams,
    alpha: float,
    epochs: int,
    device: torch.device,
    rng: np.random.Generator,
) -> tuple[list[dict[str, float]], int]:
    """AdaDelta epochs over length-bucketed batches; loads the best dev epoch's weights at the end."""
    sides = encode(vocab, train.text_a, train.text_b)
    dev_sides = encode(vocab, dev.text_a, dev.text_b)
    targets = torch.from_numpy(train.labels).to(device)
    teacher = None
    if train.teacher_logits is not None:
        teacher = torch.from_numpy(train.teacher_logits).to(device)
    optimizer = torch.optim.Adadelta(
        [p for p in model.parameters() if p.requires_grad], lr=params.lr, rho=params.rho
    )
    key = sort_key(sides)
    best_key = primary_metric(task)
    curve: list[dict[str, float]] = []
    best_score, best_epoch, best_state = -np.inf, 0, None
    for epoch in range(1, epochs + 1):
        model.train()
        started = time.perf_counter()
        total = torch.zeros((), device=device)
        desc = f"epoch {epoch}/{epochs}"
        with tqdm(total=len(train), desc=desc, unit="ex", unit_scale=True, mininterval=1.0) as bar:
            for rows in length_batches(key, params.batch_size, rng, params.sort_window):
                index = torch.from_numpy(rows).to(device)
                logits = model(*batch_inputs(sides, rows, device))
                loss = student_loss(
                    logits, targets[index], None if teacher is None else teacher[index], alpha
                )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.detach() * len(rows)
                bar.update(len(rows))
        seconds = time.perf_counter() - started
        predictions = predict_logits(model, dev_sides, params.batch_size, device).argmax(axis=1)
        metrics = compute_metrics(task, task.eval_splits[0], predictions, dev.labels)
        speed = len(train) / seconds
        loss_mean = total.item() / len(train)
        curve.append({"epoch": epoch, "train_loss": loss_mean, **metrics, "examples_per_s": speed})
        scores = " ".join(f"{k}={v:.4f}" for k, v in metrics.items())
        log.info("epoch %d/%d: train_loss=%.4f %s examples_per_s=%.0f",
                 epoch, epochs, loss_mean, scores, speed)
        if metrics[best_key] > best_score:
            best_score, best_epoch = metrics[best_key], epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    return curve, best_epoch


# --------------------------------------------------------------------------- stage


def write_curve(curve: list[dict[str, float]], path: Path) -> None:
    """The training curve as CSV (a DVC plot: x = epoch)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(curve[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(curve)
    with atomic_path(path) as tmp:
        tmp.write_text(out.getvalue())


def read_training_set(
    task: TaskSpec, variant: str, corpus_path: Path, logits_path: Path, originals_only: bool, policy: CeTarget
) -> tuple[LabelledTexts, dict[str, Any]]:
    """The rows a variant trains on, and what they were read from (for training.json).

    `originals_only`: a distilled student on the original rows alone with their teacher
    logits (the ablation's soft-targets-alone arm); the baseline reads only those anyway.
    """
    corpus = read_table(corpus_path, AUGMENTED_SCHEMA, task.name)
    inputs: dict[str, Any] = {"corpus": str(corpus_path), "corpus_sha256": file_sha256(corpus_path)}
    if variant == "baseline":
        return baseline_set(corpus, task), inputs
    check_logits_match(logits_path, corpus_path, task)
    logits = read_table(logits_path, logits_schema(task.num_labels))
    if originals_only:
        corpus = corpus.filter(corpus.column("is_original"))
    teacher = join_logits(corpus, logits, task, logits_path)
    inputs |= {"logits": str(logits_path), "logits_sha256": file_sha256(logits_path)}
    return distilled_set(corpus, teacher, task, policy), inputs


def schedule(variant: str, params: StudentParams) -> tuple[float, int]:
    """(alpha, epochs): the baseline is CE alone over the original rows' own epoch budget."""
    return (params.alpha, params.epochs) if variant == "distilled" else (1.0, params.baseline_epochs)


def training_record(
    task: TaskSpec, variant: str, train: LabelledTexts, trained: TrainedStudent, params: StudentParams,
    inputs: dict[str, Any],
) -> dict[str, Any]:
    """training.json: what was trained on what, and its best dev epoch."""
    alpha, epochs = schedule(variant, params)
    best = trained.curve[trained.best_epoch - 1]
    return {
        "task": task.name,
        "variant": variant,
        "alpha": alpha,
        "epochs": epochs,
        "train_rows": len(train),
        "dev_split": task.eval_splits[0].name,
        "best_epoch": trained.best_epoch,
        "best_dev": {k: v for k, v in best.items() if k.startswith("eval_")},
        "vocab_size": trained.config.vocab_size,
        "backoff_words": trained.config.backoff_size,
        "vectors_found": trained.vectors_found,
        "token_coverage": trained.token_coverage,
        "params_no_embeddings": count_parameters(trained.model, include_embeddings=False),
        "params_total": count_parameters(trained.model, include_embeddings=True),
        "params": params.model_dump(),
        "inputs": inputs,
    }


def save_trained(trained: TrainedStudent, training: dict[str, Any], out_dir: Path) -> None:
    save_student(out_dir, trained.config, trained.vocab, trained.model)
    write_json(training, out_dir / TRAINING_FILE)


def main(task_name: str, variant: str | None, params_path: Path, arm: str | None = None) -> None:
    """One of the DAG's students (`variant`), or the students of an ablation row (`arm`), one
    per seed of the ablation, each in its seed's directory with its curve beside it."""
    if (variant is None) == (arm is None):
        raise PipelineError("name either --variant (the DAG's students) or --arm (an ablation row), not both")
    if variant is not None and variant not in paths.STUDENT_VARIANTS:
        known = ", ".join(paths.STUDENT_VARIANTS)
        raise PipelineError(f"unknown student variant {variant!r}: use one of {known}")
    task = load_task(task_name)
    if arm is None:
        params = load_settings(StudentParams, task.name, params_path)
        seeds, originals_only, logits = [params.seed], False, "task"
        out_dir, stage = paths.student_dir(task.name, variant), f"student@{task.name}-{variant}"
    else:
        row = load_arm(task.name, arm, params_path)
        params, variant, seeds, originals_only, logits = row.student, row.variant, row.seeds, row.originals_only, row.logits
        out_dir, stage = paths.arm_students_dir(task.name, arm), paths.arm_student_stage(task.name, arm, row.logits)
    vectors_dim(params.vectors, params.random_dim)  # a bad vectors file fails before any work
    if logits == "task":
        corpus_path, logits_path = paths.augmented(task.name), paths.logits(task.name)
    else:
        corpus_path, logits_path = paths.arm_augmented(task.name, arm), paths.arm_logits(task.name, arm)
    train, inputs = read_training_set(task, variant, corpus_path, logits_path, originals_only, params.ce_target)
    dev_split = task.eval_splits[0]
    dev = eval_set(read_table(paths.prepared_split(task.name, dev_split.name), SPLIT_SCHEMA, task.name), task)
    device = pick_device()
    if params.threads is not None:
        torch.set_num_threads(params.threads)
    alpha, epochs = schedule(variant, params)
    with stage_run(log, stage, rows=len(train), dev_rows=len(dev), alpha=alpha, device=device,
                   **({} if arm is None else {"seeds": seeds})) as summary:
        if arm is None:
            trained = fit_student(task, train, dev, params, alpha, epochs, device)
            training = training_record(task, variant, train, trained, params, inputs)
            with atomic_path(out_dir) as tmp:
                save_trained(trained, training, tmp)
            write_curve(trained.curve, paths.curve_file(task.name, variant))
            summary.update(out=out_dir, best_epoch=trained.best_epoch, **training["best_dev"])
            return
        with atomic_path(out_dir) as tmp:
            tmp.mkdir()
            for seed in seeds:
                seeded = params.model_copy(update={"seed": seed})
                log.info("%s: seed %d of %s", stage, seed, seeds)
                trained = fit_student(task, train, dev, seeded, alpha, epochs, device)
                training = training_record(task, variant, train, trained, seeded, inputs) | {"arm": arm}
                seed_dir = tmp / paths.arm_student_dir(task.name, arm, seed).name
                save_trained(trained, training, seed_dir)
                write_curve(trained.curve, seed_dir / CURVE_FILE)
                summary[f"seed_{seed}"] = " ".join(f"{k}={v:.4f}" for k, v in training["best_dev"].items())
        summary["out"] = out_dir
