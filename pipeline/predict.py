"""`predict`: classify texts with a trained student, from arguments, a file or stdin.

Every input is read and checked (encoding, TAB layout for pair tasks, length) before the
first line is printed, so a failing call writes nothing to stdout: a script that pipes the
output never sees a header without rows.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from pipeline.errors import PipelineError
from pipeline.logs import get_logger
from pipeline.params import DataParams
from pipeline.text import normalize

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
        name, lines = "stdin", sys.stdin
    elif file.is_dir():
        raise PipelineError(f"{file}: is a directory, not a file of texts (one per line)")
    elif not file.is_file():
        raise PipelineError(f"{file}: file not found")
    else:
        name, lines = str(file), file.open(encoding="utf-8")
    try:
        inputs += [(f"{name} line {n}", line.rstrip("\r\n")) for n, line in _numbered(lines) if line.strip()]
    finally:
        if lines is not sys.stdin:
            lines.close()
    return inputs


def _numbered(lines) -> Iterator[tuple[int, str]]:
    n = 0
    try:
        for n, line in enumerate(lines, start=1):
            yield n, line
    except UnicodeDecodeError as exc:
        name = getattr(lines, "name", "stdin")
        raise PipelineError(
            f"{name} line {n + 1}: not UTF-8 ({exc.reason} at byte {exc.start}); "
            "convert it, e.g. iconv -f latin1 -t utf-8"
        ) from None


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


def main(model_dir: Path, texts: list[str], file: Path | None, batch_size: int) -> None:
    """Print one TSV row per input: label, class probabilities, the input text."""
    from pipeline.models import load_student

    if not texts and file is None:
        raise PipelineError("nothing to classify: give texts as arguments or --file (one per line, '-' for stdin)")
    student = load_student(model_dir)
    task, is_pair = student.task, student.config.is_pair
    rows = [split_input(where, text, is_pair, task.name) for where, text in read_inputs(texts, file)]
    text_columns = ["text_a", "text_b"] if is_pair else ["text_a"]
    print("\t".join(["label", *(f"p_{name}" for name in task.label_names), *text_columns]))
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        text_a = [normalize(a) for a, _ in chunk]
        text_b = [normalize(b) for _, b in chunk] if is_pair else None
        logits = student.predict_logits(text_a, text_b, batch_size)
        probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        for (a, b), p in zip(chunk, probabilities):
            shown = [a, b] if is_pair else [a]
            print("\t".join([task.label_names[int(p.argmax())], *(f"{x:.4f}" for x in p), *shown]))
    sys.stdout.flush()
