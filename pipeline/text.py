"""The one word tokenizer every model sees (METHOD.md §0.3, §0.5).

Augmentation tokenises with NLTK's Treebank word tokenizer (rules only: no sentence splitting,
so no `punkt` data is needed) and writes tokens joined by single spaces. Originals go through
the same function, so teacher and student read exactly the same string for every row, and
the student's own tokenizer is a plain whitespace split. Augmentation also POS-tags the
training text with the tagger `nltk.pos_tag` uses (`PosTagger` below).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from functools import lru_cache

import nltk
from nltk.tag.perceptron import PerceptronTagger
from nltk.tokenize import TreebankWordTokenizer

from pipeline.errors import PipelineError

MASK_TOKEN = "[MASK]"


@lru_cache(maxsize=1)
def _treebank() -> TreebankWordTokenizer:
    return TreebankWordTokenizer()


def word_tokenize(text: str) -> list[str]:
    return _treebank().tokenize(text)


def normalize(text: str) -> str:
    """Tokenise and re-join with single spaces: the canonical text of a row."""
    return " ".join(word_tokenize(text))


# --------------------------------------------------------------------------- POS tagging

TAGGER_NAME = "averaged_perceptron_tagger_eng"
TAGGER_RESOURCE = f"taggers/{TAGGER_NAME}"
TAGGER_FILES = tuple(f"{TAGGER_NAME}.{part}.json" for part in ("weights", "tagdict", "classes"))
TAGGER_MEMO_LIMIT = 1 << 20  # memoised contexts per process before the memo is cleared (memory bound)


def tagger_identity() -> dict[str, str]:
    """Which tagger `nltk.pos_tag` would use: its resource name, content hash and NLTK version.

    Raises one `PipelineError` naming `NLTK_DATA` and the download command when the tagger is
    missing, so a stage can check this before any expensive work.
    """
    digest = hashlib.sha256()
    for name in TAGGER_FILES:
        try:
            pointer = nltk.data.find(f"{TAGGER_RESOURCE}/{name}")
        except LookupError:
            raise PipelineError(
                f"NLTK POS tagger {TAGGER_RESOURCE} not found "
                f"(NLTK_DATA={os.environ.get('NLTK_DATA', '<unset>')}): point NLTK_DATA at a "
                f"directory holding it, or run `python -m nltk.downloader {TAGGER_NAME}`"
            ) from None
        with pointer.open() as fh:
            digest.update(name.encode() + b"\0" + hashlib.sha256(fh.read()).digest())
    return {"resource": TAGGER_RESOURCE, "sha256": digest.hexdigest(), "nltk": nltk.__version__}


class PosTagger:
    """The tagger `nltk.pos_tag` uses (averaged perceptron, Penn tags), memoised per context.

    The perceptron scores token i from the word, the two previous predicted tags and the
    normalised words at i-2..i+2 (`PerceptronTagger._get_features`), so a prediction cached
    on exactly those inputs is the prediction NLTK would make. SST-2's training rows are
    phrases of the same sentences and share most contexts: the memo makes tagging about 3x
    faster with identical output (tests/test_augment.py compares with `nltk.pos_tag`).
    """

    def __init__(self) -> None:
        tagger_identity()  # the clear error when the tagger is missing
        self._tagger = PerceptronTagger(lang="eng")
        self._memo: dict[tuple[str, ...], str] = {}

    def tag(self, tokens: Sequence[str]) -> list[str]:
        """Penn tags of `tokens`, the sentence tagged as a whole (same as `nltk.pos_tag`)."""
        tagger = self._tagger
        if len(self._memo) > TAGGER_MEMO_LIMIT:
            self._memo.clear()
        context = [*tagger.START, *map(tagger.normalize, tokens), *tagger.END]
        prev, prev2 = tagger.START
        tags = []
        for i, word in enumerate(tokens):
            tag = tagger.tagdict.get(word)
            if not tag:
                key = (word, prev, prev2, *context[i : i + 5])
                tag = self._memo.get(key)
                if tag is None:
                    features = tagger._get_features(i, word, context, prev, prev2)
                    tag, _ = tagger.model.predict(features)
                    self._memo[key] = tag
            tags.append(tag)
            prev2, prev = prev, tag
        return tags


@lru_cache(maxsize=1)
def pos_tagger() -> PosTagger:
    """This process's tagger (loading the weights takes a moment; the memo grows with use)."""
    return PosTagger()
