"""scripts/reports/stats.py: intervals that cover what they claim (simulated), an exact permutation p-value
(counted by hand), TOST and Holm on constructed inputs, and the minimal detectable effect."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats as sps

from scripts.reports.stats import (
    crossed,
    crossed_moments,
    format_median,
    format_paired,
    holm,
    mde,
    median_interval,
    median_range,
    min_p,
    paired,
    sign_flip_p,
    t_interval,
    tost,
)

DRAWS = 20_000


def _t_coverage(n: int, rng: np.random.Generator) -> float:
    """Vectorised: the share of DRAWS samples of n normal paired differences (true mean 0.7, SD 1.4,
    the small-data suite's) whose 95 % t-interval holds the true mean."""
    d = rng.normal(0.7, 1.4, size=(DRAWS, n))
    half = sps.t.ppf(0.975, n - 1) * d.std(axis=1, ddof=1) / np.sqrt(n)
    return float(np.mean(np.abs(d.mean(axis=1) - 0.7) <= half))


def _percentile_bootstrap_coverage(n: int, rng: np.random.Generator, resamples: int = 1_000) -> float:
    """The interval the reports used before (percentile bootstrap of the mean over seeds), same draws."""
    d = rng.normal(0.7, 1.4, size=(DRAWS // 4, n))
    picks = rng.integers(0, n, size=(DRAWS // 4, resamples, n))
    means = np.take_along_axis(d[:, None, :].repeat(resamples, 1), picks, axis=2).mean(axis=2)
    low, high = np.quantile(means, [0.025, 0.975], axis=1)
    return float(np.mean((low <= 0.7) & (0.7 <= high)))


@pytest.mark.parametrize("n", [5, 20])
def test_the_t_interval_covers_95_percent_of_normal_paired_differences(n):
    coverage = _t_coverage(n, np.random.default_rng(n))
    assert 0.935 <= coverage <= 0.965, coverage


def test_the_old_percentile_bootstrap_fails_the_same_coverage_check_at_five_seeds():
    # what the check is for: the interval the reports printed before covered ~84 % at n = 5
    coverage = _percentile_bootstrap_coverage(5, np.random.default_rng(0))
    assert coverage < 0.90, coverage


def test_t_interval_matches_the_formula():
    values = [1.0, 2.0, 4.0, 7.0]
    low, high = t_interval(values)
    half = sps.t.ppf(0.975, 3) * np.std(values, ddof=1) / 2
    assert (low, high) == pytest.approx((3.5 - half, 3.5 + half))
    assert t_interval([2.0]) == (2.0, 2.0)


def test_sign_flip_p_equals_a_hand_count_over_every_sign_vector():
    d = [0.4, -1.2, 2.0, 0.9, 1.5, -0.3]
    observed = abs(sum(d))
    count = sum(
        abs(sum(s * x for s, x in zip(signs, d, strict=True))) >= observed - 1e-12
        for signs in itertools.product((1, -1), repeat=6)
    )
    assert sign_flip_p(d) == pytest.approx(count / 64)


def test_sign_flip_p_cannot_reach_0_05_at_five_seeds_of_one_sign():
    assert sign_flip_p([1.0, 2.0, 3.0, 4.0, 5.0]) == pytest.approx(2 / 32) == pytest.approx(min_p(5))
    assert sign_flip_p([1.0] * 10) == pytest.approx(2 / 1024)
    with pytest.raises(ValueError, match="exact sign-flip"):
        sign_flip_p([1.0] * 23)


def test_paired_uses_only_shared_seeds_and_refuses_none():
    result = paired({1: 2.0, 2: 4.0, 9: 100.0}, {1: 1.0, 2: 1.0, 3: 0.0})
    assert result.seeds == (1, 2) and result.differences == (1.0, 3.0) and result.mean == pytest.approx(2.0)
    with pytest.raises(ValueError, match="no seed in common"):
        paired({1: 1.0}, {2: 1.0})


def test_tost_against_the_90_percent_interval():
    rng = np.random.default_rng(3)
    inside = rng.normal(0.1, 0.5, 20)
    low, high = t_interval(inside, confidence=0.90)
    assert -1 < low and high < 1
    assert tost(inside, 1.0) < 0.05  # the 90 % interval inside the margin ⇔ TOST at 0.05
    low, high = t_interval(inside, confidence=0.90)
    assert tost(inside, max(abs(low), abs(high)) * 0.99) > 0.05  # a margin the interval crosses
    assert tost(inside, max(abs(low), abs(high)) * 1.01) < 0.05
    with pytest.raises(ValueError, match="margin"):
        tost(inside, 0.0)


def test_tost_decision_flips_with_the_margin():
    d = [-0.7, -0.2, -0.5, -0.9, -0.4, -0.6, -0.3, -0.8]  # mean −0.55, a tight spread
    assert tost(d, 1.0) < 0.05
    assert tost(d, 0.5) > 0.05


def test_holm_on_constructed_p_values():
    # sorted 0.01, 0.02, 0.03, 0.04 × (4, 3, 2, 1) = 0.04, 0.06, 0.06, 0.04 → running max 0.04, 0.06, 0.06, 0.06
    assert holm([0.03, 0.01, 0.04, 0.02]) == pytest.approx([0.06, 0.04, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([0.01]) == [0.01]


def test_mde_matches_the_formula_and_the_issue_s_numbers():
    # SD 1.4 points: five seeds detect about 2.4 points at 80 % power, twenty about 1
    assert mde(1.4, 5) == pytest.approx((sps.t.ppf(0.975, 4) + sps.t.ppf(0.8, 4)) * 1.4 / np.sqrt(5))
    assert 2.2 < mde(1.4, 5) < 2.6
    assert 0.9 < mde(1.4, 20) < 1.0
    assert mde(1.4, 1) == float("inf")


def test_mde_has_80_percent_power_by_simulation():
    rng = np.random.default_rng(11)
    n, sd = 20, 1.4
    d = rng.normal(mde(sd, n), sd, size=(DRAWS, n))
    t = d.mean(axis=1) / (d.std(axis=1, ddof=1) / np.sqrt(n))
    power = np.mean(np.abs(t) > sps.t.ppf(0.975, n - 1))
    assert 0.78 <= power <= 0.82, power


def test_formats_show_n_and_values_below_five_seeds():
    assert format_median([77.0, 76.6, 78.4, 77.2, 76.9]) == "77.0 (76.6–78.4, n=5)"
    assert median_range([1.0, 3.0]) == (2.0, 1.0, 3.0, 2)
    few = paired({1: 86.6, 2: 85.4}, {1: 88.2, 2: 86.0})
    assert format_paired(few) == "−1.1 (n=2: −1.6, −0.6)".replace("−", "-")
    many = paired({s: float(s) for s in range(1, 7)}, {s: 0.0 for s in range(1, 7)})
    assert format_paired(many).startswith("+3.5 [") and "n=6" in format_paired(many)
    with pytest.raises(ValueError):
        median_range([])


@pytest.mark.parametrize("n", [6, 10, 15, 30])
def test_the_median_interval_covers_what_it_says_for_heavy_tailed_timings(n):
    # step-time ratios: lognormal jitter around a true median of 1.02, and one round in ten hit by a
    # background process (+30 %): the order-statistic interval's coverage is the binomial formula's
    rng = np.random.default_rng(n)
    draws = 1.02 * np.exp(rng.normal(0, 0.03, size=(DRAWS, n)))
    hit = rng.random((DRAWS, n)) < 0.1
    draws = np.where(hit, draws * 1.3, draws)
    true_median = float(
        np.median(1.02 * np.exp(rng.normal(0, 0.03, 400_000)) * np.where(rng.random(400_000) < 0.1, 1.3, 1))
    )
    claimed = median_interval(draws[0]).coverage
    covered = np.mean([(lambda m: m.low <= true_median <= m.high)(median_interval(row)) for row in draws[:4000]])
    assert claimed >= 0.95
    assert abs(covered - claimed) < 0.015, (covered, claimed)


def test_the_median_interval_is_the_order_statistics_the_binomial_picks():
    values = [9.0, 1.0, 8.0, 2.0, 7.0, 3.0, 6.0, 4.0, 5.0, 0.0]  # n = 10: k = 2 (2·P(Bin ≤ 1) = 0.021)
    m = median_interval(values)
    assert (m.median, m.low, m.high, m.n) == (4.5, 1.0, 8.0, 10)
    assert m.coverage == pytest.approx(1 - 2 * sps.binom.cdf(1, 10, 0.5))
    with pytest.raises(ValueError, match="5 values hold no 95% interval"):
        median_interval([1.0, 2.0, 3.0, 4.0, 5.0])


# --- seeds × test examples ------------------------------------------------------------------------
def _crossed_draws(n: int, sd_seed: float, sd_example: float, rng: np.random.Generator, examples: int = 50):
    """DRAWS // 2 samples of d_sj = μ + a_s + b_j + e_sj (μ = 0.3, SD of e_sj 1): new seeds *and* new
    test examples in every sample, as another study of the task would draw them."""
    draws = DRAWS // 2
    return (
        0.3
        + rng.normal(0, sd_seed, (draws, n, 1))
        + rng.normal(0, sd_example, (draws, 1, examples))
        + rng.normal(0, 1.0, (draws, n, examples))
    )


@pytest.mark.parametrize("n", [5, 20])
@pytest.mark.parametrize("sd_seed,sd_example", [(1.0, 0.0), (0.2, 1.0), (0.5, 0.5)])
def test_the_crossed_interval_covers_95_percent_over_seeds_and_examples(n, sd_seed, sd_example):
    d = _crossed_draws(n, sd_seed, sd_example, np.random.default_rng(n))
    mean, half, _, _ = crossed_moments(d)
    coverage = float(np.mean(np.abs(mean - 0.3) <= half))
    assert 0.935 <= coverage <= 0.965, coverage


def test_the_seeds_interval_falls_short_once_the_examples_vary():
    # what the crossed interval is for: the t-interval over per-seed means holds the test set fixed
    n = 20
    d = _crossed_draws(n, 0.2, 1.0, np.random.default_rng(1))
    rows = d.mean(axis=-1)
    half = sps.t.ppf(0.975, n - 1) * rows.std(axis=1, ddof=1) / np.sqrt(n)
    assert float(np.mean(np.abs(rows.mean(axis=1) - 0.3) <= half)) < 0.8


def test_the_crossed_variance_is_the_mean_squares_by_hand():
    d = np.array([[1.0, 0.0, 0.0, -1.0], [1.0, 1.0, 0.0, 0.0], [0.0, 1.0, 1.0, 0.0]])  # 3 seeds × 4 examples
    grand, rows, cols = d.mean(), d.mean(axis=1), d.mean(axis=0)  # 1/3; (0, 1/2, 1/2); (2/3, 2/3, 1/3, -1/3)
    ms_seeds = 4 * np.sum((rows - grand) ** 2) / 2  # 1/3
    ms_examples = 3 * np.sum((cols - grand) ** 2) / 3  # 2/3
    ms_resid = np.sum((d - rows[:, None] - cols[None, :] + grand) ** 2) / 6  # (6/9 + 1/3 + 1) / 6 = 1/3
    assert (ms_seeds, ms_examples, ms_resid) == pytest.approx((1 / 3, 2 / 3, 1 / 3))
    total = ms_seeds + ms_examples - ms_resid  # 2/3
    df = total**2 / (ms_seeds**2 / 2 + ms_examples**2 / 3 + ms_resid**2 / 6)
    result = crossed(d)
    assert result.mean == pytest.approx(1 / 3) and result.df == pytest.approx(df)
    assert result.high - result.mean == pytest.approx(sps.t.ppf(0.975, df) * np.sqrt(total / 12))
    assert result.examples_share == pytest.approx((ms_examples - ms_resid) / total)
    assert (result.n, result.examples) == (3, 4)


def test_without_an_example_effect_the_crossed_interval_is_the_seeds_t_interval():
    # every example moves with its seed alone: MS_examples = 0 < MS_resid is dropped, df = n − 1
    d = np.array([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]])
    result = crossed(d)
    assert (result.low, result.high) == pytest.approx(t_interval(d.mean(axis=1)))
    assert (result.df, result.examples_share) == (3, 0.0)
    with pytest.raises(ValueError, match=r"not shape \(5,\)"):
        crossed(np.zeros(5))


def test_the_crossed_interval_covers_right_minus_right_outcomes_as_the_runs_give_them():
    """Each cell 100·(right_a − right_b) ∈ {−100, 0, 100}, as in the runs: example easiness z_j, an
    example × arm effect g_j (most of the variance, as in the suite), a seed effect per arm;
    P(right) = Φ(·). The true difference is closed-form: E Φ(X) = Φ(m / √(1 + v)) for X ~ N(m, v)."""
    from scipy.stats import norm

    rng, n, examples, g = np.random.default_rng(7), 20, 200, 1.0
    v = 1.2**2 + 0.15**2 + g**2 / 4
    true = 100 * (norm.cdf(0.95 / np.sqrt(1 + v)) - norm.cdf(1.0 / np.sqrt(1 + v)))
    covered = 0
    for _ in range(5):  # 10,000 draws in five blocks (memory)
        draws = DRAWS // 10
        z, e = rng.normal(1.0, 1.2, (draws, 1, examples)), rng.normal(0, g, (draws, 1, examples))
        seed_a, seed_b = rng.normal(0, 0.15, (draws, n, 1)), rng.normal(0, 0.15, (draws, n, 1))
        right_a = rng.random((draws, n, examples)) < norm.cdf(z + seed_a - 0.05 + e / 2)
        right_b = rng.random((draws, n, examples)) < norm.cdf(z + seed_b - e / 2)
        mean, half, _, _ = crossed_moments(100 * (right_a.astype(float) - right_b))
        covered += int(np.sum(np.abs(mean - true) <= half))
    assert 0.935 <= covered / (DRAWS // 2) <= 0.965, covered
