"""Dev scores of trained students with and without their backoff words (a paired ablation).

    python benchmarks/backoff_ablation.py models/student/sst2/distilled models/student/sst2/baseline

Scores each student directory on its task's first dev split twice: as trained, and with the
backoff words (`student.backoff_words`) dropped from the vocabulary so that words outside the
training vocabulary map to `<unk>` again. Training never sees a backoff word, so the second
score is what the same checkpoint gets without the feature. Also prints how many dev tokens
fall outside the training vocabulary and how many of those the backoff words cover.
Needs the prepared dev split (`dvc repro prepare@<task>`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.evaluate import load_eval_split  # noqa: E402
from pipeline.metrics import compute_metrics  # noqa: E402
from pipeline.models import Student, encode, load_student  # noqa: E402
from pipeline.models.vocab import UNK_ID, Vocab  # noqa: E402


def scores(student: Student, text_a: list[str], text_b: list[str] | None, labels: np.ndarray) -> str:
    spec = student.task.eval_splits[0]
    predictions = student.predict_logits(text_a, text_b).argmax(axis=1)
    metrics = compute_metrics(student.task, spec, predictions, labels)
    return " ".join(f"{k}={100 * v:.2f}" for k, v in metrics.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("students", nargs="+", type=Path, help="student directories")
    args = parser.parse_args()
    for path in args.students:
        student = load_student(path)
        split = load_eval_split(student.task, student.task.eval_splits[0])
        trained = student.config.vocab_size
        ids = np.concatenate([side.ids for side in encode(student.vocab, split.text_a, split.text_b)])
        unseen = (ids >= trained).sum() + (ids == UNK_ID).sum()
        print(
            f"{path}: {len(ids)} dev tokens, {unseen} outside the training vocabulary, "
            f"{(ids >= trained).sum()} of them backoff words"
        )
        print(f"  with backoff:    {scores(student, split.text_a, split.text_b, split.labels)}")
        student.vocab = Vocab(student.vocab.words[:trained], student.vocab.mask_policy)
        print(f"  without backoff: {scores(student, split.text_a, split.text_b, split.labels)}")


if __name__ == "__main__":
    main()
