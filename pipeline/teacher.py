"""`teacher` stage: fine-tune a BERT encoder on one GLUE task (METHOD.md §0.8, §1.2).

Reads `data/glue/<task>/` (train and the task's labelled eval splits) and writes
`models/teacher/<task>/` (an HF `save_pretrained` directory: weights, tokenizer, label names,
and `training.json` with the resolved params, the checkpoint and every epoch's dev metrics)
plus `metrics/teacher/<task>.json` (dev metrics of the kept and the last epoch, timings).

The teacher directory is byte-reproducible: the same data, params and thread count give the
same directory hash, so a recomputed teacher does not rerun label and everything after it.
So it holds nothing of the machine or the clock: the checkpoint is recorded by name and
version (not the path it resolved to), and wall times, device and threads go to the metrics
file, which no stage reads.

Choices a reader may want to check:
- Text goes through `pipeline.text.normalize` first, so the teacher is trained on exactly the
  canonical string the label stage feeds it and the student reads (METHOD.md §0.5).
- The checkpoint is checked from its config alone (BERT-style, segment ids, label count)
  before any data is encoded or weights are loaded.
- Batches are cut from groups of rows of similar length and padded only to their own longest
  row: SST-2 sentences are ~13 word pieces on average, so padding every batch to 128 spends
  most of the compute on padding (`benchmarks/bench_teacher.py` measures it).
- Under `torchrun --nproc_per_node N` every global batch of `batch_size` rows is split over
  the N processes and each scales its summed loss by N / rows, so the averaged gradient is the
  single-process one: steps and schedule do not depend on N, nor (dropout aside, up to float
  rounding) the weights. Rank 0 alone evaluates and writes.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from pipeline import paths
from pipeline.artifacts import atomic_path
from pipeline.bert import checkpoint_identity, quiet_transformers, teacher_config
from pipeline.device import autocast_dtype, pick_device
from pipeline.errors import PipelineError
from pipeline.io import SPLIT_SCHEMA, load_task, read_table, write_json
from pipeline.logs import get_logger, stage_run
from pipeline.metrics import compute_metrics, primary_metric
from pipeline.params import TeacherParams, load_settings
from pipeline.tasks import SplitSpec, TaskSpec
from pipeline.text import normalize

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

log = get_logger("teacher")

# --------------------------------------------------------------------------- checkpoint


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint that passed the checks; its config already carries the task's head."""

    name: str  # teacher.model as written in params.yaml
    source: str  # the local directory or hub id it resolved to
    config: PretrainedConfig

    @property
    def identity(self) -> dict[str, str | None]:
        return checkpoint_identity(self.name, getattr(self.config, "_commit_hash", None))


def check_checkpoint(name: str, task: TaskSpec) -> Checkpoint:
    """Resolve `name` and refuse, from its config alone, anything that cannot be this teacher
    (`bert.teacher_config`, which configure runs too, and a classifier of other classes)."""
    source, config = teacher_config(name)
    is_classifier = any(a.endswith("ForSequenceClassification") for a in config.architectures or [])
    if is_classifier and config.num_labels != task.num_labels:
        raise PipelineError(
            f"teacher.model={name}: checkpoint is a {config.num_labels}-class classifier but task "
            f"{task.name} has {task.num_labels} classes; start from an encoder or a "
            f"{task.num_labels}-class checkpoint"
        )
    config.id2label = dict(enumerate(task.label_names))
    config.label2id = {label: i for i, label in enumerate(task.label_names)}
    config.problem_type = "single_label_classification"
    return Checkpoint(name=name, source=source, config=config)


