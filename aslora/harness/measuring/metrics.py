"""GLUE's metrics, computed with scikit-learn and SciPy (the same formulas as ``evaluate``'s
``glue`` metric, whose scripts are not available offline)."""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef


def _pearson(p: np.ndarray, y: np.ndarray) -> float:
    return float(pearsonr(p, y)[0]) if np.std(p) > 0 and np.std(y) > 0 else 0.0


def _spearman(p: np.ndarray, y: np.ndarray) -> float:
    return float(spearmanr(p, y)[0]) if np.std(p) > 0 and np.std(y) > 0 else 0.0


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": lambda p, y: float(accuracy_score(y, p)),
    "f1": lambda p, y: float(f1_score(y, p)),  # binary, positive class 1 (MRPC, QQP)
    "macro_f1": lambda p, y: float(f1_score(y, p, average="macro")),
    "mcc": lambda p, y: float(matthews_corrcoef(y, p)),  # CoLA
    "pearson": _pearson,  # STS-B
    "spearman": _spearman,
}


LOWER_IS_BETTER = frozenset({"loss", "perplexity"})
"""Metrics where smaller is better (instruction tuning's held-out token loss and perplexity)."""


def is_better(name: str, value: float, best: float | None) -> bool:
    """Whether ``value`` of metric ``name`` beats ``best`` (``None``: nothing yet)."""
    if best is None:
        return True
    return value < best if name in LOWER_IS_BETTER else value > best


def compute_metrics(names: tuple[str, ...], predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """``{name: value}`` for each metric; ``predictions`` are class ids, or scores for regression."""
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; known: {sorted(METRICS)}")
    return {name: METRICS[name](predictions, labels) for name in names}
