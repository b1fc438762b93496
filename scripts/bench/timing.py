"""How every benchmark times and what it writes: one step timed (synchronised on CUDA), methods
timed in rounds each beside a step of their limit (:func:`paired_times`), a median over rounds with
its distribution-free 95 % interval and n (:func:`round_summary`), and the JSON report under
``results/bench/``.
"""

from __future__ import annotations

import json
import random
import statistics
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch

from hydra_glue import ROOT
from scripts.reports.stats import median_interval

if TYPE_CHECKING:
    from scripts.bench.trainees import Trainee


MIN_ROUNDS = 6
"""The fewest rounds whose median ratio has a 95 % interval (``scripts.reports.stats.median_interval``)."""


BENCH_OUTPUTS = ("results",)
"""Where the benchmarks write (their JSON, results/README.md's tables): ``make bench`` rewrites tracked
files there one benchmark after another, which leaves the code each one runs the commit's."""


def timed(fn: Callable[[], Any], device: str) -> float:
    """Seconds ``fn()`` takes; on CUDA between two synchronisations, so the kernels it queued count."""
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def paired_times(
    trainees: dict[Any, "Trainee"], limit_of: Callable[[Any], Any], batch: dict, repeats: int, device: str
) -> tuple[dict[Any, list[float]], dict[Any, list[float]]]:
    """``repeats`` rounds; in each, every method (in an order shuffled each round, seeded) is timed
    for one step right beside one step of its limit (``limit_of(key)``), the two in random order.

    Returns ``(times, limits)``: ``times[key][k]`` is the method's step in round ``k`` and
    ``limits[key][k]`` the limit's step timed next to it. On a shared machine step times drift by
    tens of per cent over a minute; a ratio of two steps taken seconds apart keeps that drift, one of
    two adjacent steps cancels it. A limit's own entries are one step each, its own reference.
    """
    order, rng = list(trainees), random.Random(0)
    times: dict[Any, list[float]] = {key: [] for key in order}
    limits: dict[Any, list[float]] = {key: [] for key in order}

    def step(key: Any) -> float:
        return timed(lambda: trainees[key].step(batch), device)

    for _ in range(repeats):
        rng.shuffle(order)
        for key in order:
            if limit_of(key) == key:
                times[key].append(step(key))
                limits[key].append(times[key][-1])
            elif rng.random() < 0.5:
                limits[key].append(step(limit_of(key)))
                times[key].append(step(key))
            else:
                times[key].append(step(key))
                limits[key].append(step(limit_of(key)))
    return times, limits


def round_ratio(numerator: list[float], denominator: list[float]) -> dict[str, Any]:
    """The median over rounds of ``t_a,k / t_b,k`` — two steps timed in the same round, so what the
    machine did in that round cancels — with its interval (:func:`round_summary`)."""
    return round_summary([a / b for a, b in zip(numerator, denominator, strict=True)])


def round_summary(values: list[float]) -> dict[str, Any]:
    """The median of one value per round with its distribution-free 95 % interval and n
    (:func:`scripts.reports.stats.median_interval`); ``low``/``high`` ``None`` below the ``MIN_ROUNDS`` an
    interval needs (a dry run's single round)."""
    if len(values) < MIN_ROUNDS:
        return {"median": statistics.median(values), "low": None, "high": None, "n": len(values), "coverage": None}
    return asdict(median_interval(values))


def format_ratio(ratio: dict[str, float]) -> str:
    """``1.006 [0.998, 1.013]`` (``1.006 (n=1)`` below ``MIN_ROUNDS``)."""
    if ratio["low"] is None:
        return f"{ratio['median']:.3f} (n={ratio['n']})"
    return f"{ratio['median']:.3f} [{ratio['low']:.3f}, {ratio['high']:.3f}]"


def write_report(report: dict[str, Any], out: str | None, prefix: str) -> None:
    """``report`` as JSON at ``out``, or at ``results/bench/<prefix><model>_<device>.json``."""
    path = Path(out) if out else ROOT / "results" / "bench" / f"{prefix}{_device_slug(report)}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


def _device_slug(report: dict[str, Any]) -> str:
    device = report["environment"]["device"].lower()
    kind = "cuda" if report["device"] == "cuda" else "cpu"
    dtype = "" if report.get("dtype", "float32") == "float32" else f"{report['dtype']}_"
    return f"{report['model']}_{kind}_{dtype}" + "".join(c if c.isalnum() else "-" for c in device).strip("-")[:40]