def load_checkpoint(checkpoint: Checkpoint) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """(fp32 sequence classifier, tokenizer); an encoder-only checkpoint gets a new head,
    initialised from torch's global RNG (seed it first)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    quiet_transformers()
    model, loading = AutoModelForSequenceClassification.from_pretrained(
        checkpoint.source, config=checkpoint.config, dtype=torch.float32, output_loading_info=True
    )
    if missing := sorted(loading["missing_keys"]):
        what = "new classification head" if all(key.startswith("classifier.") for key in missing) else "new weights"
        log.info(
            "%s for %d labels, initialised from teacher.seed: %s",
            what, checkpoint.config.num_labels, ", ".join(missing),
        )
    tokenizer = AutoTokenizer.from_pretrained(checkpoint.source)
    return model, tokenizer


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Encoded:
    """One split as unpadded word-piece ids with segment ids, lengths and gold labels."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]]
    lengths: np.ndarray  # int64 [n]
    labels: np.ndarray  # int64 [n]
    pad_id: int

    def __len__(self) -> int:
        return len(self.input_ids)

    def batch(self, rows: np.ndarray, pad_to: int | None = None) -> dict[str, torch.Tensor]:
        """Model inputs for `rows`, padded to their longest row (or to `pad_to`)."""
        width = pad_to or int(self.lengths[rows].max())
        ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        types = np.zeros((len(rows), width), dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, row in enumerate(rows):
            n = self.lengths[row]
            ids[i, :n] = self.input_ids[row]
            types[i, :n] = self.token_type_ids[row]
            mask[i, :n] = 1
        return {
            "input_ids": torch.from_numpy(ids),
            "token_type_ids": torch.from_numpy(types),
            "attention_mask": torch.from_numpy(mask),
        }


def encode(
    tokenizer: PreTrainedTokenizerBase, task: TaskSpec, table: pa.Table, max_length: int
) -> Encoded:
    """Canonical text -> `[CLS] a [SEP]` or `[CLS] a [SEP] b [SEP]` (segment ids 0 then 1),
    longest-first truncation to `max_length` word pieces."""
    text_a = [normalize(t) for t in table.column("text_a").to_pylist()]
    text_b = [normalize(t) for t in table.column("text_b").to_pylist()] if task.is_pair else None
    enc = tokenizer(
        text_a,
        text_b,
        truncation="longest_first",
        max_length=max_length,
        return_attention_mask=False,
        return_token_type_ids=True,
    )
    return Encoded(
        input_ids=enc["input_ids"],
        token_type_ids=enc["token_type_ids"],
        lengths=np.array([len(ids) for ids in enc["input_ids"]], dtype=np.int64),
        labels=table.column("label").to_numpy().astype(np.int64),
        pad_id=tokenizer.pad_token_id,
    )


def length_grouped_batches(
    lengths: np.ndarray, batch_size: int, group_batches: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Shuffled batches of rows of similar length.

    Rows are shuffled, cut into groups of `group_batches` batches, sorted by length within a
    group and cut into batches; the batches are then shuffled. Groups keep the data order
    random while padding stays small. The batch holding the longest row goes first, so a batch
    that does not fit in memory fails at the first step rather than hours in.
    """
    order = rng.permutation(len(lengths))
    group = batch_size * group_batches
    batches: list[np.ndarray] = []
    for start in range(0, len(order), group):
        chunk = order[start : start + group]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    batches = [batches[i] for i in rng.permutation(len(batches))]
    longest = max(range(len(batches)), key=lambda i: lengths[batches[i][0]])
    batches.insert(0, batches.pop(longest))
    return batches


def epoch_batches(
    lengths: np.ndarray, params: TeacherParams, epoch: int, world_size: int
) -> list[np.ndarray]:
    """This epoch's global batches, the same on every rank. A last batch smaller than the
    number of processes (at most world_size - 1 rows) is dropped: every rank needs a row."""
    rng = np.random.default_rng([params.seed, epoch])
    batches = length_grouped_batches(lengths, params.batch_size, params.length_group_batches, rng)
    return [b for b in batches if len(b) >= world_size]


# --------------------------------------------------------------------------- optimisation


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on weight matrices and embeddings, none on biases and
    LayerNorm parameters (BERT's recipe)."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    seen: set[int] = set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            exempt = name == "bias" or isinstance(module, nn.LayerNorm)
            (no_decay if exempt else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def make_optimizer(
    model: nn.Module, params: TeacherParams, total_steps: int
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW with linear warmup over `warmup_ratio` of the steps, then linear decay to 0.

    The fused implementation (CPU and GPU) updates MiniLM's 22.7 M parameters ~9x faster than
    the default on a 2-core CPU, where the update is a large part of a short-sequence step.
    """
    from transformers import get_linear_schedule_with_warmup

    groups = parameter_groups(model, params.weight_decay)
    optimizer = torch.optim.AdamW(groups, lr=params.lr, fused=True)
    warmup = math.ceil(params.warmup_ratio * total_steps)
    return optimizer, get_linear_schedule_with_warmup(optimizer, warmup, total_steps)


@dataclass(frozen=True)
class Ranks:
    """Where this process sits in a `torchrun` job (a single process by default)."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> tuple[Ranks, torch.device]:
    """Join the process group torchrun describes in the environment (nccl on GPUs, gloo on
    CPUs); without torchrun, a single process on `device`."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Ranks(), device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Ranks(dist.get_rank(), dist.get_world_size()), device


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup v2 quota (containers)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
    except (OSError, ValueError):
        return cpus
    return cpus if quota == "max" else max(1, min(cpus, int(quota) // int(period)))


def set_cpu_threads() -> int:
    """Cap torch's threads at this process's share of the usable CPUs (torch counts the host's
    cores, not a container's quota, and every local rank would take them all); an explicit
    OMP_NUM_THREADS wins. Returns the thread count."""
    if "OMP_NUM_THREADS" not in os.environ:
        share = max(1, available_cpus() // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        torch.set_num_threads(min(torch.get_num_threads(), share))
    return torch.get_num_threads()


@dataclass
class Trainer:
    """One optimiser step per global batch: split over ranks, accumulated over micro-batches."""

    model: nn.Module  # a DistributedDataParallel wrapper under torchrun
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    device: torch.device
    dtype: torch.dtype | None  # autocast dtype; None: fp32
    max_grad_norm: float
    micro_batch_size: int | None = None
    ranks: Ranks = Ranks()
    scaler: torch.amp.GradScaler = field(init=False)

    def __post_init__(self) -> None:
        # Loss scaling is only needed for fp16; bf16 and fp32 pass through unchanged.
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)

    def step(self, data: Encoded, batch: np.ndarray, pad_to: int | None = None) -> tuple[float, int]:
        """Train on one global batch; returns this rank's summed loss and row count."""
        rows = np.array_split(batch, self.ranks.world_size)[self.ranks.rank]
        scale = self.ranks.world_size / len(batch)  # DDP averages over ranks: mean over the batch
        size = self.micro_batch_size or len(rows)
        pieces = [rows[i : i + size] for i in range(0, len(rows), size)]
        total = torch.zeros((), device=self.device)
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            sync = last or not isinstance(self.model, DistributedDataParallel)
            with nullcontext() if sync else self.model.no_sync():
                inputs = {k: v.to(self.device) for k, v in data.batch(piece, pad_to).items()}
                labels = torch.from_numpy(data.labels[piece]).to(self.device)
                with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
                    logits = self.model(**inputs).logits
                loss = F.cross_entropy(logits.float(), labels, reduction="sum")
                self.scaler.scale(loss * scale).backward()
            total += loss.detach()
        self.scaler.unscale_(self.optimizer)
        nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(total), len(rows)


# --------------------------------------------------------------------------- evaluation


@torch.inference_mode()
def predict_logits(
    model: nn.Module, data: Encoded, batch_size: int, device: torch.device, dtype: torch.dtype | None
) -> np.ndarray:
    """Logits [n, K] in row order, computed over length-sorted batches."""
    model.eval()
    order = np.argsort(-data.lengths, kind="stable")
    out = np.empty((len(data), model.config.num_labels), dtype=np.float32)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        inputs = {k: v.to(device) for k, v in data.batch(rows).items()}
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            out[rows] = model(**inputs).logits.float().cpu().numpy()
    return out


def evaluate(
    model: nn.Module,
    task: TaskSpec,
    evals: Sequence[tuple[SplitSpec, Encoded]],
    batch_size: int,
    device: torch.device,
    dtype: torch.dtype | None,
) -> dict[str, float]:
    """The task's metrics on every eval split, keyed as `pipeline.metrics` names them."""
    metrics: dict[str, float] = {}
    for split, data in evals:
        predictions = predict_logits(model, data, batch_size, device, dtype).argmax(axis=1)
        metrics.update(compute_metrics(task, split, predictions, data.labels))
    return metrics


# --------------------------------------------------------------------------- training


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    train_loss: float  # mean cross-entropy over the epoch's rows, all ranks
    train_rows: int
    train_seconds: float  # training only, evaluation excluded
    metrics: dict[str, float]


@dataclass
class FineTuneResult:
    epochs: list[EpochRecord]
    best_epoch: int  # by `primary_metric(task)`; the earliest on ties
    best_state: dict[str, torch.Tensor] | None  # CPU copy of the best epoch's weights; rank 0 only

    @property
    def train_examples_per_s(self) -> float:
        return sum(r.train_rows for r in self.epochs) / sum(r.train_seconds for r in self.epochs)


def fine_tune(
    model: nn.Module,
    train: Encoded,
    evals: Sequence[tuple[SplitSpec, Encoded]],
    task: TaskSpec,
    params: TeacherParams,
    device: torch.device,
    dtype: torch.dtype | None = None,
    ranks: Ranks = Ranks(),
) -> FineTuneResult:
    """Full fine-tuning with dev evaluation after every epoch (METHOD.md §0.8).

    Pure apart from training `model` in place (left at its last epoch's weights). Seeded by
    `params.seed`: the same inputs give the same weights on the same CPU setup. Under a
    process group every rank must call it; rank 0 evaluates and shares the metrics.
    """
    torch.manual_seed(params.seed)
    model.to(device).train()
    net = model
    if ranks.world_size > 1:
        device_ids = [device.index] if device.type == "cuda" else None
        net = DistributedDataParallel(model, device_ids=device_ids)
    steps_per_epoch = len(epoch_batches(train.lengths, params, 1, ranks.world_size))
    optimizer, scheduler = make_optimizer(model, params, steps_per_epoch * params.epochs)
    trainer = Trainer(
        net, optimizer, scheduler, device, dtype, params.max_grad_norm, params.micro_batch_size, ranks
    )
    eval_batch_size = params.micro_batch_size or params.batch_size
    key = primary_metric(task)
    records: list[EpochRecord] = []
    best_epoch, best_state = 0, None
    for epoch in range(1, params.epochs + 1):
        batches = epoch_batches(train.lengths, params, epoch, ranks.world_size)
        desc = f"teacher@{task.name} epoch {epoch}/{params.epochs}"
        started = time.perf_counter()
        loss_sum, rows = _sum_over_ranks(*_train_epoch(trainer, train, batches, desc), device, ranks)
        seconds = time.perf_counter() - started
        metrics = evaluate(model, task, evals, eval_batch_size, device, dtype) if ranks.is_main else {}
        model.train()
        if ranks.world_size > 1:
            shared = [metrics]
            dist.broadcast_object_list(shared, src=0)
            metrics = shared[0]
        records.append(EpochRecord(epoch, loss_sum / rows, rows, seconds, metrics))
        if ranks.is_main:
            scores = " ".join(f"{k}={v:.4f}" for k, v in metrics.items())
            log.info("%s: train_loss=%.4f %s %.1f ex/s", desc, loss_sum / rows, scores, rows / seconds)
        if all(metrics[key] > r.metrics[key] for r in records[:-1]):
            best_epoch = epoch
            if ranks.is_main:
                best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    return FineTuneResult(records, best_epoch, best_state)


def _train_epoch(
    trainer: Trainer, train: Encoded, batches: list[np.ndarray], desc: str
) -> tuple[float, int]:
    """One pass over `batches` behind a progress bar; this rank's summed loss and rows."""
    loss_sum, rows = 0.0, 0
    with tqdm(
        total=sum(len(b) for b in batches),
        unit="ex",
        desc=desc,
        disable=not trainer.ranks.is_main,
        dynamic_ncols=True,
    ) as bar:
        for batch in batches:
            try:
                step_loss, step_rows = trainer.step(train, batch)
            except torch.OutOfMemoryError:
                pieces = trainer.micro_batch_size or len(batch)
                raise PipelineError(
                    f"out of GPU memory on a batch of {len(batch)} rows x "
                    f"{train.lengths[batch].max()} word pieces; set teacher.micro_batch_size "
                    f"below {pieces} to accumulate gradients over smaller pieces"
                ) from None
            loss_sum, rows = loss_sum + step_loss, rows + step_rows
            bar.update(len(batch))
            bar.set_postfix(loss=f"{loss_sum / rows:.4f}", refresh=False)
    return loss_sum, rows


def _sum_over_ranks(
    loss_sum: float, rows: int, device: torch.device, ranks: Ranks
) -> tuple[float, int]:
    if ranks.world_size == 1:
        return loss_sum, rows
    totals = torch.tensor([loss_sum, float(rows)], dtype=torch.float64, device=device)
    dist.all_reduce(totals)
    return float(totals[0]), int(totals[1])


# --------------------------------------------------------------------------- stage


def save_teacher(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    directory: Path,
    training: dict[str, Any],
) -> None:
    """A self-contained HF directory: weights, config with label names, tokenizer, provenance."""
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    write_json(training, directory / "training.json")


def main(task_name: str, params_path: Path) -> None:
    """`python -m pipeline teacher --task T` (also under `torchrun --nproc_per_node N`)."""
    task = load_task(task_name)
    params = load_settings(TeacherParams, task.name, params_path)
    checkpoint = check_checkpoint(params.model, task)
    train_table = read_table(paths.prepared_split(task.name, "train"), SPLIT_SCHEMA, task.name)
    eval_tables = [
        (split, read_table(paths.prepared_split(task.name, split.name), SPLIT_SCHEMA, task.name))
        for split in paths.prepared_eval_splits(task)
    ]
    device = pick_device()
    dtype = autocast_dtype(params.precision, device)
    threads = set_cpu_threads()
    ranks, device = init_distributed(device)
    try:
        _run(task, params, checkpoint, train_table, eval_tables, device, dtype, ranks, threads)
    finally:
        if ranks.world_size > 1:
            dist.destroy_process_group()


def _run(
    task: TaskSpec,
    params: TeacherParams,
    checkpoint: Checkpoint,
    train_table: pa.Table,
    eval_tables: list[tuple[SplitSpec, pa.Table]],
    device: torch.device,
    dtype: torch.dtype | None,
    ranks: Ranks,
    threads: int,
) -> None:
    started = time.perf_counter()
    inputs = dict(
        model=checkpoint.name,
        source=checkpoint.source,
        train_rows=train_table.num_rows,
        device=device,
        dtype=dtype or "fp32",
        threads=threads,
        world_size=ranks.world_size,
    )
    logged = stage_run(log, f"teacher@{task.name}", **inputs) if ranks.is_main else nullcontext({})
    with logged as summary:
        torch.manual_seed(params.seed)
        model, tokenizer = load_checkpoint(checkpoint)
        train = encode(tokenizer, task, train_table, params.max_length)
        evals = [
            (split, encode(tokenizer, task, table, params.max_length)) for split, table in eval_tables
        ]
        result = fine_tune(model, train, evals, task, params, device, dtype, ranks)
        if not ranks.is_main:
            return
        model.load_state_dict(result.best_state)
        best, last = result.epochs[result.best_epoch - 1], result.epochs[-1]
        training = {
            "task": task.name,
            "checkpoint": checkpoint.identity,
            "params": params.model_dump(),
            "train_rows": len(train),
            "eval_rows": {split.name: len(data) for split, data in evals},
            "dtype": str(dtype or "fp32"),
            "epochs": [
                {k: v for k, v in asdict(r).items() if k != "train_seconds"} for r in result.epochs
            ],
            "primary_metric": primary_metric(task),
            "best_epoch": result.best_epoch,
        }
        with atomic_path(paths.teacher_dir(task.name)) as tmp:
            save_teacher(model, tokenizer, tmp, training)
        run_facts = {
            **best.metrics,
            "epoch": result.best_epoch,
            "last_epoch": {**last.metrics, "epoch": last.epoch},
            "train_seconds_by_epoch": [round(r.train_seconds, 1) for r in result.epochs],
            "train_examples_per_s": round(result.train_examples_per_s, 1),
            "wall_s": round(time.perf_counter() - started, 1),
            "device": str(device),
            "threads": threads,
            "world_size": ranks.world_size,
        }
        write_json(run_facts, paths.teacher_metrics(task.name))
        key = primary_metric(task)
        summary[f"{key}_by_epoch"] = ",".join(f"{r.metrics[key]:.4f}" for r in result.epochs)
        summary["best_epoch"] = result.best_epoch
        summary["train_examples_per_s"] = f"{result.train_examples_per_s:.1f}"
        summary["out"] = paths.teacher_dir(task.name)
