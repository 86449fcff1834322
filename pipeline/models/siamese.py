"""Sentence-pair student (METHOD.md §0.6, §1.7): one shared BiLSTM encoder on both sides."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.bilstm import BiLSTMEncoder, classifier_head
from pipeline.models.batching import PAD_ID


class SiameseBiLSTM(nn.Module):
    """Encode a and b with the same encoder, compare, then Linear 8H -> F, ReLU, dropout, Linear F -> K.

    Dropout: METHOD.md §0.6 gives one dropout param for the students; we apply it after the
    ReLU here as in the single-sentence model. The official pair code configures dropout but
    never applies it (METHOD.md §3.11); `student.dropout: 0` reproduces that.
    """

    def __init__(
        self,
        num_words: int,
        embedding_dim: int,
        hidden_size: int,
        fc_size: int,
        num_labels: int,
        dropout: float,
        backoff_size: int = 0,
    ) -> None:
        super().__init__()
        self.encoder = BiLSTMEncoder(num_words, embedding_dim, hidden_size, backoff_size)
        self.classifier = classifier_head(4 * self.encoder.output_dim, fc_size, num_labels, dropout)

    @staticmethod
    def features(h1: torch.Tensor, h2: torch.Tensor) -> torch.Tensor:
        """[h1, h2, h1 * h2, |h1 - h2|]: the last two halves are symmetric in a and b."""
        return torch.cat([h1, h2, h1 * h2, (h1 - h2).abs()], dim=-1)

    def forward(
        self, ids_a: torch.Tensor, lengths_a: torch.Tensor, ids_b: torch.Tensor, lengths_b: torch.Tensor
    ) -> torch.Tensor:
        """Both sides go through the encoder as one batch of 2B sequences (one LSTM call)."""
        width = max(ids_a.shape[1], ids_b.shape[1])
        ids = torch.cat(
            [F.pad(side, (0, width - side.shape[1]), value=PAD_ID) for side in (ids_a, ids_b)]
        )
        h1, h2 = self.encoder(ids, torch.cat([lengths_a, lengths_b])).chunk(2)
        return self.classifier(self.features(h1, h2))
