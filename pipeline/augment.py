"""`augment` stage: the paper's rule-based augmentation -> `data/augmented/<task>.parquet`.

The rules (METHOD.md §0.3, §1.4-1.5), applied to every training row `n_iter` times:

1. per token draw X ~ U[0, 1): X < p_mask -> `[MASK]`; else X < p_mask + p_pos -> a word
   drawn from the POS pool of the token's tag (every training-set occurrence of that tag, so
   words come in proportion to their frequency under it, the token itself included); else
   the token is kept. Tags come from tagging each original sentence whole, once.
2. with probability p_ng keep only one n-gram: n uniform in 1..ngram_max, start uniform over
   every valid start [0, len - n]; a sentence with len <= n keeps its whole perturbed form.
3. emit the space-joined result unless it equals an original or any earlier sample (global
   dedup in row-then-iteration order; for pairs on the (text_a, text_b) pair).

Pairs: each iteration perturbs the first side only, the second only, or both, with
probability 1/3 each, every perturbed side getting rules 1-2; the POS pool holds both sides,
and a pair with an empty side is never emitted. What the authors' code does differently is
deliberately not copied: the start range there misses the last n-gram, short sentences
abandon their remaining iterations, a sample whose every token was perturbed is dropped,
n-gram sampling is off by default and the pair script is unseeded.

Determinism and speed: originals are tokenised and tagged once, in parallel (each distinct
text once). Candidates are generated in chunks of CHUNK_ROWS training rows, each from its own
numpy generator seeded with (seed, chunk id), with the per-token draws vectorised; worker
processes return the chunks in order and the parent deduplicates them sequentially, so the
output depends on the seed, never on the number of workers. Kept rows are spilled as Arrow
record batches and written as Parquet row groups once the counts for the metadata are known.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from pipeline import paths
from pipeline.errors import PipelineError
from pipeline.artifacts import atomic_path
from pipeline.io import (
    AUGMENTED_SCHEMA,
    SPLIT_SCHEMA,
    file_sha256,
    load_task,
    read_table,
    with_metadata,
)
from pipeline.logs import get_logger, stage_run
from pipeline.params import AugmentParams, load_settings
from pipeline.tasks import TaskSpec
from pipeline.text import MASK_TOKEN, pos_tagger, tagger_identity, word_tokenize

log = get_logger("augment")

# Training rows per generation chunk. Each chunk has its own random stream, so this constant
# is part of what a seed means (changing it changes the sample, not its distribution); it
# is fixed so that the output never depends on how many workers share the chunks.
CHUNK_ROWS = 1024
TAG_CHUNK_TEXTS = 2048  # texts per tagging task (tags do not depend on it)

FIRST_ONLY, SECOND_ONLY, BOTH = 0, 1, 2  # pair modes, drawn uniformly per iteration

K = TypeVar("K")
T = TypeVar("T")
S = TypeVar("S")
R = TypeVar("R")


# --------------------------------------------------------------------------- encoded corpus


@dataclass(frozen=True)
class PosPool:
    """Every training-set token occurrence, grouped by tag (word ids, duplicates kept).

    Tag t's occurrences are `words[starts[t] : starts[t] + sizes[t]]`; drawing an index
    uniformly in that block draws a word in proportion to its frequency under tag t.
    """

    words: np.ndarray  # int32 word ids ordered by tag
    starts: np.ndarray  # int64 per tag id
    sizes: np.ndarray  # int64 per tag id

    @classmethod
    def from_occurrences(cls, words: np.ndarray, tags: np.ndarray, num_tags: int) -> PosPool:
        order = np.argsort(tags, kind="stable")
        sizes = np.bincount(tags, minlength=num_tags).astype(np.int64)
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        return cls(words=words[order].astype(np.int32), starts=starts, sizes=sizes)

    def sample(self, tags: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One word id per entry of `tags`, each from the pool of that tag."""
        return self.words[self.starts[tags] + rng.integers(0, self.sizes[tags])]


@dataclass(frozen=True)
class EncodedSide:
    """One text column of the training split, tokenised, tagged and encoded as ids."""

    texts: np.ndarray  # object array: the canonical (normalised) text of each row
    words: np.ndarray  # int32 word ids of all tokens, row after row
    tags: np.ndarray  # int32 tag ids aligned with `words`
    offsets: np.ndarray  # int64, len rows + 1: row r is words[offsets[r]:offsets[r + 1]]

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


