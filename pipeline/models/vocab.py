"""The student's tokenizer, vocabulary and pre-tokenised id arrays.

Input text is the pipeline's canonical form (Treebank tokens joined by spaces, METHOD.md
§0.5), so tokenising is a whitespace split. Tokens are lower-cased, as the authors'
student tokenizer does (METHOD.md §1.3) and as the uncased teacher and the uncased GloVe
vectors expect; GLUE's SST-2 text is lower-case already, QQP and MNLI are not. `[MASK]`
keeps its case so it cannot collide with a real word.

`[MASK]` policy (METHOD.md §0.4): "unk" maps it to the unknown-word entry (the paper),
"dedicated" gives it its own vocabulary entry and vector (the official code).

Everything here is vectorised with pyarrow/numpy: the SST-2 transfer set has about a million
rows, and a Python loop over them would cost more than a training epoch's data handling.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.models.batching import TokenIds
from pipeline.text import MASK_TOKEN

MaskPolicy = Literal["unk", "dedicated"]

PAD, UNK = "<pad>", "<unk>"
UNK_ID = 1


def tokenize(texts: Sequence[str] | pa.Array) -> pa.ListArray:
    """Whitespace tokens of each text, lower-cased except `[MASK]`; empty tokens dropped."""
    array = texts if isinstance(texts, pa.Array) else pa.array(texts, pa.string())
    if array.null_count:
        raise ValueError("texts must not be null")
    split = pc.utf8_split_whitespace(array)
    tokens = pc.list_flatten(split)
    keep = pc.not_equal(tokens, "")
    rows = pc.list_parent_indices(split).to_numpy()
    counts = np.bincount(rows[keep.to_numpy(zero_copy_only=False)], minlength=len(array))
    tokens = tokens.filter(keep)
    lowered = pc.if_else(pc.equal(tokens, MASK_TOKEN), tokens, pc.utf8_lower(tokens))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), lowered)


BLOCK_ROWS = 65536  # texts tokenised at once when building or encoding a corpus


def _blocks(texts: Sequence[str] | pa.Array) -> Iterator[Sequence[str] | pa.Array]:
    for start in range(0, len(texts), BLOCK_ROWS):
        yield texts.slice(start, BLOCK_ROWS) if isinstance(texts, pa.Array) else texts[start : start + BLOCK_ROWS]


@dataclass(frozen=True)
class Vocab:
    """Index i is word i: `<pad>`, `<unk>`, then the corpus words by falling count."""

    words: tuple[str, ...]
    mask_policy: MaskPolicy

    def __post_init__(self) -> None:
        if self.words[:2] != (PAD, UNK):
            raise ValueError(f"a vocabulary starts with {PAD}, {UNK}; got {self.words[:2]}")

    def __len__(self) -> int:
        return len(self.words)

    @classmethod
    def build(
        cls, texts: Sequence[Sequence[str] | pa.Array], mask_policy: MaskPolicy
    ) -> tuple[Vocab, np.ndarray]:
        """Every token of `texts` (one sequence per text column), min count 1.

        Literal `<pad>`/`<unk>` tokens in the text are not words of their own (they encode
        as `<unk>`), nor is `[MASK]` under the "unk" policy.

        Returns the vocabulary and each entry's corpus count (0 for `<pad>`/`<unk>`), which
        the caller uses to report token coverage by the pretrained vectors. Ties in count
        are broken alphabetically, so the order does not depend on row order.
        """
        counted = pa.Table.from_batches(
            [
                pa.RecordBatch.from_struct_array(pc.value_counts(pc.list_flatten(tokenize(block))))
                for column in texts
                for block in _blocks(column)
            ],
            schema=pa.schema([("values", pa.string()), ("counts", pa.int64())]),
        ).group_by("values").aggregate([("counts", "sum")])
        words, counts = counted["values"].to_pylist(), counted["counts_sum"].to_numpy()
        reserved = {PAD, UNK} | ({MASK_TOKEN} if mask_policy == "unk" else set())
        kept = [w not in reserved for w in words]
        words, counts = [w for w, k in zip(words, kept) if k], counts[kept]
        order = sorted(range(len(words)), key=lambda i: (-counts[i], words[i]))
        vocab = cls((PAD, UNK, *(words[i] for i in order)), mask_policy)
        return vocab, np.concatenate([[0, 0], counts[order]]).astype(np.int64)

    def with_backoff(self, words: Sequence[str]) -> Vocab:
        """This vocabulary followed by `words` (the backoff words of `embeddings.load_backoff`)."""
        return Vocab((*self.words, *words), self.mask_policy)

    @cached_property
    def _ids(self) -> dict[str, int]:
        """Word -> id, built once: Arrow's `index_in` rebuilds its hash table on every call,
        which on a 64k-word vocabulary costs more than a batch-1 forward pass."""
        return {word: i for i, word in enumerate(self.words) if i >= 2}

    @cached_property
    def _words_last_first(self) -> pa.Array:
        """The words after `<pad>`, `<unk>`, last first: `index_in` returns a word's first
        match, and the dict above keeps its last id (a backoff list may repeat a word)."""
        return pa.array(self.words[:1:-1], pa.string())

    def encode(self, texts: Sequence[str] | pa.Array) -> TokenIds:
        """Token ids of each text; unknown words (and `[MASK]` under "unk") map to UNK_ID.

        A corpus is tokenised a block of rows at a time, so the token strings alive at once
        are a block's, not a transfer set's; only the ids are kept."""
        ids, lengths = [], []
        for block in _blocks(texts):
            tokens = tokenize(block)
            ids.append(self._lookup(pc.list_flatten(tokens)))
            lengths.append(np.diff(tokens.offsets.to_numpy()))
        offsets = np.zeros(len(texts) + 1, dtype=np.int64)
        if lengths:
            np.cumsum(np.concatenate(lengths), out=offsets[1:])
        return TokenIds(np.concatenate(ids) if ids else np.zeros(0, np.int64), offsets)

    def _lookup(self, flat: pa.Array) -> np.ndarray:
        if len(flat) <= len(self.words):  # a few texts (predict, latency): the dict, built once
            lookup = self._ids.get
            return np.fromiter((lookup(token, UNK_ID) for token in flat.to_pylist()), dtype=np.int64)
        # a corpus: Arrow's hash lookup, no Python string per token (4 M rows hold ~10^8)
        found = pc.index_in(flat, value_set=self._words_last_first)
        return pc.fill_null(pc.subtract(len(self.words) - 1, found), UNK_ID).to_numpy().astype(np.int64)
