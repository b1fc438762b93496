"""Benchmark: does ASLoRA's overhead over the frozen-base limit grow with depth? In ONE process.

    python -m scripts.bench.depth                                    # CPU: 4…32 layers at width 256
    python -m scripts.bench.depth --width 4096 --device cuda --dtype bfloat16   # LLaMA-2-7B's q,v shapes

For each depth L, a RoBERTa-shaped encoder (random weights from its config, no Hub) of width
``--width`` is trained a few steps as the limit (frozen base, input gradients through every layer),
as PEFT LoRA and as ASLoRA (r = 8 on query and value; every tie done during warm-up, so the groups
hold L B's of which few are live). Each round times one step of every (depth, method), in an order
shuffled each round, each beside one step of the same depth's limit (``scripts.bench.timing.paired_times``). It prints, per L, each method's step over the limit's and its **overhead per
adapted layer**, ``(t_method − t_limit) / (2 L)`` from the two adjacent steps — medians over
rounds with their 95 % intervals — and the Theil–Sen slope of that overhead against L with its 95 %
interval: flat in L (the interval holds 0) means the cost of choosing a layer's B does not depend on
how many B's its group holds. Writes ``results/bench/depth_<device>.json``.

The batch decides what the overhead measures. A small one (``--batch-size 1 --seq-len 32``) keeps
every depth's activations in the CPU's caches: the overhead is the adapter's kernels and their
launches, where a cost of choosing among L B's would show. A larger one (the default 8 × 64) lets a
deep model's saved activations fall out of cache, and A's gradient must re-read each layer's input,
so every adapter's per-layer overhead can grow with L; the slope of ASLoRA's overhead minus PEFT
LoRA's, round by round, is what the map itself adds. ``make bench`` runs both.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from typing import Any

import torch
from scipy import stats as sps

from aslora.harness.runs.report import environment
from scripts.bench.timing import (
    BENCH_OUTPUTS,
    MIN_ROUNDS,
    format_ratio,
    paired_times,
    round_ratio,
    round_summary,
    write_report,
)
from scripts.bench.trainees import LIMIT, Trainee, method_configs, random_batch

METHODS = (LIMIT, "peft-lora", "aslora")


def build(layers: int, width: int, intermediate: int, device: str) -> torch.nn.Module:
    """A RoBERTa-shaped encoder, its random weights drawn on ``device`` (a 32-layer, 4,096-wide
    stack is billions of numbers: drawn on the CPU they would take minutes)."""
    from transformers import AutoModelForSequenceClassification, RobertaConfig

    config = RobertaConfig(
        hidden_size=width,
        num_hidden_layers=layers,
        num_attention_heads=max(1, width // 64),
        intermediate_size=intermediate,
        vocab_size=1000,
        num_labels=2,
    )
    with torch.device(device):
        return AutoModelForSequenceClassification.from_config(config)


def overheads(row: dict[str, Any]) -> list[float]:
    """A row's per-round overhead per adapted layer, ms: (step − adjacent limit step) / 2L."""
    return [
        1e3 * (a - b) / (2 * row["layers"])
        for a, b in zip(row["step_seconds_all"], row["limit_seconds_all"], strict=True)
    ]


