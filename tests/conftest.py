"""Shared test setup: offline hubs, where GLUE rows come from, and a tiny random BERT.

The suite passes on a fresh clone with nothing beside it: tests read real rows from the
sample embedded in samples/glue, and the POS tagger shipped in nltk_data/ (pipeline/bundled.py).
The few tests about material the repository cannot hold (the full GLUE files: row counts,
QQP's malformed first row; the shared tagger the shipped one was copied from) ask for it with
`outside_material`, which finds it under $DISTILL_SHARED (default ../shared, or $GLUE_DIR for
the GLUE files) and skips with its reason where it is absent.

CI sets DISTILL_STRICT_SKIPS=1: there a skipped test fails, unless what it lacks is such
outside material. A test skipped in CI proves nothing, and everything else a test needs (the
SSH server, the S3 server) CI installs; with ../shared beside the clone nothing is skipped.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.bundled import SAMPLE_GLUE

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DISTILL_SHARED") or ROOT.parent / "shared")

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

OUTSIDE_SKIP = "needs material outside the repository"  # the one skip CI allows


def outside_material(relative: str, what: str, env: str | None = None) -> Path:
    """`relative` under the shared material ($DISTILL_SHARED, default ../shared), or `$env`
    where that is set; skips the calling test, exempt from strict mode, where it is absent."""
    path = Path(os.environ[env]) if env and os.environ.get(env) else SHARED / relative
    if not path.exists():
        how = f"set {env} or DISTILL_SHARED" if env else "set DISTILL_SHARED"
        pytest.skip(f"{OUTSIDE_SKIP}: {what}, none at {path} ({how})")
    return path


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("DISTILL_STRICT_SKIPS") == "1" and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if OUTSIDE_SKIP not in reason:
            report.outcome = "failed"
            report.longrepr = f"skipped where DISTILL_STRICT_SKIPS=1 (CI): {reason}; install what it needs in .ci/run"


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
    """The full GLUE files ($GLUE_DIR, else the shared glue/)."""
    path = outside_material("glue", "the full GLUE files", env="GLUE_DIR")
    if not (path / "SST-2" / "train.tsv").is_file():
        pytest.skip(f"{OUTSIDE_SKIP}: the full GLUE files, no SST-2/train.tsv under {path} (set GLUE_DIR)")
    return path


@pytest.fixture(scope="session")
def shared_nltk_data() -> Path:
    """The shared NLTK data the shipped tagger (nltk_data/) was copied from."""
    return outside_material("nltk_data", "the shared NLTK tagger")


@pytest.fixture(scope="session")
def sample_glue_dir() -> Path:
    """The real SST-2 and MNLI rows embedded in the repository (samples/glue/PROVENANCE.md)."""
    return SAMPLE_GLUE


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
