"""GLUE metrics with the standard key names (`eval_accuracy`, `eval_f1`, `_mm` for MNLI mismatched).

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


_METRICS = {"accuracy": accuracy, "f1": f1_positive}


def compute_metrics(
    task: TaskSpec, split: SplitSpec, predictions: np.ndarray, labels: np.ndarray
) -> dict[str, float]:
    """The task's metrics on one split, keyed like `eval_accuracy` / `eval_accuracy_mm`."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    return {
        f"eval_{name}{split.metric_suffix}": _METRICS[name](predictions, labels)
        for name in task.metrics
    }


def primary_metric(task: TaskSpec) -> str:
    """The key used to pick the best epoch: the first metric on the first eval split."""
    return f"eval_{task.metrics[0]}{task.eval_splits[0].metric_suffix}"