@dataclass(frozen=True)
class Corpus:
    """What generation needs: the encoded originals (one or two sides) and the POS pool."""

    vocab: np.ndarray  # object array: word id -> token
    tag_names: tuple[str, ...]  # tag id -> Penn tag
    sides: tuple[EncodedSide, ...]  # (text_a,) or (text_a, text_b)
    pool: PosPool
    mask_id: int

    @property
    def rows(self) -> int:
        return len(self.sides[0].texts)

    @property
    def is_pair(self) -> bool:
        return len(self.sides) == 2

    def original_keys(self, rows: slice = slice(None)) -> Iterator[str | tuple[str, str]]:
        """The dedup key of each original row in `rows` (the text, or the pair of texts)."""
        if self.is_pair:
            return zip(self.sides[0].texts[rows].tolist(), self.sides[1].texts[rows].tolist())
        return iter(self.sides[0].texts[rows].tolist())


def encode_corpus(columns: Sequence[Sequence[str]], tagged: dict[str, tuple[list[str], list[str]]]) -> Corpus:
    """Encode the text columns of the training split, given (tokens, tags) per distinct text.

    The POS pool holds every token occurrence of every column (both sides of a pair).
    """
    vocab: dict[str, int] = {MASK_TOKEN: 0}
    tag_ids: dict[str, int] = {}
    sides = []
    for column in columns:
        texts, words, tags, lengths = [], [], [], []
        for text in column:
            tokens, token_tags = tagged[text]
            texts.append(" ".join(tokens))
            words.extend(vocab.setdefault(w, len(vocab)) for w in tokens)
            tags.extend(tag_ids.setdefault(t, len(tag_ids)) for t in token_tags)
            lengths.append(len(tokens))
        sides.append(
            EncodedSide(
                texts=np.array(texts, dtype=object),
                words=np.array(words, dtype=np.int32),
                tags=np.array(tags, dtype=np.int32),
                offsets=np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]),
            )
        )
    pool = PosPool.from_occurrences(
        np.concatenate([s.words for s in sides]), np.concatenate([s.tags for s in sides]), len(tag_ids)
    )
    return Corpus(
        vocab=np.array(list(vocab), dtype=object),
        tag_names=tuple(tag_ids),
        sides=tuple(sides),
        pool=pool,
        mask_id=vocab[MASK_TOKEN],
    )


# --------------------------------------------------------------------------- the rules


def perturb_tokens(
    words: np.ndarray,
    tags: np.ndarray,
    pool: PosPool,
    rng: np.random.Generator,
    p_mask: float,
    p_pos: float,
    mask_id: int,
) -> np.ndarray:
    """Rule 1 on a flat array of tokens: one U[0, 1) draw per token, then pool draws."""
    draws = rng.random(len(words))
    out = words.copy()
    replace = (draws >= p_mask) & (draws < p_mask + p_pos)
    out[replace] = pool.sample(tags[replace], rng)
    out[draws < p_mask] = mask_id
    return out


def ngram_windows(
    lengths: np.ndarray, rng: np.random.Generator, p_ng: float, ngram_max: int
) -> tuple[np.ndarray, np.ndarray]:
    """Rule 2: the [start, stop) token window each sentence keeps.

    With probability p_ng a sentence keeps n consecutive tokens, n uniform in 1..ngram_max
    and start uniform in [0, len - n]; otherwise, or when len <= n, it keeps everything.
    """
    count = len(lengths)
    sampled = rng.random(count) < p_ng
    n = rng.integers(1, ngram_max + 1, size=count)
    start = rng.integers(0, np.maximum(lengths - n, 0) + 1)
    cut = sampled & (lengths > n)
    return np.where(cut, start, 0), np.where(cut, start + n, lengths)


def join_windows(
    vocab: np.ndarray, words: np.ndarray, lengths: np.ndarray, starts: np.ndarray, stops: np.ndarray
) -> list[str]:
    """Space-join each sentence's window; sentence i is the i-th `lengths[i]` run of `words`."""
    tokens = vocab[words].tolist()
    bases = np.cumsum(lengths) - lengths
    return [
        " ".join(tokens[lo:hi])
        for lo, hi in zip((bases + starts).tolist(), (bases + stops).tolist())
    ]