def depth_slope(rows: list[dict[str, Any]], minus: list[dict[str, Any]] | None = None) -> dict[str, float] | None:
    """How the overhead per adapted layer moves with depth: the Theil–Sen slope (ms per block) of
    every round's overhead against L, with its 95 % interval (Sen 1968; robust to the odd slow round,
    as a least-squares line is not). With ``minus`` (another method's rows at the same depths), the
    slope of the round-by-round difference: what one method's layer costs beyond the other's, which
    leaves out whatever grows with depth for any adapter (the cache holding fewer of the saved
    activations). ``None`` with fewer than two depths."""
    if len({r["layers"] for r in rows}) < 2:
        return None
    other = {r["layers"]: overheads(r) for r in minus} if minus is not None else {}
    x, y = [], []
    for row in rows:
        mine = overheads(row)
        theirs = other.get(row["layers"], [0.0] * len(mine))
        x += [row["layers"]] * len(mine)
        y += [a - b for a, b in zip(mine, theirs, strict=True)]
    fit = sps.theilslopes(y, x, alpha=0.95)
    return {"slope": float(fit.slope), "low": float(fit.low_slope), "high": float(fit.high_slope), "n": len(y)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", default="4,8,16,32")
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument(
        "--intermediate",
        type=int,
        default=None,
        help="the MLP's width (default: the width; q and v are what ASLoRA adapts)",
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=15, help=f"rounds (≥ {MIN_ROUNDS}: each interval needs them)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    depths = [int(d) for d in args.depths.split(",")]
    batch = random_batch(args.batch_size, args.seq_len, 1000, args.device)
    trainees = {}
    for layers in depths:
        torch.manual_seed(0)
        base = build(layers, args.width, args.intermediate or args.width, args.device).to(getattr(torch, args.dtype))
        merges = layers - 1  # every tie a group can make: one B per type is left
        configs = method_configs(["query", "value"], 8, merges)
        for method in METHODS:
            trainee = Trainee(method, base, configs[method](), args.device)
            for _ in range(merges + 2 if trainee.controller else 2):  # warm-up; ASLoRA ties all the way
                trainee.step(batch)
            trainees[layers, method] = trainee
    times, limits = paired_times(trainees, lambda key: (key[0], LIMIT), batch, args.repeats, args.device)
    rows = []
    for layers in depths:
        for method in METHODS[1:]:
            step, limit = times[layers, method], limits[layers, method]
            rows.append(
                {
                    "layers": layers,
                    "method": method,
                    "step_seconds": statistics.median(step),
                    "limit_seconds": statistics.median(limit),
                    "step_seconds_all": step,
                    "limit_seconds_all": limit,
                    "ratio_to_limit": round_ratio(step, limit),
                    "overhead_per_adapted_layer_ms": round_summary(
                        overheads({"layers": layers, "step_seconds_all": step, "limit_seconds_all": limit})
                    ),
                    "num_distinct_B": trainees[layers, method].controller.num_distinct_B
                    if trainees[layers, method].controller
                    else None,
                }
            )
    of = {method: [r for r in rows if r["method"] == method] for method in METHODS[1:]}
    slopes = {method: depth_slope(of[method]) for method in METHODS[1:]}
    slopes["aslora-minus-peft-lora"] = depth_slope(of["aslora"], minus=of["peft-lora"])
    print(f"{'L':>3} {'method':<10} {'step ms':>9} {'× limit [95 %]':>22} {'overhead / adapted layer, ms [95 %]':>36}")
    for row in rows:
        print(
            f"{row['layers']:>3} {row['method']:<10} {1e3 * row['step_seconds']:>9.1f} "
            f"{format_ratio(row['ratio_to_limit']):>22} {format_ratio(row['overhead_per_adapted_layer_ms']):>36}"
        )
    for method, slope in slopes.items():
        if slope is not None:
            print(
                f"{method}: overhead per adapted layer changes by {1e3 * slope['slope']:+.1f} µs per block of depth "
                f"[{1e3 * slope['low']:+.1f}, {1e3 * slope['high']:+.1f}] (Theil–Sen, 95 %, {slope['n']} points)"
            )
    report = {
        "command": " ".join(["python -m scripts.bench.depth", *(argv if argv is not None else sys.argv[1:])]),
        "model": f"roberta-shaped-w{args.width}",
        "width": args.width,
        "intermediate": args.intermediate or args.width,
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        "dtype": args.dtype,
        "device": args.device,
        "repeats": args.repeats,
        "rows": rows,
        "slope_ms_per_block": slopes,
        "environment": environment(outputs=BENCH_OUTPUTS),
    }
    write_report(report, args.out, "depth_")
    return 0


if __name__ == "__main__":
    sys.exit(main())
