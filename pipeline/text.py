"""The one word tokenizer every model sees (METHOD.md §0.3, §0.5).

Augmentation tokenises with NLTK's Treebank word tokenizer (rules only: no sentence splitting,
so no `punkt` data is needed) and writes tokens joined by single spaces. Originals go through
the same function, so teacher and student read exactly the same string for every row, and
the student's own tokenizer is a plain whitespace split.
"""

from __future__ import annotations

from functools import lru_cache

from nltk.tokenize import TreebankWordTokenizer

MASK_TOKEN = "[MASK]"


@lru_cache(maxsize=1)
def _treebank() -> TreebankWordTokenizer:
    return TreebankWordTokenizer()


def word_tokenize(text: str) -> list[str]:
    return _treebank().tokenize(text)


def normalize(text: str) -> str:
    """Tokenise and re-join with single spaces: the canonical text of a row."""
    return " ".join(word_tokenize(text))
