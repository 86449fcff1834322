"""Where a binary task's F1 goes: predicted positive rate, precision, recall, the best F1 over
thresholds (ranking) against the argmax F1 (calibration), and ROC AUC, for the teacher and the
served students on the dev split.

    python benchmarks/pair_f1_analysis.py                    # QQP, the recorded models
    python benchmarks/pair_f1_analysis.py --task qqp --no-teacher

Students are scored through their exports (`models/export/T/V`, fp32, which predict exactly
what the PyTorch students do) from the prepared text, the teacher from the canonical text the
pipeline trains it on, in fp32 at batch 64, so its accuracy can differ from
evaluate's batch-512 figure by a pair or two. Positive class: label 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import paths  # noqa: E402
from pipeline.bert import load_teacher  # noqa: E402
from pipeline.evaluate import load_eval_split  # noqa: E402
from pipeline.serve import load_export, softmax  # noqa: E402
from pipeline.tasks import get_task  # noqa: E402

THRESHOLDS = np.linspace(0.02, 0.98, 49)


def summary(gold: np.ndarray, p_positive: np.ndarray) -> dict[str, float]:
    pred = p_positive > 0.5
    tp = np.sum(pred & (gold == 1))
    precision, recall = tp / max(pred.sum(), 1), tp / np.sum(gold == 1)
    f1_at = [2 * np.sum((p_positive > t) & (gold == 1)) / (np.sum(p_positive > t) + np.sum(gold == 1)) for t in THRESHOLDS]
    ranks = np.empty(len(p_positive))
    ranks[np.argsort(p_positive, kind="stable")] = np.arange(1, len(p_positive) + 1)
    positives = np.sum(gold == 1)
    auc = (ranks[gold == 1].sum() - positives * (positives + 1) / 2) / (positives * (len(gold) - positives))
    return {
        "acc": 100 * np.mean(pred == gold),
        "positive_rate": pred.mean(),
        "precision": precision,
        "recall": recall,
        "f1": 100 * 2 * precision * recall / (precision + recall),
        "best_f1": 100 * max(f1_at),
        "best_threshold": THRESHOLDS[int(np.argmax(f1_at))],
        "auc": auc,
    }


def teacher_p_positive(task, text_a, text_b) -> np.ndarray:
    model, tokenizer = load_teacher(paths.teacher_dir(task.name), task)
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(text_a), 64):
            enc = tokenizer(text_a[i : i + 64], text_b[i : i + 64] if text_b else None, truncation=True,
                            max_length=128, padding=True, return_tensors="pt")  # fmt: skip
            out.append(torch.softmax(model(**enc).logits.float(), -1)[:, 1].numpy())
    return np.concatenate(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="qqp")
    parser.add_argument("--no-teacher", action="store_true", help="students only (seconds, not minutes)")
    args = parser.parse_args()
    task = get_task(args.task)
    torch.set_num_threads(1)
    dev = load_eval_split(task, task.eval_splits[0])
    gold = np.asarray(dev.labels)
    print(f"{task.name} {task.eval_splits[0].name}: {len(gold)} rows, gold positive rate {gold.mean():.3f}")
    models = {v: load_export(paths.export_dir(task.name, v)) for v in paths.STUDENT_VARIANTS}
    probabilities = {v: softmax(m.predict_logits(dev.raw_a, dev.raw_b))[:, 1] for v, m in models.items()}
    if not args.no_teacher:
        probabilities["teacher"] = teacher_p_positive(task, dev.text_a, dev.text_b)
    print("| model | acc | predicted positive rate | precision | recall | F1 (argmax) | best F1 over thresholds | ROC AUC |")
    print("|---|---|---|---|---|---|---|---|")
    for name, p in probabilities.items():
        s = summary(gold, p)
        print(f"| {name} | {s['acc']:.2f} | {s['positive_rate']:.3f} | {s['precision']:.3f} | {s['recall']:.3f} "
              f"| {s['f1']:.2f} | {s['best_f1']:.2f} @ {s['best_threshold']:.2f} | {s['auc']:.3f} |")


if __name__ == "__main__":
    main()
