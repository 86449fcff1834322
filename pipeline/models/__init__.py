"""Student models and the self-contained student directory.

A student directory holds everything needed to run the model without the pipeline's params:

    config.json        architecture sizes, task, label names, `[MASK]` policy (StudentConfig)
    vocab.json         the vocabulary, index i = word i (the trained words, then the backoff
                       words, which share one frozen table of pretrained vectors)
    model.safetensors  the weights (both embedding channels included)
    training.json      how it was trained (written by the student stage; not needed to load)

`load_student(path)` returns a `Student`, the API the evaluate stage and `predict` use.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from pipeline.artifacts import damaged, reading, require_artifact
from pipeline.errors import PipelineError
from pipeline.models.batching import TokenIds, batch_inputs, length_batches, sort_key
from pipeline.models.bilstm import BiLSTMClassifier, count_parameters
from pipeline.models.siamese import SiameseBiLSTM
from pipeline.models.vocab import MaskPolicy, Vocab

CONFIG_FILE = "config.json"
VOCAB_FILE = "vocab.json"
WEIGHTS_FILE = "model.safetensors"
TRAINING_FILE = "training.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class StudentConfig:
    """What it takes to rebuild the network: sizes, labels and the tokenizer's `[MASK]` policy."""

    task: str
    label_names: tuple[str, ...]
    is_pair: bool
    vocab_size: int
    embedding_dim: int  # per channel; the LSTM input has twice this
    hidden_size: int
    fc_size: int
    dropout: float
    mask_policy: MaskPolicy
    backoff_size: int = 0  # frozen pretrained vectors for words outside the training vocabulary


def build_model(config: StudentConfig) -> nn.Module:
    """BiLSTM for single-sentence tasks, siamese BiLSTM for pairs (untrained weights)."""
    cls = SiameseBiLSTM if config.is_pair else BiLSTMClassifier
    return cls(
        config.vocab_size,
        config.embedding_dim,
        config.hidden_size,
        config.fc_size,
        len(config.label_names),
        config.dropout,
        config.backoff_size,
    )


def encode(
    vocab: Vocab, text_a: Sequence[str] | pa.Array, text_b: Sequence[str] | pa.Array | None
) -> list[TokenIds]:
    """Token ids per input side (one side for single sentences, two for pairs)."""
    if text_b is not None and len(text_b) != len(text_a):
        raise ValueError(f"text_a has {len(text_a)} rows but text_b has {len(text_b)}")
    return [vocab.encode(text_a)] + ([vocab.encode(text_b)] if text_b is not None else [])


@torch.inference_mode()
def predict_logits(
    model: nn.Module, sides: list[TokenIds], batch_size: int, device: torch.device
) -> np.ndarray:
    """Logits [rows, K] float32 in input order; puts `model` in eval mode.

    Rows are run in length-sorted batches so packed sequences of similar length share a batch.
    """
    model.eval()
    num_labels = model.classifier[-1].out_features
    out = np.empty((len(sides[0]), num_labels), dtype=np.float32)
    for rows in length_batches(sort_key(sides), batch_size):
        out[rows] = model(*batch_inputs(sides, rows, device)).float().cpu().numpy()
    return out