def perturb_side(
    corpus: Corpus, side: EncodedSide, positions: np.ndarray, params: AugmentParams, rng: np.random.Generator
) -> list[str]:
    """Rules 1-2 applied to the rows at `positions` of one side (a row may repeat)."""
    lengths = side.lengths[positions]
    # flat index of every token of every selected row: row starts, each followed by +1 steps
    index = np.repeat(side.offsets[positions] - (np.cumsum(lengths) - lengths), lengths) + np.arange(lengths.sum())
    words = perturb_tokens(
        side.words[index], side.tags[index], corpus.pool, rng, params.p_mask, params.p_pos, corpus.mask_id
    )
    starts, stops = ngram_windows(lengths, rng, params.p_ng, params.ngram_max)
    return join_windows(corpus.vocab, words, lengths, starts, stops)


@dataclass(frozen=True)
class Candidates:
    """Generated rows: the training row (position) each came from, and its text."""

    positions: np.ndarray  # int64 row positions in the training split
    text_a: list[str]
    text_b: list[str] | None

    def keys(self) -> Iterable[str | tuple[str, str]]:
        return self.text_a if self.text_b is None else zip(self.text_a, self.text_b)

    def select(self, index: list[int]) -> Candidates:
        return Candidates(
            positions=self.positions[index],
            text_a=[self.text_a[i] for i in index],
            text_b=None if self.text_b is None else [self.text_b[i] for i in index],
        )


def first_occurrences(keys: Iterable[K], seen: set[K]) -> list[int]:
    """Indices of the keys neither in `seen` nor repeated earlier; adds those keys to `seen`."""
    fresh = []
    for i, key in enumerate(keys):
        if key not in seen:
            seen.add(key)
            fresh.append(i)
    return fresh


def generate_candidates(
    corpus: Corpus, positions: np.ndarray, params: AugmentParams, rng: np.random.Generator
) -> Candidates:
    """One candidate per entry of `positions` (a training row index), in that order.

    Random numbers are drawn in this order: for pairs the modes, then per perturbed side
    the token draws, pool draws, n-gram coins, n and starts. Candidates with an empty side
    are dropped.
    """
    if corpus.is_pair:
        modes = rng.integers(0, 3, size=len(positions))
        text_a = _perturb_where(corpus, corpus.sides[0], positions, modes != SECOND_ONLY, params, rng)
        text_b = _perturb_where(corpus, corpus.sides[1], positions, modes != FIRST_ONLY, params, rng)
    else:
        text_a = np.array(perturb_side(corpus, corpus.sides[0], positions, params, rng), dtype=object)
        text_b = None
    nonempty = np.logical_and.reduce([side.lengths[positions] > 0 for side in corpus.sides])
    return Candidates(
        positions=positions[nonempty],
        text_a=text_a[nonempty].tolist(),
        text_b=None if text_b is None else text_b[nonempty].tolist(),
    )


def _perturb_where(
    corpus: Corpus,
    side: EncodedSide,
    positions: np.ndarray,
    selected: np.ndarray,
    params: AugmentParams,
    rng: np.random.Generator,
) -> np.ndarray:
    """The side's original texts at `positions`, perturbed where `selected`."""
    texts = side.texts[positions]
    texts[selected] = np.array(perturb_side(corpus, side, positions[selected], params, rng), dtype=object)
    return texts


