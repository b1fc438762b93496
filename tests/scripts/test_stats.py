"""The interval and paired-difference code on inputs whose answers are known (issue 14)."""

from __future__ import annotations

import numpy as np
import pytest

from scripts.stats import format_interval, median_interval, paired_difference


def test_identical_seeds_give_a_point_interval():
    interval = median_interval([0.8, 0.8, 0.8, 0.8, 0.8])
    assert (interval.estimate, interval.low, interval.high, interval.n) == (0.8, 0.8, 0.8, 5)


def test_median_interval_brackets_the_median_within_the_data_and_is_reproducible():
    values = [76.2, 77.9, 75.1, 78.4, 76.8]
    interval = median_interval(values)
    assert interval.estimate == 76.8
    assert min(values) <= interval.low <= interval.estimate <= interval.high <= max(values)
    assert median_interval(values) == interval  # a fixed resampling seed: tables regenerate identically


def test_a_larger_sample_from_the_same_spread_narrows_the_interval():
    rng = np.random.default_rng(0)
    few, many = rng.normal(75, 1, 5), rng.normal(75, 1, 200)
    width = lambda i: i.high - i.low
    assert width(median_interval(many)) < width(median_interval(few))


def test_paired_difference_removes_what_the_seeds_share():
    """Seed effects of ±3 points shared by both adapters; ASLoRA is exactly 0.5 below LoRA on each
    seed: the paired difference is −0.5 with a point interval, though the medians' intervals overlap."""
    shared = {1: -3.0, 2: 0.0, 3: 3.0, 4: 1.5, 5: -1.5}
    lora = {seed: 76.0 + effect for seed, effect in shared.items()}
    aslora = {seed: value - 0.5 for seed, value in lora.items()}
    difference = paired_difference(aslora, lora)
    assert (difference.estimate, difference.low, difference.high, difference.n) == (-0.5, -0.5, -0.5, 5)
    assert median_interval(list(aslora.values())).high > median_interval(list(lora.values())).low  # unpaired: overlap


def test_paired_difference_uses_only_shared_seeds_and_refuses_none():
    assert paired_difference({1: 2.0, 2: 4.0, 9: 100.0}, {1: 1.0, 2: 1.0, 3: 0.0}).estimate == pytest.approx(2.0)
    with pytest.raises(ValueError, match="no seed in common"):
        paired_difference({1: 1.0}, {2: 1.0})


def test_formatting():
    interval = median_interval([1.0, 2.0, 3.0])
    assert format_interval(interval) == f"2.0 [{interval.low:.1f}, {interval.high:.1f}]"
    assert format_interval(paired_difference({1: 2.0}, {1: 1.0}), signed=True) == "+1.0 [1.0, 1.0]"
