"""Statistics over seeds that say what they cover (issue 35).

Every comparison in the reports is *paired by seed*: two arms run with the same seed share the head
initialisation and the data order, so ``d_s = a_s − b_s`` removes the variation they share. Over the
``n`` seeds both ran:

* ``paired(a, b)`` — the mean ``d̄``, its SD ``s``, a 95 % **t-interval** ``d̄ ± t_{0.975, n−1} s/√n``
  (covers 95 % at every n when the ``d_s`` are normal: ``tests/scripts/reports/test_stats.py`` simulates it;
  the percentile bootstrap the reports used before covered 84 % at n = 5 and is exactly [min, max] at
  n ≤ 3), and an **exact sign-flip permutation p-value**: under H0 (no difference) each ``d_s`` is as
  likely to be ``−d_s``, so ``p = #{signs : |mean(±d)| ≥ |d̄|} / 2ⁿ`` over all ``2ⁿ`` sign vectors. It
  needs no normality, but it cannot go below ``2 / 2ⁿ``: at n ≤ 5 no difference can be significant
  at 0.05 (``min_p``), which is why the plan asks for more seeds.
* ``tost(d, margin)`` — equivalence within ``±margin``: two one-sided t-tests, ``p = max(p_low, p_high)``
  (Schuirmann 1987). Equivalence at 0.05 ⇔ the 90 % t-interval lies inside ``(−margin, margin)``.
* ``holm(ps)`` — Holm's step-down adjustment within one declared family (controls the family-wise
  error rate with no assumption about how the tests depend on each other).
* ``mde(sd, n)`` — the smallest true mean difference a two-sided 0.05 paired t-test detects with 80 %
  power, ``(t_{0.975, n−1} + t_{0.8, n−1}) · sd / √n`` (the usual approximation, slightly optimistic
  at small n): what a design *could* have found.

* ``crossed(d)`` — the same mean when each seed's difference is itself a mean over the *same* ``N``
  test examples (``d[s, j]``: example ``j`` right in arm a minus right in arm b, seed ``s``). The
  t-interval above holds these ``N`` examples fixed: it says what another seed would do *on this test
  set*. To speak of the task's examples, the examples' own variation joins the seeds' (a crossed
  random-effects design, ``d_sj = μ + a_s + b_j + e_sj``): with the two-way mean squares ``MS_seeds``,
  ``MS_examples`` and ``MS_resid``, ``Var(d̄) = (MS_seeds + MS_examples − MS_resid) / (nN)`` estimates
  ``σ_a²/n + σ_b²/N + σ_e²/(nN)`` without bias, the interval is ``d̄ ± t_df · √Var`` with
  Satterthwaite's ``df``. The examples' term is dropped where its estimate ``MS_examples − MS_resid`` is
  negative, which leaves exactly the seeds' t-interval. (Simulated to 95 % in the tests — normal effects,
  and right-minus-right outcomes from a probit model — where the seeds' interval falls short once
  examples vary.) This is the sound form of the bootstrap "over seeds and test examples together":
  the pigeonhole bootstrap (Owen 2007, Ann. Appl. Stat.) estimates the same variance, biased upwards.

Below ``MIN_INTERVAL_N`` seeds a table shows the values themselves, not an interval. A median over
seeds is shown with its min–max and n, never with a "95 % interval" (at n = 5 the order-statistic
interval of a median *is* [min, max], with 94 % coverage, so it adds nothing to the range).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from scipy import stats as sps

CONFIDENCE = 0.95
ALPHA = 1 - CONFIDENCE
POWER = 0.80
MIN_INTERVAL_N = 5
"""Fewer seeds than this: show the values, not an interval."""
EXACT_LIMIT = 22
"""Up to this many seeds the sign-flip p enumerates all 2ⁿ sign vectors (4 M at 22)."""


@dataclass(frozen=True)
class Paired:
    """A seed-paired difference ``a − b``: the seeds, the per-seed differences and their summary."""

    seeds: tuple[int, ...]
    differences: tuple[float, ...]
    mean: float
    sd: float
    low: float
    """The 95 % t-interval's ends (equal to ``mean`` below 2 seeds)."""
    high: float
    p: float
    """Exact two-sided sign-flip permutation p-value of ``mean = 0``."""

    @property
    def n(self) -> int:
        return len(self.seeds)


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
    """``mean ± t_{(1+c)/2, n−1} · sd/√n`` (``(mean, mean)`` below two values)."""
    values = np.asarray(values, dtype=float)
    mean = float(values.mean())
    if values.size < 2:
        return mean, mean
    half = sps.t.ppf((1 + confidence) / 2, values.size - 1) * values.std(ddof=1) / np.sqrt(values.size)
    return mean - float(half), mean + float(half)


def _signs(n: int) -> np.ndarray:
    """All ``2ⁿ`` sign vectors as a ``(2ⁿ, n)`` array of ±1."""
    bits = (np.arange(2**n)[:, None] >> np.arange(n)[None, :]) & 1
    return 1 - 2 * bits.astype(np.int8)