def chunk_rng(seed: int, chunk_id: int) -> np.random.Generator:
    """The random stream of one chunk: child `chunk_id` of the seed's SeedSequence."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(chunk_id,)))


def generate_chunk(setup: tuple[Corpus, AugmentParams], chunk: tuple[int, int, int]) -> tuple[int, Candidates]:
    """n_iter candidates per row of one chunk (chunk id, first row, end row), row-major.

    Returns how many were generated, and those that survive dedup within the chunk and
    against the chunk's own originals: the parent's global dedup would drop the others
    anyway, so doing this here, in parallel, leaves the parent less to receive and check.
    """
    corpus, params = setup
    chunk_id, first, end = chunk
    positions = np.repeat(np.arange(first, end, dtype=np.int64), params.n_iter)
    candidates = generate_candidates(corpus, positions, params, chunk_rng(params.seed, chunk_id))
    own_originals = set(corpus.original_keys(slice(first, end)))
    return len(candidates.positions), candidates.select(first_occurrences(candidates.keys(), own_originals))


# --------------------------------------------------------------------------- parallel runs

_shared: Any = None  # a worker process's copy of the data every task needs


def _set_shared(shared: Any) -> None:
    global _shared
    _shared = shared


def _call_with_shared(fn: Callable[[Any, T], R], item: T) -> R:
    return fn(_shared, item)


def ordered_map(fn: Callable[[S, T], R], shared: S, items: Iterable[T], workers: int) -> Iterator[R]:
    """`fn(shared, item)` for each item, in order; `shared` is sent once to each worker."""
    if workers == 1:
        yield from (fn(shared, item) for item in items)
        return
    # Workers start with Ctrl-C ignored (the parent stops the pool; a worker would print its own trace)
    handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        pool = multiprocessing.get_context().Pool(workers, initializer=_set_shared, initargs=(shared,))
    finally:
        signal.signal(signal.SIGINT, handler)
    with pool:
        yield from pool.imap(partial(_call_with_shared, fn), items)


def default_workers() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _tag_texts(_: None, texts: list[str]) -> list[tuple[list[str], list[str]]]:
    tagger = pos_tagger()
    out = []
    for text in texts:
        tokens = word_tokenize(text)
        out.append((tokens, tagger.tag(tokens)))
    return out


def tag_texts(texts: Sequence[str], workers: int) -> dict[str, tuple[list[str], list[str]]]:
    """(Treebank tokens, Penn tags) of each distinct text, each sentence tagged whole, once."""
    distinct = list(dict.fromkeys(texts))
    batches = [distinct[i : i + TAG_CHUNK_TEXTS] for i in range(0, len(distinct), TAG_CHUNK_TEXTS)]
    tagged: dict[str, tuple[list[str], list[str]]] = {}
    with tqdm(total=len(distinct), unit="rows", unit_scale=True, desc="tag") as bar:
        for batch, result in zip(batches, ordered_map(_tag_texts, None, batches, workers)):
            tagged.update(zip(batch, result))
            bar.update(len(batch))
    return tagged


def build_corpus(train: pa.Table, task: TaskSpec, workers: int) -> Corpus:
    """Tokenise, tag and encode the text columns of the prepared training split."""
    columns = [train["text_a"].to_pylist()] + ([train["text_b"].to_pylist()] if task.is_pair else [])
    tagged = tag_texts([text for column in columns for text in column], workers)
    return encode_corpus(columns, tagged)


# --------------------------------------------------------------------------- dedup and output


@dataclass
class Report:
    """What a run produced and where its time went (logged; printed by the benchmark)."""

    originals: int = 0
    candidates: int = 0  # generated rows with no empty side, before dedup
    synthetic: int = 0  # kept after dedup
    seconds: dict[str, float] = field(default_factory=dict)


def synthetic_batches(
    corpus: Corpus, params: AugmentParams, source_idx: np.ndarray, workers: int, report: Report
) -> Iterator[pa.RecordBatch]:
    """Generate in chunks (in parallel), deduplicate in chunk order, yield the kept rows.

    `source_idx` maps row positions to the training split's `idx`. Synthetic `idx` values
    continue after the originals'.
    """
    seen = set(corpus.original_keys())
    next_idx = corpus.rows
    chunks = [
        (chunk_id, first, min(first + CHUNK_ROWS, corpus.rows))
        for chunk_id, first in enumerate(range(0, corpus.rows, CHUNK_ROWS))
    ]
    with tqdm(total=corpus.rows * params.n_iter, unit="rows", unit_scale=True, desc="generate") as bar:
        results = ordered_map(generate_chunk, (corpus, params), chunks, workers)
        for (_, first, end), (generated, candidates) in zip(chunks, results):
            kept = candidates.select(first_occurrences(candidates.keys(), seen))
            report.candidates += generated
            report.synthetic += len(kept.positions)
            bar.update((end - first) * params.n_iter)
            bar.set_postfix(kept=report.synthetic, refresh=False)
            if len(kept.positions):
                yield _synthetic_batch(kept, source_idx, next_idx)
                next_idx += len(kept.positions)


def _synthetic_batch(kept: Candidates, source_idx: np.ndarray, first_idx: int) -> pa.RecordBatch:
    count = len(kept.positions)
    text_b = pa.nulls(count, pa.string()) if kept.text_b is None else pa.array(kept.text_b, pa.string())
    return pa.RecordBatch.from_arrays(
        [
            pa.array(np.arange(first_idx, first_idx + count, dtype=np.int64)),
            pa.array(source_idx[kept.positions]),
            pa.array(kept.text_a, pa.string()),
            text_b,
            pa.array(np.full(count, -1, dtype=np.int64)),
            pa.array(np.zeros(count, dtype=bool)),
        ],
        schema=AUGMENTED_SCHEMA,
    )


def originals_table(train: pa.Table, corpus: Corpus) -> pa.Table:
    """The training rows in train order, text in canonical form, gold labels."""
    rows = corpus.rows
    text_b = corpus.sides[1].texts.tolist() if corpus.is_pair else [None] * rows
    return pa.table(
        {
            "idx": np.arange(rows, dtype=np.int64),
            "source_idx": train["idx"],
            "text_a": pa.array(corpus.sides[0].texts.tolist(), pa.string()),
            "text_b": pa.array(text_b, pa.string()),
            "label": train["label"],
            "is_original": np.ones(rows, dtype=bool),
        },
        schema=AUGMENTED_SCHEMA,
    )


def augment_to_parquet(
    train: pa.Table,
    task: TaskSpec,
    params: AugmentParams,
    workers: int,
    out: Path,
    provenance: dict[str, Any],
) -> Report:
    """Tag, generate, deduplicate and write the transfer set of one task to `out`.

    `train` holds the prepared training split; `provenance` goes into the file metadata
    next to the params and the counts. The file appears only when everything succeeded.
    """
    report = Report(originals=train.num_rows)
    started = time.perf_counter()
    corpus = build_corpus(train, task, workers)
    report.seconds["tokenise_tag"] = time.perf_counter() - started

    source_idx = train["idx"].to_numpy()
    with atomic_path(out) as tmp:
        # Beside the Parquet file in the writer's temp directory: gone with it on success or
        # failure, and removed by the next run if a kill left it.
        spill = tmp.parent / "synthetic.arrow"
        started = time.perf_counter()
        with pa.OSFile(str(spill), "wb") as sink, pa.ipc.new_file(sink, AUGMENTED_SCHEMA) as writer:
            for batch in synthetic_batches(corpus, params, source_idx, workers, report):
                writer.write_batch(batch)
        report.seconds["generate"] = time.perf_counter() - started

        started = time.perf_counter()
        metadata = {
            **provenance,
            "task": task.name,
            "params": params.model_dump(),
            "seed": params.seed,
            "generator": {"numpy": np.__version__, "bit_generator": "PCG64", "chunk_rows": CHUNK_ROWS},
            "counts": {
                "originals": report.originals,
                "candidates": report.candidates,
                "synthetic": report.synthetic,
            },
        }
        schema = with_metadata(AUGMENTED_SCHEMA, metadata)
        with pq.ParquetWriter(tmp, schema, compression="zstd") as parquet, pa.memory_map(str(spill)) as source:
            parquet.write_table(originals_table(train, corpus))
            spilled = pa.ipc.open_file(source)
            for i in range(spilled.num_record_batches):
                parquet.write_batch(spilled.get_batch(i))
        report.seconds["write"] = time.perf_counter() - started
    return report


# --------------------------------------------------------------------------- command


def main(task_name: str, params_path: Path, workers: int | None, arm: str | None = None) -> None:
    """The task's transfer set, or (`arm`) the transfer set of an ablation arm with logits of
    its own: the same rules with the arm's settings."""
    task = load_task(task_name)
    params = load_settings(AugmentParams, task.name, params_path, arm=arm)
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise PipelineError(f"--workers must be at least 1 (got {workers})")
    tagger = tagger_identity()
    train_path = paths.prepared_split(task.name, "train")
    train = read_table(train_path, SPLIT_SCHEMA, task.name)
    if train.num_rows == 0:
        raise PipelineError(f"{train_path}: empty training split (rerun: dvc repro prepare@{task.name})")
    out = paths.augmented(task.name) if arm is None else paths.arm_augmented(task.name, arm)
    stage = f"augment@{task.name}" if arm is None else f"ablation_augment@{task.name}-{arm}"
    provenance = {
        "tagger": tagger,
        "tokenizer": "nltk.tokenize.TreebankWordTokenizer",
        "input": {"path": str(train_path), "sha256": file_sha256(train_path), "rows": train.num_rows},
    }
    with stage_run(
        log, stage, input=train_path, rows=train.num_rows, n_iter=params.n_iter, workers=workers
    ) as summary:
        report = augment_to_parquet(train, task, params, workers, out, provenance)
        summary.update(
            out=out,
            originals=report.originals,
            candidates=report.candidates,
            synthetic=report.synthetic,
            **{f"{phase}_s": f"{seconds:.1f}" for phase, seconds in report.seconds.items()},
            candidates_per_s=f"{report.candidates / max(report.seconds['generate'], 1e-9):.0f}",
        )
