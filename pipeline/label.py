"""`label` stage: teacher logits for the transfer set -> `data/logits/<task>.parquet` (METHOD.md §1.6).

How rows flow, and why:

1. Every row's word-piece count is taken up front, with the fast tokenizer's batch call one
   block at a time (the texts stay in Arrow); batching needs every length before any compute.
   The ids themselves are made chunk by chunk, when a chunk is computed (step 3), so the
   ids alive at once are a chunk's (`label.chunk_rows`); what the stage holds per corpus
   row is its text in Arrow and a few integers (benchmarks/results/scale.md).
2. Rows are sorted by length (longest first, ties in corpus order) and cut into batches that
   fill a token budget: `label.batch_tokens` = rows x padded length, each batch padded only
   to its own longest row. SST-2 training sentences average 13 word pieces with [CLS] and
   [SEP] (n-gram samples are shorter), so this does a fraction of the work of fixed
   128-token padding. The plan depends only on the corpus, the tokenizer and the params,
   never on the number of processes: every row is computed in exactly the same batch
   whatever the world size, so fp32 output is bitwise equal under `torchrun
   --nproc_per_node N` and in a single process. (On CPU, float results also depend on the
   intra-op thread count, through GEMM blocking: compare runs with equal threads per
   process; torchrun gives each rank OMP_NUM_THREADS=1.)
3. Consecutive batches form chunks of about `label.chunk_rows` rows. Under torchrun, batch i
   goes to rank i % world; rank 0 gathers each finished chunk and saves it under
   `scratch/label/<task>/<fingerprint>/`. The fingerprint hashes teacher, corpus, params and
   the resolved device/dtype, so an interrupted run resumes from its last finished chunk and
   a stale scratch is never reused. The scratch lies outside the DVC output (and is git- and
   dvc-ignored), so the output itself stays run-cacheable.
4. Rank 0 assembles the chunks, restores `idx` order, writes the Parquet atomically and
   removes the scratch.

On GPU: SDPA attention, bf16/fp16 autocast with float32 logits out, pinned host batches
copied with `non_blocking`, and a background thread padding the next batches while the GPU
runs the current one. Consumers check a logits file against their corpus with
`pipeline.io.check_logits_match`.

Multi-GPU: `torchrun --nproc_per_node 8 -m pipeline label --task sst2`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import pyarrow as pa
import torch
import torch.distributed as dist
from tqdm import tqdm

from pipeline import paths
from pipeline.bert import load_teacher
from pipeline.device import autocast_dtype, pick_device
from pipeline.errors import PipelineError
from pipeline.artifacts import atomic_path, damaged, reading
from pipeline.io import (
    AUGMENTED_SCHEMA,
    dir_sha256,
    file_sha256,
    logits_schema,
    load_task,
    read_table,
    write_json,
    write_table,
)
from pipeline.logs import get_logger, stage_run
from pipeline.params import LabelParams, load_params
from pipeline.tasks import TaskSpec

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = get_logger("label")

ENCODE_BLOCK_ROWS = 16384  # rows per tokenizer call: bounds the Python lists alive at once
PREFETCH_BATCHES = 4  # padded batches the background thread keeps ready

T = TypeVar("T")
U = TypeVar("U")


# --------------------------------------------------------------------------- tokens and plan


@dataclass(frozen=True)
class Encoded:
    """Word-piece ids of all rows, flat: row i is `ids[offsets[i]:offsets[i + 1]]`.

    Flat numpy arrays keep a million-row corpus in tens of MB; per-row Python lists of ints
    would take several times more.
    """

    ids: np.ndarray  # int32
    type_ids: np.ndarray  # int8 segment ids (0 for the first sentence, 1 for the second)
    offsets: np.ndarray  # int64, rows + 1
    pad_id: int

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1


def _tokenized_blocks(
    tokenizer: PreTrainedTokenizerBase,
    text_a: Sequence[str] | pa.Array,
    text_b: Sequence[str] | pa.Array | None,
    max_length: int,
    type_ids: bool,
) -> Iterator[Any]:
    """The tokenizer's output for consecutive blocks of rows ([CLS] a [SEP] (b [SEP]),
    truncated to `max_length`). Arrow columns become Python strings one block at a time: a
    4 M-row corpus held as Python lists would take gigabytes before the first batch."""
    for start in range(0, len(text_a), ENCODE_BLOCK_ROWS):
        stop = start + ENCODE_BLOCK_ROWS
        yield tokenizer(
            _block(text_a, start, stop),
            _block(text_b, start, stop) if text_b is not None else None,
            truncation=True,
            max_length=max_length,
            return_attention_mask=False,
            return_token_type_ids=type_ids,
        )


def token_lengths(
    tokenizer: PreTrainedTokenizerBase,
    text_a: Sequence[str] | pa.Array,
    text_b: Sequence[str] | pa.Array | None,
    max_length: int,
) -> np.ndarray:
    """Every row's word-piece count (what batching needs up front), keeping nothing else."""
    lengths = [
        np.fromiter(map(len, enc["input_ids"]), dtype=np.int64, count=len(enc["input_ids"]))
        for enc in _tokenized_blocks(tokenizer, text_a, text_b, max_length, type_ids=False)
    ]
    return np.concatenate(lengths) if lengths else np.zeros(0, np.int64)