class Student:
    """A trained student ready for inference (see `load_student`).

    `predict_logits` is the whole-list API; `encode` + `forward` split one batch into
    tokenisation and the model call, for timing each on its own.
    """

    def __init__(
        self, config: StudentConfig, vocab: Vocab, model: nn.Module, device: torch.device
    ) -> None:
        self.config = config
        self.vocab = vocab
        self.model = model.eval()
        self.device = device

    def to(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.model.to(self.device)

    def predict_logits(
        self, text_a: Sequence[str], text_b: Sequence[str] | None = None, batch_size: int = 256
    ) -> np.ndarray:
        """Logits [n, K] float32 for canonical space-joined text (pairs: give `text_b`)."""
        return predict_logits(self.model, self._sides(text_a, text_b), batch_size, self.device)

    def encode(self, text_a: Sequence[str], text_b: Sequence[str] | None = None) -> list[torch.Tensor]:
        """Model inputs for one batch, rows in the given order."""
        sides = self._sides(text_a, text_b)
        return batch_inputs(sides, np.arange(len(sides[0])), self.device)

    @torch.inference_mode()
    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        return self.model(*inputs)

    def num_parameters(self, include_embeddings: bool) -> int:
        return count_parameters(self.model, include_embeddings)

    def _sides(self, text_a: Sequence[str], text_b: Sequence[str] | None) -> list[TokenIds]:
        if self.config.is_pair != (text_b is not None):
            kind = "pair" if self.config.is_pair else "single-sentence"
            need = "text_a and text_b" if self.config.is_pair else "text_a only"
            raise PipelineError(f"the {self.config.task} student is a {kind} model: give {need}")
        return encode(self.vocab, text_a, text_b)


def save_student(directory: Path, config: StudentConfig, vocab: Vocab, model: nn.Module) -> None:
    """Write config, vocabulary and weights into `directory` (the caller makes it atomic)."""
    directory.mkdir(parents=True, exist_ok=True)
    config_json = {"format_version": FORMAT_VERSION, **asdict(config)}
    (directory / CONFIG_FILE).write_text(json.dumps(config_json, indent=2, sort_keys=True) + "\n")
    (directory / VOCAB_FILE).write_text(json.dumps(list(vocab.words), ensure_ascii=False) + "\n")
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    save_file(state, directory / WEIGHTS_FILE)


def load_student(
    path: Path | str, device: torch.device | str = "cpu", label_names: tuple[str, ...] | None = None
) -> Student:
    """Load a student directory written by the student stage; needs no params.yaml.

    `label_names`: the task's classes, when the caller knows them; a student trained for
    other classes (a stale directory) is refused.
    """
    path = Path(path)
    require_artifact(path, "student directory")
    missing = [f for f in (CONFIG_FILE, VOCAB_FILE, WEIGHTS_FILE) if not (path / f).is_file()]
    if missing:
        raise damaged(path, f"not a student directory (missing {', '.join(missing)})")
    with reading(path / CONFIG_FILE, "student config"):
        raw = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
        version = raw.pop("format_version", None)
        if version != FORMAT_VERSION:
            raise damaged(path / CONFIG_FILE, f"student format {version}, this version reads format {FORMAT_VERSION}")
        config = StudentConfig(**{**raw, "label_names": tuple(raw["label_names"])})
    if label_names is not None and config.label_names != label_names:
        raise damaged(path, f"classes {list(config.label_names)} differ from task {config.task}'s {list(label_names)}")
    with reading(path / VOCAB_FILE, "vocabulary"):
        words = json.loads((path / VOCAB_FILE).read_text(encoding="utf-8"))
        if not (isinstance(words, list) and all(isinstance(w, str) for w in words)):
            raise TypeError("not a JSON list of words")
        vocab = Vocab(tuple(words), config.mask_policy)
    if len(vocab) != config.vocab_size + config.backoff_size:
        raise damaged(
            path / VOCAB_FILE,
            f"{len(vocab)} words, but config.json says {config.vocab_size} + {config.backoff_size} backoff",
        )
    model = build_model(config)
    with reading(path / WEIGHTS_FILE, "safetensors"):
        state = load_file(path / WEIGHTS_FILE)
    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    found = {name: tuple(tensor.shape) for name, tensor in state.items()}
    if found != expected:
        name = min(set(found) ^ set(expected) or {n for n in expected if found[n] != expected[n]})
        raise damaged(path / WEIGHTS_FILE, f"weights do not fit config.json ({name}: {found.get(name)} "
                      f"in the file, {expected.get(name)} for the model config.json describes)")
    model.load_state_dict(state)
    device = torch.device(device)
    return Student(config, vocab, model.to(device), device)
