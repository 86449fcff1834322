"""`predict`: classify texts with a trained student or its export, from arguments, a file or stdin.

Every input is read and checked (encoding, TAB layout for pair tasks, length) before the
first line is printed, so a failing call writes nothing to stdout: a script that pipes the
output never sees a header from a call that failed. An input with no texts (an empty file,
or nothing on stdin) is not a failure: it prints the header alone and exits 0, a table with
no rows (docs/export.md says the same).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipeline.errors import PipelineError
from pipeline.io import decode_utf8, require_file
from pipeline.logs import get_logger
from pipeline.params import DataParams
from pipeline.serve import FP32_FILE, MANIFEST_FILE, ExportedStudent, load_export, softmax
from pipeline.text import normalize

if TYPE_CHECKING:
    from pipeline.models import Student

log = get_logger("predict")

# The same bound as `data.max_text_chars` for training rows: a longer input is refused rather
# than allowed to grow the student's memory with its length.
MAX_TEXT_CHARS: int = DataParams.model_fields["max_text_chars"].default


def read_inputs(texts: Sequence[str], file: Path | None) -> list[tuple[str, str]]:
    """(where, text) for every input: the arguments, then the file's or stdin's non-blank lines."""
    inputs = [(f"argument {n}", text) for n, text in enumerate(texts, start=1)]
    if file is None:
        return inputs
    if str(file) == "-":
        name, data = "stdin", sys.stdin.buffer.read()
    else:
        require_file(file, "file", "one text per line, or '-' for stdin")
        name, data = str(file), file.read_bytes()
    # Decoded whole, not line by line: a stream decodes ahead in blocks, so its line count
    # at a decoding error is not the bad byte's line.
    lines = enumerate(decode_utf8(data, name).split("\n"), start=1)
    return inputs + [(f"{name} line {n}", line.rstrip("\r")) for n, line in lines if line.strip()]


def split_input(where: str, text: str, is_pair: bool, task: str) -> tuple[str, str | None]:
    """One input as (text_a, text_b), checked against the task's shape and the length bound."""
    if len(text) > MAX_TEXT_CHARS:
        raise PipelineError(
            f"{where}: {len(text):,} characters, over the limit of {MAX_TEXT_CHARS:,}; split or shorten it"
        )
    parts = text.split("\t")
    if is_pair and len(parts) != 2:
        raise PipelineError(f"{where}: the {task} student classifies pairs: give 'text_a<TAB>text_b'")
    if not is_pair and len(parts) != 1:
        raise PipelineError(f"{where}: the {task} student classifies single sentences, got a TAB-separated pair")
    for part in parts:
        if not part.strip():
            log.warning("%s: empty text; the student sees only unknown words, so the label is a guess", where)
    return parts[0], parts[1] if is_pair else None


class RawTextStudent:
    """A PyTorch student behind the export runtime's interface: raw text in, probabilities out."""

    def __init__(self, student: Student) -> None:
        self.student = student
        self.task = student.config.task
        self.label_names = student.config.label_names
        self.is_pair = student.config.is_pair

    def predict_proba(self, text_a: Sequence[str], text_b: Sequence[str] | None, batch_size: int) -> np.ndarray:
        text_b = None if text_b is None else [normalize(b) for b in text_b]
        return softmax(self.student.predict_logits([normalize(a) for a in text_a], text_b, batch_size))


def load_model(model_dir: Path) -> RawTextStudent | ExportedStudent:
    """An export directory (`models/export/T/V`, served by onnxruntime) or a student directory."""
    if any((model_dir / name).is_file() for name in (MANIFEST_FILE, FP32_FILE)):
        return load_export(model_dir, threads=None)
    from pipeline.models import load_student

    return RawTextStudent(load_student(model_dir))


def main(model_dir: Path, texts: list[str], file: Path | None, batch_size: int) -> None:
    """Print a header, then one TSV row per input: label, class probabilities, the input text
    (no inputs in the file or on stdin: the header alone)."""
    if not texts and file is None:
        raise PipelineError("nothing to classify: give texts as arguments or --file (one per line, '-' for stdin)")
    model = load_model(model_dir)
    is_pair = model.is_pair
    rows = [split_input(where, text, is_pair, model.task) for where, text in read_inputs(texts, file)]
    text_columns = ["text_a", "text_b"] if is_pair else ["text_a"]
    print("\t".join(["label", *(f"p_{name}" for name in model.label_names), *text_columns]))
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        text_b = [b for _, b in chunk] if is_pair else None
        probabilities = model.predict_proba([a for a, _ in chunk], text_b, batch_size)
        for (a, b), p in zip(chunk, probabilities):
            shown = [a, b] if is_pair else [a]
            print("\t".join([model.label_names[int(p.argmax())], *(f"{x:.4f}" for x in p), *shown]))
    sys.stdout.flush()