def encode(
    tokenizer: PreTrainedTokenizerBase,
    text_a: Sequence[str] | pa.Array,
    text_b: Sequence[str] | pa.Array | None,
    max_length: int,
) -> Encoded:
    """Tokenise rows into flat arrays ([CLS] a [SEP] (b [SEP]), truncated to `max_length`)."""
    ids: list[np.ndarray] = []
    type_ids: list[np.ndarray] = []
    lengths: list[np.ndarray] = []
    for enc in _tokenized_blocks(tokenizer, text_a, text_b, max_length, type_ids=True):
        rows = enc["input_ids"]
        lengths.append(np.fromiter(map(len, rows), dtype=np.int64, count=len(rows)))
        ids.append(np.fromiter(chain.from_iterable(rows), dtype=np.int32))
        type_ids.append(np.fromiter(chain.from_iterable(enc["token_type_ids"]), dtype=np.int8))
    offsets = np.zeros(len(text_a) + 1, dtype=np.int64)
    if lengths:
        np.cumsum(np.concatenate(lengths), out=offsets[1:])
    return Encoded(
        ids=np.concatenate(ids) if ids else np.zeros(0, np.int32),
        type_ids=np.concatenate(type_ids) if type_ids else np.zeros(0, np.int8),
        offsets=offsets,
        pad_id=tokenizer.pad_token_id,
    )


def _block(texts: Sequence[str] | pa.Array, start: int, stop: int) -> list[str]:
    if isinstance(texts, pa.Array):
        return texts.slice(start, stop - start).to_pylist()
    return list(texts[start:stop])


