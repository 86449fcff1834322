"""Single-sentence student (METHOD.md §0.6, §1.7): multichannel embeddings -> BiLSTM -> MLP."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from pipeline.models.embeddings import MultichannelEmbedding


class BiLSTMEncoder(nn.Module):
    """Token ids -> [final forward hidden state ; final backward hidden state] (2H).

    Sequences are packed, so padding costs no LSTM steps and the backward direction starts
    at each sentence's real last token; on GPU the packed call runs the cuDNN kernel.
    No pooling or attention: the paper keeps the plain final states.
    """

    def __init__(
        self, num_words: int, embedding_dim: int, hidden_size: int, backoff_size: int = 0
    ) -> None:
        super().__init__()
        self.embedding = MultichannelEmbedding(num_words, embedding_dim, backoff_size)
        self.lstm = nn.LSTM(
            self.embedding.output_dim, hidden_size, num_layers=1, bidirectional=True, batch_first=True
        )

    @property
    def output_dim(self) -> int:
        return 2 * self.lstm.hidden_size

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """`ids` [B, T] (padded), `lengths` [B] int64 on the CPU, each >= 1 -> [B, 2H]."""
        embedded = self.embedding(ids)
        packed = pack_padded_sequence(embedded, lengths, batch_first=True, enforce_sorted=False)
        _, (hidden, _) = self.lstm(packed)  # hidden: [2, B, H], back in input order
        return torch.cat([hidden[0], hidden[1]], dim=-1)


def classifier_head(in_features: int, fc_size: int, num_labels: int, dropout: float) -> nn.Sequential:
    """Linear -> ReLU -> dropout -> Linear: the MLP both students put on top of their features."""
    return nn.Sequential(
        nn.Linear(in_features, fc_size),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(fc_size, num_labels),
    )


class BiLSTMClassifier(nn.Module):
    """Encoder, Linear 2H -> F, ReLU, dropout, Linear F -> K logits."""

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
        self.classifier = classifier_head(self.encoder.output_dim, fc_size, num_labels, dropout)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.encoder(ids, lengths))


def count_parameters(model: nn.Module, include_embeddings: bool) -> int:
    """Parameter count, with or without the embedding tables (both channels).

    Without embeddings is the paper's convention: 0.96 M for H 150 / F 200 on 600-d
    input (METHOD.md §4.2), whatever the vocabulary size.
    """
    embedding_params = {
        id(p) for m in model.modules() if isinstance(m, MultichannelEmbedding) for p in m.parameters()
    }
    return sum(
        p.numel() for p in model.parameters() if include_embeddings or id(p) not in embedding_params
    )
