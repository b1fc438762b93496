"""Intervals over seeds, for tables a reviewer can read (issue 14's protocol).

* ``median_interval``: the median of a score over seeds and a 95 % percentile-bootstrap interval
  of that median (resampling seeds with replacement; SciPy's ``stats.bootstrap``, fixed seed, so a
  table regenerates identically).
* ``paired_difference``: per seed, ``a − b`` of two adapters run with the same seed (same head
  initialisation and data order), its mean, and a 95 % percentile-bootstrap interval of the mean.
  Pairing removes the seed-to-seed variation both runs share, which an unpaired comparison of two
  medians would count twice.

With five seeds an interval is wide and the percentile bootstrap is a little too narrow (it cannot
see beyond the values it has): tables say "95 % bootstrap interval over N seeds", never more.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

CONFIDENCE = 0.95
RESAMPLES = 10_000
SEED = 0


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float
    n: int


def _bootstrap(values: np.ndarray, statistic) -> tuple[float, float]:
    if len(values) < 2 or np.all(values == values[0]):
        return float(statistic(values)), float(statistic(values))  # nothing to resample
    from scipy import stats

    result = stats.bootstrap(
        (values,),
        statistic,
        confidence_level=CONFIDENCE,
        n_resamples=RESAMPLES,
        method="percentile",
        random_state=SEED,
        vectorized=False,
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def median_interval(values: Sequence[float]) -> Interval:
    """Median over seeds with its 95 % percentile-bootstrap interval."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        raise ValueError("no values: a cell needs at least one seed")
    low, high = _bootstrap(values, np.median)
    return Interval(float(np.median(values)), low, high, int(values.size))


def paired_difference(a: Mapping[int, float], b: Mapping[int, float]) -> Interval:
    """Mean over shared seeds of ``a[seed] − b[seed]`` with its 95 % percentile-bootstrap interval.

    Raises:
        ValueError: the two share no seed.
    """
    seeds = sorted(set(a) & set(b))
    if not seeds:
        raise ValueError(f"no seed in common: {sorted(a)} vs {sorted(b)}")
    differences = np.array([a[s] - b[s] for s in seeds], dtype=float)
    low, high = _bootstrap(differences, np.mean)
    return Interval(float(differences.mean()), low, high, len(seeds))


def format_interval(interval: Interval, digits: int = 1, signed: bool = False) -> str:
    """``77.1 [76.0, 78.3]`` (``+1.2 [−0.4, 2.9]`` with ``signed``)."""
    sign = "+" if signed else ""
    return f"{interval.estimate:{sign}.{digits}f} [{interval.low:.{digits}f}, {interval.high:.{digits}f}]"
