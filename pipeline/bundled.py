"""Data shipped inside the repository, so that a fresh clone runs with no download step.

- `nltk_data/`: NLTK's English averaged-perceptron POS tagger, which augmentation tags with
  (MIT licence; `nltk_data/PROVENANCE.md`).
- `samples/glue/`: a few hundred real SST-2 and MNLI rows in the GLUE layout, which the smoke
  profile (`profiles/smoke.args`) and the tests read (`samples/glue/PROVENANCE.md`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NLTK_DATA = ROOT / "nltk_data"
SAMPLE_GLUE = ROOT / "samples" / "glue"


def use_bundled_nltk_data() -> None:
    """Make NLTK look for data in `nltk_data/` after `$NLTK_DATA` and before its defaults.

    A tagger the user points `$NLTK_DATA` at still wins; otherwise every machine tags with
    the shipped copy rather than whatever `~/nltk_data` happens to hold, so teammates'
    transfer sets match. NLTK reads `$NLTK_DATA` once, when imported: the directory is added
    to the variable (which worker processes inherit) and, when NLTK is already imported, to
    `nltk.data.path` as well.
    """
    bundled = str(NLTK_DATA)
    entries = [p for p in os.environ.get("NLTK_DATA", "").split(os.pathsep) if p]
    if bundled not in entries:
        os.environ["NLTK_DATA"] = os.pathsep.join([*entries, bundled])
    nltk_data = sys.modules.get("nltk.data")
    if nltk_data is not None and bundled not in nltk_data.path:
        nltk_data.path.append(bundled)
