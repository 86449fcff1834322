"""Pre-tokenised id arrays and length-bucketed batches, shared by training and inference.

A corpus is kept as one flat int64 array of token ids plus row offsets, so forming a batch
is a few vectorised numpy operations, with no per-row Python work in the training loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

PAD_ID = 0  # index of `<pad>` in every vocabulary


@dataclass(frozen=True)
class TokenIds:
    """Many texts as one flat id array plus offsets: row i is `ids[offsets[i]:offsets[i + 1]]`."""

    ids: np.ndarray  # int64 token ids
    offsets: np.ndarray  # int64, len(rows) + 1

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def padded(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`rows` as a [len(rows), T] id matrix padded with PAD_ID, and their lengths.

        Empty texts get length 1 (a single padding step, whose embedding is zero) because
        packed sequences cannot hold empty ones; the official code clamps the same way.
        """
        starts = self.offsets[rows]
        lengths = self.offsets[rows + 1] - starts
        steps = np.arange(max(int(lengths.max(initial=0)), 1))
        valid = steps < lengths[:, None]
        ids = np.full(valid.shape, PAD_ID, dtype=np.int64)
        ids[valid] = self.ids[(starts[:, None] + steps)[valid]]
        return ids, np.maximum(lengths, 1)


def sort_key(sides: list[TokenIds]) -> np.ndarray:
    """Per row, the longest side: what decides the padded width of a batch."""
    return np.max([side.lengths for side in sides], axis=0)


def length_batches(
    key: np.ndarray,
    batch_size: int,
    rng: np.random.Generator | None = None,
    window_batches: int = 1,
) -> list[np.ndarray]:
    """Row indices per batch, grouping rows of similar length.

    Without `rng` (inference): all rows sorted by length, then cut into batches. With `rng`
    (training): rows shuffled, sorted by length within windows of `window_batches` batches,
    cut into batches, and the batch order shuffled, so batches are nearly pad-free yet
    their composition and order change every epoch.
    """
    if len(key) == 0:
        return []
    if rng is None:
        order = np.argsort(key, kind="stable")
        return np.split(order, np.arange(batch_size, len(order), batch_size))
    shuffled = rng.permutation(len(key))
    window = np.arange(len(key)) // (batch_size * window_batches)
    order = shuffled[np.lexsort((key[shuffled], window))]
    batches = np.split(order, np.arange(batch_size, len(order), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def batch_inputs(sides: list[TokenIds], rows: np.ndarray, device: torch.device) -> list[torch.Tensor]:
    """Model inputs for `rows`: ids [B, T] on `device` and lengths [B] on the CPU, per side.

    Lengths stay on the CPU because `pack_padded_sequence` needs them there.
    """
    inputs: list[torch.Tensor] = []
    for side in sides:
        ids, lengths = side.padded(rows)
        inputs += [torch.from_numpy(ids).to(device, non_blocking=True), torch.from_numpy(lengths)]
    return inputs
