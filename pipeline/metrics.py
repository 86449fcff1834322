"""Task metrics with the standard key names (`eval_accuracy`, `eval_f1`, `_mm` for MNLI mismatched).

Accuracy, F1 of the task's positive class (QQP, MRPC), macro-F1 (the mean over classes,
for imbalanced multi-class data of your own) and Matthews correlation (CoLA).

One function serves the teacher's epoch selection, the students' and the evaluate stage, so
all three score a split the same way.
"""

from __future__ import annotations

import numpy as np

from pipeline.tasks import SplitSpec, TaskSpec


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(predictions == labels)) if len(labels) else 0.0


def f1_positive(predictions: np.ndarray, labels: np.ndarray, positive: int = 1) -> float:
    """F1 of class `positive` (QQP's "duplicate"), 0 when it is never predicted nor present."""
    tp = int(np.sum((predictions == positive) & (labels == positive)))
    fp = int(np.sum((predictions == positive) & (labels != positive)))
    fn = int(np.sum((predictions != positive) & (labels == positive)))
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def macro_f1(predictions: np.ndarray, labels: np.ndarray, num_labels: int) -> float:
    """Mean F1 over the classes; a class neither predicted nor present scores 0, as in
    scikit-learn's `f1_score(average="macro", labels=range(num_labels))`."""
    return float(np.mean([f1_positive(predictions, labels, c) for c in range(num_labels)]))


def matthews(predictions: np.ndarray, labels: np.ndarray, num_labels: int) -> float:
    """Matthews correlation (multi-class form, Gorodkin 2004; scikit-learn's
    `matthews_corrcoef`), 0 when either side has a single class."""
    confusion = np.zeros((num_labels, num_labels), dtype=np.float64)
    np.add.at(confusion, (labels, predictions), 1)
    true_counts, predicted_counts = confusion.sum(axis=1), confusion.sum(axis=0)
    n, correct = confusion.sum(), np.trace(confusion)
    covariance = correct * n - predicted_counts @ true_counts
    spread = np.sqrt((n * n - predicted_counts @ predicted_counts) * (n * n - true_counts @ true_counts))
    return float(covariance / spread) if spread else 0.0


def compute_metrics(
    task: TaskSpec, split: SplitSpec, predictions: np.ndarray, labels: np.ndarray
) -> dict[str, float]:
    """The task's metrics on one split, keyed like `eval_accuracy` / `eval_accuracy_mm`."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    scorers = {
        "accuracy": lambda: accuracy(predictions, labels),
        "f1": lambda: f1_positive(predictions, labels, task.positive_class),
        "macro_f1": lambda: macro_f1(predictions, labels, task.num_labels),
        "matthews": lambda: matthews(predictions, labels, task.num_labels),
    }
    return {f"eval_{name}{split.metric_suffix}": scorers[name]() for name in task.metrics}


def primary_metric(task: TaskSpec) -> str:
    """The key used to pick the best epoch: the first metric on the first eval split."""
    return f"eval_{task.metrics[0]}{task.eval_splits[0].metric_suffix}"
