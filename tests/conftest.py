"""Shared test setup: offline hubs, the real data in ../shared, and a tiny random BERT."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("NLTK_DATA", str(SHARED / "nltk_data"))
os.environ.setdefault("GLUE_DIR", str(SHARED / "glue"))


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy machine they lose a lot."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def glue_dir() -> Path:
    path = Path(os.environ["GLUE_DIR"])
    assert (path / "SST-2" / "train.tsv").is_file(), f"real GLUE data expected under {path}"
    return path


@pytest.fixture(scope="session")
def tiny_bert_factory(tmp_path_factory):
    """Build (once per label count) a tiny randomly initialised BERT classifier directory.

    It uses the packaged MiniLM's real uncased WordPiece vocabulary, so `[MASK]` and
    pairs tokenise exactly as with the real teacher, but has 2 layers of width 32.
    """
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    from pipeline.bert import PACKAGED_TEACHER, resolve_checkpoint

    built: dict[int, Path] = {}

    def build(num_labels: int = 2) -> Path:
        if num_labels not in built:
            torch.manual_seed(0)
            # from_pretrained: transformers 5 ignores a `vocab_file=` argument (5-token vocab).
            tokenizer = BertTokenizerFast.from_pretrained(resolve_checkpoint(PACKAGED_TEACHER))
            config = BertConfig(
                vocab_size=tokenizer.vocab_size,
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=2,
                intermediate_size=64,
                max_position_embeddings=128,
                num_labels=num_labels,
            )
            model = BertForSequenceClassification(config).eval()
            out = tmp_path_factory.mktemp(f"tiny_bert_{num_labels}")
            model.save_pretrained(out)
            tokenizer.save_pretrained(out)
            built[num_labels] = out
        return built[num_labels]

    return build