def plan_batches(lengths: np.ndarray, batch_tokens: int) -> list[np.ndarray]:
    """Row positions of each batch: longest rows first, as many per batch as fit the budget.

    A batch's padded size is its first (longest) row's length times its row count, kept
    within `batch_tokens` (a row longer than the budget forms a batch of its own). Longest
    first also means an out-of-memory budget fails in the first batch, not at the end.
    """
    order = np.argsort(-lengths, kind="stable")
    batches = []
    start = 0
    while start < len(order):
        size = max(1, batch_tokens // int(lengths[order[start]]))
        batches.append(order[start : start + size])
        start += size
    return batches


def plan_chunks(batch_rows: Sequence[int], chunk_rows: int) -> list[range]:
    """Group consecutive batches into resumable chunks of at least `chunk_rows` rows (last: fewer)."""
    chunks = []
    start = rows = 0
    for i, n in enumerate(batch_rows):
        rows += n
        if rows >= chunk_rows:
            chunks.append(range(start, i + 1))
            start, rows = i + 1, 0
    if start < len(batch_rows):
        chunks.append(range(start, len(batch_rows)))
    return chunks


# --------------------------------------------------------------------------- inference


def collate(encoded: Encoded, rows: np.ndarray, pin: bool) -> dict[str, torch.Tensor]:
    """Model inputs for `rows`, padded to their longest row (vectorised gather, no Python loop)."""
    starts = encoded.offsets[rows]
    lengths = encoded.offsets[rows + 1] - starts
    columns = np.arange(int(lengths.max()))
    real = columns[None, :] < lengths[:, None]
    where = np.where(real, starts[:, None] + columns[None, :], 0)
    arrays = {
        "input_ids": np.where(real, encoded.ids[where], encoded.pad_id),
        "token_type_ids": np.where(real, encoded.type_ids[where], 0),
        "attention_mask": real,
    }
    batch = {k: torch.from_numpy(v.astype(np.int64)) for k, v in arrays.items()}
    return {k: v.pin_memory() for k, v in batch.items()} if pin else batch


def prefetched(produce: Callable[[T], U], items: Sequence[T], depth: int) -> Iterator[U]:
    """`produce(item)` for each item in order, computed by a background thread up to `depth` ahead."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="label-collate")
    try:
        pending = deque(pool.submit(produce, item) for item in items[:depth])
        for item in items[depth:]:
            ready = pending.popleft().result()
            pending.append(pool.submit(produce, item))
            yield ready
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(cancel_futures=True)


def infer(
    model: torch.nn.Module,
    encoded: Encoded,
    batches: Sequence[np.ndarray],
    device: torch.device,
    dtype: torch.dtype | None,
    on_batch: Callable[[int, int], None] | None = None,
) -> list[np.ndarray]:
    """Float32 logits of each batch (rows in the batch's order); `model` is already on `device`.

    `on_batch(rows, real_tokens)` reports progress. Results stay on the device until the
    end, so a GPU never waits for a host sync between batches.
    """
    pin = device.type == "cuda"
    outputs = []
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        for host in prefetched(lambda rows: collate(encoded, rows, pin), batches, PREFETCH_BATCHES):
            inputs = {k: v.to(device, non_blocking=True) for k, v in host.items()}
            outputs.append(model(**inputs).logits.float())
            if on_batch is not None:
                mask = host["attention_mask"]
                on_batch(len(mask), int(mask.sum()))
    return [out.cpu().numpy() for out in outputs]


def prepare_model(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Eval mode, SDPA attention kernels, on `device`."""
    model.set_attn_implementation("sdpa")
    return model.eval().to(device)


def label_texts(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    text_a: Sequence[str],
    text_b: Sequence[str] | None,
    params: LabelParams,
    device: torch.device,
) -> np.ndarray:
    """Teacher logits [rows, K] float32 in the order of the input texts; one process, no scratch.

    The stage's computation without its I/O, chunks and processes: what the benchmark times.
    """
    encoded = encode(tokenizer, text_a, text_b, params.max_length)
    batches = plan_batches(encoded.lengths, params.batch_tokens)
    model = prepare_model(model, device)
    logits = infer(model, encoded, batches, device, autocast_dtype(params.precision, device))
    out = np.empty((len(encoded), model.config.num_labels), dtype=np.float32)
    for rows, values in zip(batches, logits):
        out[rows] = values
    return out


# --------------------------------------------------------------------------- processes


@dataclass(frozen=True)
class Ranks:
    rank: int
    world: int

    @property
    def leader(self) -> bool:
        return self.rank == 0


@contextmanager
def process_group() -> Iterator[tuple[Ranks, torch.device]]:
    """This process's rank and device: from torchrun's environment, or rank 0 of 1.

    Under torchrun each rank uses GPU LOCAL_RANK (NCCL) or the CPU (gloo).
    """
    device = pick_device()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        yield Ranks(0, 1), device
        return
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield Ranks(dist.get_rank(), dist.get_world_size()), device
    finally:
        dist.destroy_process_group()


def refuse_divergent_ranks(fingerprints: Sequence[dict[str, Any]]) -> None:
    """Every rank must see the same teacher, corpus and params, or the shards would not fit."""
    for rank, seen in enumerate(fingerprints):
        if seen != fingerprints[0]:
            differ = sorted(k for k in seen if seen[k] != fingerprints[0].get(k))
            raise PipelineError(
                f"rank {rank} sees a different {', '.join(differ)} than rank 0; "
                "give every rank the same teacher dir, corpus and params.yaml"
            )


# --------------------------------------------------------------------------- stage


def read_corpus(path: Path, task: TaskSpec) -> tuple[np.ndarray, pa.Array, pa.Array | None]:
    """idx, text_a, text_b (None for single-sentence tasks) of the augmented corpus, checked."""
    table = read_table(path, AUGMENTED_SCHEMA, task.name)
    if table.num_rows == 0:
        raise damaged(path, "no rows")
    idx = table.column("idx").to_numpy()
    if len(np.unique(idx)) != len(idx):
        raise damaged(path, "duplicate idx values; logits could not join 1:1")
    text_a = table.column("text_a").combine_chunks()
    text_b = table.column("text_b").combine_chunks() if task.is_pair else None
    for name, column in (("text_a", text_a), ("text_b", text_b)):
        if column is not None and column.null_count:
            raise damaged(path, f"null {name} in a {task.name} corpus")
    return idx, text_a, text_b


def scratch_fingerprint(fingerprint: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:16]


def open_scratch(root: Path, fingerprint: dict[str, Any]) -> Path:
    """The scratch dir for this fingerprint; scratch left by other inputs is deleted, never reused."""
    scratch = root / scratch_fingerprint(fingerprint)
    if root.is_dir():
        for stale in sorted(p for p in root.iterdir() if p != scratch):
            log.warning("discarding stale label scratch %s (other teacher, corpus or params)", stale)
            if stale.is_dir():
                shutil.rmtree(stale)
            else:
                stale.unlink()
    scratch.mkdir(parents=True, exist_ok=True)
    write_json(fingerprint, scratch / "fingerprint.json")
    return scratch


def chunk_file(scratch: Path, chunk: int) -> Path:
    return scratch / f"chunk-{chunk:06d}.npy"


def load_chunk(scratch: Path, chunk: int, rows: int, num_labels: int) -> np.ndarray:
    """A saved chunk of logits (resumable state, not a DVC output: a bad one is deleted with
    its directory)."""
    path, fix = chunk_file(scratch, chunk), f"delete {scratch} and rerun"
    with reading(path, "NumPy", fix=fix):
        values = np.load(path)
    if values.shape != (rows, num_labels) or values.dtype != np.float32:
        raise damaged(path, f"unexpected shape {values.shape} {values.dtype}", fix=fix)
    return values


def gather_chunk(ranks: Ranks, mine: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    """All ranks' batch logits of one chunk, keyed by global batch number, on rank 0 ({} elsewhere)."""
    if ranks.world == 1:
        return mine
    parts: list[dict[int, np.ndarray]] | None = None
    if ranks.leader:
        parts = [{} for _ in range(ranks.world)]
    dist.gather_object(mine, parts, dst=0)
    return {k: v for part in parts or [] for k, v in part.items()}


def from_leader(ranks: Ranks, value: T) -> T:
    """Rank 0's `value` on every rank."""
    if ranks.world == 1:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def label_corpus(
    task: TaskSpec,
    params: LabelParams,
    teacher_dir: Path,
    corpus_path: Path,
    out_path: Path,
    scratch_root: Path,
    stage: str | None = None,
) -> None:
    """Label every corpus row with the teacher, resumably, on every rank of a process group;
    `stage` names the run in the log (default `label@<task>`)."""
    idx, text_a, text_b = read_corpus(corpus_path, task)
    model, tokenizer = load_teacher(teacher_dir, task)
    positions = model.config.max_position_embeddings
    if params.max_length > positions:
        raise PipelineError(
            f"label.max_length={params.max_length} exceeds the teacher's {positions} positions; lower it"
        )
    with process_group() as (ranks, device):
        dtype = autocast_dtype(params.precision, device)
        fingerprint = {
            "task": task.name,
            "teacher_sha256": dir_sha256(teacher_dir),
            "corpus_sha256": file_sha256(corpus_path),
            "params": params.model_dump(),
            "dtype": str(dtype or torch.float32).removeprefix("torch."),
            "device": device.type,
        }
        if ranks.world > 1:
            seen: list[dict[str, Any]] = [{} for _ in range(ranks.world)]
            dist.all_gather_object(seen, fingerprint)
            refuse_divergent_ranks(seen)
        inputs = {"rows": len(idx), "teacher": teacher_dir, "device": device,
                  "dtype": fingerprint["dtype"], "processes": ranks.world}
        run = stage_run(log, stage or f"label@{task.name}", **inputs) if ranks.leader else nullcontext({})
        with run as summary:
            lengths = token_lengths(tokenizer, text_a, text_b, params.max_length)
            batches = plan_batches(lengths, params.batch_tokens)
            chunks = plan_chunks([len(b) for b in batches], params.chunk_rows)
            scratch = open_scratch(scratch_root, fingerprint) if ranks.leader else None
            finished = [c for c in range(len(chunks)) if scratch and chunk_file(scratch, c).is_file()]
            todo = from_leader(ranks, [c for c in range(len(chunks)) if c not in finished])
            if ranks.leader:
                log.info(
                    "%d batches of <= %d padded tokens in %d chunks; %d chunks already done in %s",
                    len(batches), params.batch_tokens, len(chunks), len(finished), scratch,
                )
            model = prepare_model(model, device)
            corpus = ChunkSource(tokenizer, text_a, text_b, params.max_length, lengths)
            rows, tokens, seconds = run_chunks(
                model, corpus, batches, chunks, todo, ranks, device, dtype, scratch
            )
            if scratch is not None:
                metadata = {
                    **fingerprint,  # task, hashes, params, dtype, device
                    "num_labels": task.num_labels,
                    "teacher_path": str(teacher_dir),
                    "corpus_path": str(corpus_path),
                    "rows": len(idx),
                }
                write_logits(idx, batches, chunks, scratch, out_path, metadata)
                shutil.rmtree(scratch)
                with suppress(OSError):
                    scratch_root.rmdir()  # only when no other scratch is left
                padded = sum(len(b) * int(lengths[b[0]]) for b in batches)
                summary.update(
                    out=out_path,
                    rows=len(idx),
                    computed_rows=rows,
                    rows_per_s=f"{rows / seconds:.0f}" if seconds else "-",
                    tokens_per_s=f"{tokens / seconds:.0f}" if seconds else "-",
                    padded_tokens=f"{padded / lengths.sum():.2f}x real",
                )
            if ranks.world > 1:
                dist.barrier()


@dataclass(frozen=True)
class ChunkSource:
    """The corpus as the label loop reads it: texts (Arrow) and word-piece counts for all
    rows, word-piece ids only for the batches at hand.

    Tokenising a chunk's rows when it is computed (their lengths were counted once up front,
    for the batch plan) keeps the ids alive at once to a chunk's: ids for every row cost 5
    bytes a word piece, several hundred MB at 4 M pair rows. The price is a second
    tokenizer pass, about 1% of the stage with a real teacher on a CPU. The ids are the
    same either way (the tokenizer encodes each row on its own), so the logits are too.
    """

    tokenizer: PreTrainedTokenizerBase
    text_a: Sequence[str] | pa.Array
    text_b: Sequence[str] | pa.Array | None
    max_length: int
    lengths: np.ndarray

    def encode(self, batches: Sequence[np.ndarray]) -> tuple[Encoded, list[np.ndarray]]:
        """The ids of these batches' rows, and each batch as positions in them."""
        rows = np.concatenate(batches) if batches else np.zeros(0, np.int64)
        encoded = encode(
            self.tokenizer, _take(self.text_a, rows),
            None if self.text_b is None else _take(self.text_b, rows), self.max_length,
        )
        ends = np.cumsum([len(b) for b in batches])
        return encoded, [np.arange(end - len(b), end) for b, end in zip(batches, ends)]


def _take(texts: Sequence[str] | pa.Array, rows: np.ndarray) -> Sequence[str] | pa.Array:
    if isinstance(texts, pa.Array):
        return texts.take(pa.array(rows))
    return [texts[i] for i in rows]


def run_chunks(
    model: torch.nn.Module,
    corpus: ChunkSource,
    batches: list[np.ndarray],
    chunks: list[range],
    todo: list[int],
    ranks: Ranks,
    device: torch.device,
    dtype: torch.dtype | None,
    scratch: Path | None,
) -> tuple[int, int, float]:
    """Compute the unfinished chunks; rank 0 saves each. Returns (rows, real tokens, seconds).

    The progress bar (rank 0) counts rank 0's batches as they finish and the other ranks'
    when their chunk is gathered.
    """
    real_tokens = [int(corpus.lengths[b].sum()) for b in batches]
    total = sum(len(batches[i]) for c in todo for i in chunks[c])
    tokens = 0
    started = time.perf_counter()
    with tqdm(total=total, unit="row", unit_scale=True, desc="label", disable=not ranks.leader) as bar:

        def advance(rows: int, batch_tokens: int) -> None:
            nonlocal tokens
            tokens += batch_tokens
            bar.update(rows)
            bar.set_postfix_str(f"{tokens / (time.perf_counter() - started):,.0f} tok/s", refresh=False)

        for c in todo:
            mine = [i for i in chunks[c] if i % ranks.world == ranks.rank]
            encoded, local = corpus.encode([batches[i] for i in mine])
            logits = infer(model, encoded, local, device, dtype, advance)
            gathered = gather_chunk(ranks, dict(zip(mine, logits)))
            if scratch is not None:
                with atomic_path(chunk_file(scratch, c)) as tmp:
                    np.save(tmp, np.concatenate([gathered[i] for i in chunks[c]]))
                others = [i for i in chunks[c] if i not in mine]
                advance(sum(len(batches[i]) for i in others), sum(real_tokens[i] for i in others))
    return total, sum(real_tokens[i] for c in todo for i in chunks[c]), time.perf_counter() - started


def write_logits(
    idx: np.ndarray,
    batches: list[np.ndarray],
    chunks: list[range],
    scratch: Path,
    out_path: Path,
    metadata: dict[str, Any],
) -> None:
    """Assemble the saved chunks into corpus order, sort rows by idx, write atomically."""
    num_labels = metadata["num_labels"]
    logits = np.empty((len(idx), num_labels), dtype=np.float32)
    for c, chunk in enumerate(chunks):
        rows = np.concatenate([batches[i] for i in chunk])
        logits[rows] = load_chunk(scratch, c, len(rows), num_labels)
    order = np.argsort(idx, kind="stable")
    table = pa.table(
        {
            "idx": pa.array(idx[order], pa.int64()),
            "logits": pa.FixedSizeListArray.from_arrays(pa.array(logits[order].ravel()), num_labels),
        },
        schema=logits_schema(num_labels),
    )
    write_table(table, out_path, metadata)


def main(task_name: str, params_path: Path, arm: str | None = None) -> None:
    """The task's transfer set, or (`arm`) the transfer set of an ablation arm with logits of
    its own, labelled by the task's teacher."""
    task = load_task(task_name)
    params = load_params(params_path).label
    if arm is None:
        corpus_path, out_path, stage = paths.augmented(task.name), paths.logits(task.name), None
    else:
        corpus_path, out_path = paths.arm_augmented(task.name, arm), paths.arm_logits(task.name, arm)
        stage = f"ablation_label@{task.name}-{arm}"
    label_corpus(
        task,
        params,
        teacher_dir=paths.teacher_dir(task.name),
        corpus_path=corpus_path,
        out_path=out_path,
        scratch_root=paths.label_scratch(task.name, arm),
        stage=stage,
    )