def sign_flip_p(differences: Sequence[float]) -> float:
    """Exact two-sided sign-flip permutation p-value of the mean of ``differences`` (see the module).

    Raises:
        ValueError: no values, or more than ``EXACT_LIMIT`` (the enumeration would not fit).
    """
    d = np.asarray(differences, dtype=float)
    if d.size == 0:
        raise ValueError("no differences: a p-value needs at least one seed")
    if d.size > EXACT_LIMIT:
        raise ValueError(f"{d.size} seeds: the exact sign-flip enumeration stops at {EXACT_LIMIT}")
    observed = abs(d.sum())
    # meet in the middle: every signed sum is a signed sum of the first half plus one of the second,
    # so 2ⁿ sums come from two tables of 2^(n/2) (32 MB at n = 22, not a 2ⁿ × n matrix)
    half = d.size // 2
    sums = np.abs(np.add.outer(_signs(half) @ d[:half], _signs(d.size - half) @ d[half:]))
    # a relative tolerance: sums equal to the observed one in exact arithmetic count as "as extreme"
    return float(np.mean(sums >= observed - 1e-12 * max(1.0, observed)))


def min_p(n: int) -> float:
    """The smallest sign-flip p-value ``n`` seeds can give (all differences of one sign): ``2 / 2ⁿ``."""
    return min(1.0, 2.0 / 2**n)


def paired(a: Mapping[int, float], b: Mapping[int, float]) -> Paired:
    """``a − b`` over the seeds both ran (see the module).

    Raises:
        ValueError: the two share no seed.
    """
    seeds = tuple(sorted(set(a) & set(b)))
    if not seeds:
        raise ValueError(f"no seed in common: {sorted(a)} vs {sorted(b)}")
    d = np.array([a[s] - b[s] for s in seeds], dtype=float)
    low, high = t_interval(d)
    sd = float(d.std(ddof=1)) if d.size > 1 else float("nan")
    return Paired(seeds, tuple(float(x) for x in d), float(d.mean()), sd, low, high, sign_flip_p(d))


def tost(differences: Sequence[float], margin: float) -> float:
    """Two one-sided t-tests of ``−margin < mean < margin``: ``max`` of the two one-sided p-values.

    Raises:
        ValueError: a margin that is not positive, or fewer than two values (no SD).
    """
    if not margin > 0:
        raise ValueError(f"margin={margin!r}: an equivalence margin must be positive")
    d = np.asarray(differences, dtype=float)
    if d.size < 2:
        raise ValueError("TOST needs at least two seeds (an SD)")
    se = d.std(ddof=1) / np.sqrt(d.size)
    if se == 0:  # every seed the same difference: inside the margin or not, with certainty
        return 0.0 if abs(d.mean()) < margin else 1.0
    df = d.size - 1
    p_low = sps.t.sf((d.mean() + margin) / se, df)  # H0: mean ≤ −margin
    p_high = sps.t.cdf((d.mean() - margin) / se, df)  # H0: mean ≥ +margin
    return float(max(p_low, p_high))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given (each ``≤ 1``, monotone in rank)."""
    p = np.asarray(p_values, dtype=float)
    m = p.size
    order = np.argsort(p, kind="stable")
    adjusted = np.empty(m)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return [float(x) for x in adjusted]


@dataclass(frozen=True)
class Crossed:
    """A mean difference over seeds × test examples with its interval over both (:func:`crossed`)."""

    n: int
    """Seeds (rows)."""
    examples: int
    """Test examples (columns), the same in every seed."""
    mean: float
    low: float
    high: float
    df: float
    examples_share: float
    """The share of the mean's variance that comes from which examples were drawn (0: none detected)."""


def crossed_moments(
    d: np.ndarray, confidence: float = CONFIDENCE
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Vectorised over leading axes: ``d[..., seed, example]`` → ``(mean, half-width, df, examples' share)``.

    Two-way ANOVA without replication: ``MS_seeds = N·Σ(r_s − d̄)²/(n−1)``, ``MS_examples =
    n·Σ(c_j − d̄)²/(N−1)``, ``MS_resid = Σ(d_sj − r_s − c_j + d̄)²/((n−1)(N−1))`` with row means ``r``
    and column means ``c``. ``E[MS_seeds + MS_examples − MS_resid] = N·σ_a² + n·σ_b² + σ_e² = nN·Var(d̄)``.
    """
    d = np.asarray(d, dtype=float)
    n, big_n = d.shape[-2], d.shape[-1]
    grand = d.mean(axis=(-2, -1))
    rows, cols = d.mean(axis=-1), d.mean(axis=-2)
    ms_seeds = big_n * ((rows - grand[..., None]) ** 2).sum(-1) / (n - 1)
    ms_examples = n * ((cols - grand[..., None]) ** 2).sum(-1) / (big_n - 1)
    resid = d - rows[..., :, None] - cols[..., None, :] + grand[..., None, None]
    ms_resid = (resid**2).sum(axis=(-2, -1)) / ((n - 1) * (big_n - 1))
    example_term = np.maximum(ms_examples - ms_resid, 0.0)
    total = ms_seeds + example_term
    with np.errstate(divide="ignore", invalid="ignore"):  # every difference 0: a zero-width interval
        satterthwaite = total**2 / (
            ms_seeds**2 / (n - 1) + ms_examples**2 / (big_n - 1) + ms_resid**2 / ((n - 1) * (big_n - 1))
        )
        df = np.where(example_term > 0, satterthwaite, n - 1)
        df = np.where(np.isfinite(df), df, n - 1)
        share = np.where(total > 0, example_term / total, 0.0)
    half = sps.t.ppf((1 + confidence) / 2, df) * np.sqrt(total / (n * big_n))
    return grand, half, df, share


def crossed(d: np.ndarray, confidence: float = CONFIDENCE) -> Crossed:
    """The mean of ``d[seed, example]`` with its interval over seeds *and* test examples (module docstring).

    Raises:
        ValueError: not a 2-D array of at least two seeds and two examples.
    """
    d = np.asarray(d, dtype=float)
    if d.ndim != 2 or min(d.shape) < 2:
        raise ValueError(f"crossed() takes a seeds × examples array with 2 or more of each, not shape {d.shape}")
    mean, half, df, share = (float(x) for x in crossed_moments(d, confidence))
    return Crossed(d.shape[0], d.shape[1], mean, mean - half, mean + half, df, share)


def mde(sd: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """Minimal detectable mean paired difference at ``power`` for a two-sided ``alpha`` t-test."""
    if n < 2:
        return float("inf")
    df = n - 1
    return float((sps.t.ppf(1 - alpha / 2, df) + sps.t.ppf(power, df)) * sd / np.sqrt(n))


def median_range(values: Sequence[float]) -> tuple[float, float, float, int]:
    """``(median, min, max, n)`` of a score over seeds.

    Raises:
        ValueError: no values.
    """
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        raise ValueError("no values: a cell needs at least one seed")
    return float(np.median(values)), float(values.min()), float(values.max()), int(values.size)


@dataclass(frozen=True)
class MedianInterval:
    """A median with its distribution-free interval: the ``k``-th smallest and ``k``-th largest of
    the ``n`` values, which hold the true median with probability ``coverage`` for any continuous
    distribution (``1 − 2·P(Binomial(n, ½) < k)``), outliers included."""

    median: float
    low: float
    high: float
    n: int
    coverage: float


def median_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> MedianInterval:
    """The median of ``values`` and the order-statistic interval covering it at ``confidence`` or more.

    For timings: step times have a heavy right tail (a background process, a page fault), which a
    t-interval of the mean turns into a wide, skewed answer; the median's interval needs no model of
    the noise. ``k`` is the largest with ``2·P(Binomial(n, ½) ≤ k − 1) ≤ 1 − confidence``.

    Raises:
        ValueError: too few values for any interval at ``confidence`` (6 at 95 %: 2/2⁵ > 0.05).
    """
    values = np.sort(np.asarray(values, dtype=float))
    n = int(values.size)
    k = 0
    while 2 * sps.binom.cdf(k, n, 0.5) <= 1 - confidence:  # P(Bin < k + 1) small enough: k + 1 works
        k += 1
    if k == 0:
        raise ValueError(f"{n} values hold no {confidence:.0%} interval of their median; time more rounds")
    return MedianInterval(
        median=float(np.median(values)),
        low=float(values[k - 1]),
        high=float(values[n - k]),
        n=n,
        coverage=float(1 - 2 * sps.binom.cdf(k - 1, n, 0.5)),
    )


def format_median(values: Sequence[float], digits: int = 1) -> str:
    """``77.0 (76.6–78.4, n=5)``."""
    median, low, high, n = median_range(values)
    return f"{median:.{digits}f} ({low:.{digits}f}–{high:.{digits}f}, n={n})"


def format_differences(differences: Sequence[float], digits: int = 1) -> str:
    """Per-seed differences as every page lists them below ``MIN_INTERVAL_N`` seeds: ``−1.6, −0.6``."""
    return ", ".join(f"{d:+.{digits}f}" for d in differences)


def format_paired(result: Paired, digits: int = 1) -> str:
    """``−2.1 [−4.4, 0.2] (n=5, p=0.06)``; below ``MIN_INTERVAL_N`` seeds, the differences themselves:
    ``−1.1 (n=2: −1.6, −0.6)``."""
    if result.n < MIN_INTERVAL_N:
        return f"{result.mean:+.{digits}f} (n={result.n}: {format_differences(result.differences, digits)})"
    return f"{result.mean:+.{digits}f} [{result.low:+.{digits}f}, {result.high:+.{digits}f}] (n={result.n}, p={result.p:.2g})"
