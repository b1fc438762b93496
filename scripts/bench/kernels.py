"""Benchmark: an adapted layer against its own arithmetic, each timed alone at the model's shapes. In ONE process.

    python -m scripts.bench.kernels                     # MiniLM-L6, batch 32 × 64, r = 8, CPU

``make bench`` holds ASLoRA's step against the frozen-base limit. What an adapter of LoRA's form,
``W x + (α/r)·B·(A x)``, cannot avoid is its own arithmetic: per adapted projection two small GEMMs
forward (``h = A x``, ``W x += (α/r)·B h``) and, backward, B's and A's gradients, h's gradient and
its share of x's. This script times, layer by layer at the model's shapes, the frozen projection
alone (forward and its input-gradient backward), the projection with those two GEMMs written
plainly (``addmm_(h, Bᵀ, alpha=α/r)``, PEFT's order of operations without its extra tensors), and
our adapted layer (``SharedLoRALinear``, ASLoRA after its ties), and reports for the last two

    1 + Σ_layers (t[call] − t[projection]) / t[limit step]

— the step an adapter would take if its kernels were all it added. Each round times one limit step
and, for every adapted layer in shuffled order, the three calls in shuffled order; each value is the
median over rounds with its distribution-free 95 % interval (``scripts.bench.timing.round_summary``).
Where the step's ratio (``scripts.bench.speed``) is what its layers alone cost, nothing outside the
layer is left to remove. Writes ``results/bench/kernels_<device>.json``.
"""

from __future__ import annotations

import argparse
import random
import sys
from typing import Any, Callable

import torch
from torch.nn import functional as F

from aslora.adapters.layers import SharedLoRALinear
from aslora.adapters.pools import DEFAULT_ADAPTER
from aslora.harness.runs.report import environment
from scripts.bench.timing import BENCH_OUTPUTS, MIN_ROUNDS, format_ratio, round_summary, timed, write_report
from scripts.bench.trainees import LIMIT, Trainee, build_base, merges_for, method_configs, random_batch


def _call(fn: Callable[[], torch.Tensor], grad: torch.Tensor, leaves: list[torch.Tensor]) -> Callable[[], None]:
    """Forward and backward of one projection; its leaves' gradients dropped afterwards, so no call
    pays for accumulating into the previous one's."""

    def run() -> None:
        fn().backward(grad)
        for leaf in leaves:
            leaf.grad = None

    return run


def layer_calls(layer: SharedLoRALinear, tokens: int, device: str) -> dict[str, Callable[[], None]]:
    """The three timed calls at ``layer``'s shapes: the frozen projection, it plus the two GEMMs
    written plainly, and our layer itself."""
    base = layer.base_layer
    pool, slot = layer.pool(DEFAULT_ADAPTER), layer.slot[DEFAULT_ADAPTER]
    x = torch.randn(tokens, base.in_features, device=device, requires_grad=True)
    grad = torch.randn(tokens, base.out_features, device=device)
    # the factors the layer reads now, copied: the same numbers through the plain GEMMs
    a = pool.lora_A[slot.a_key].detach().clone().requires_grad_(True)
    b = pool.row(slot).detach().clone().requires_grad_(True)
    scaling = pool.config.scaling

    def plain_gemms() -> torch.Tensor:
        return F.linear(x, base.weight, base.bias).addmm_(F.linear(x, a), b.t(), alpha=scaling)

    ours = [p for p in pool.parameters() if p.requires_grad]
    return {
        "projection": _call(lambda: base(x), grad, [x]),
        "plain-gemms": _call(plain_gemms, grad, [x, a, b]),
        "our-layer": _call(lambda: layer(x), grad, [x, *ours]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm-l6")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=40, help=f"rounds (≥ {MIN_ROUNDS}: each interval needs them)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    provenance = environment(outputs=BENCH_OUTPUTS)  # at the start: the code that runs
    torch.manual_seed(0)
    base, targets, vocab = build_base(args.model)
    base.requires_grad_(False)
    batch = random_batch(args.batch_size, args.seq_len, vocab, args.device)
    limit = Trainee(LIMIT, base, None, args.device)
    merges = merges_for(base.config.num_hidden_layers)
    adapted = Trainee("aslora", base, method_configs(targets, args.rank, merges)["aslora"](), args.device)
    for _ in range(merges + 1):  # its ties, as in scripts.bench.speed: layers whose own B is retired
        adapted.step(batch)
    layers = [m for m in adapted.model.modules() if isinstance(m, SharedLoRALinear)]
    tokens = args.batch_size * args.seq_len
    calls = [layer_calls(layer, tokens, args.device) for layer in layers]
    for _ in range(2):  # warm-up
        limit.step(batch)
        for per_layer in calls:
            for call in per_layer.values():
                call()

    rng = random.Random(0)
    limit_steps: list[float] = []
    extra: dict[str, list[float]] = {"plain-gemms": [], "our-layer": []}
    for _ in range(args.repeats):
        limit_steps.append(timed(lambda: limit.step(batch), args.device))
        sums = dict.fromkeys(extra, 0.0)
        for per_layer in rng.sample(calls, len(calls)):
            names = rng.sample(list(per_layer), len(per_layer))
            times = {name: timed(per_layer[name], args.device) for name in names}
            for name in extra:
                sums[name] += times[name] - times["projection"]
        for name in extra:
            extra[name].append(sums[name])

    report: dict[str, Any] = {
        "command": " ".join(["python -m scripts.bench.kernels", *(argv if argv is not None else sys.argv[1:])]),
        "model": args.model,
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        "rank": args.rank,
        "device": args.device,
        "dtype": "float32",
        "adapted_layers": len(layers),
        "repeats": args.repeats,
        "limit_step_seconds": round_summary(limit_steps),
        "limit_seconds_all": limit_steps,
        "environment": provenance,
    }
    for name, values in extra.items():
        report[name] = {
            "extra_seconds_all": values,  # per round: Σ over the layers of (call − projection)
            "ms_per_step": round_summary([1e3 * v for v in values]),
            "ratio_to_limit": round_summary([1 + v / s for v, s in zip(values, limit_steps, strict=True)]),
        }
    print(
        f"{args.model}, batch {args.batch_size} × {args.seq_len}, r = {args.rank}, {len(layers)} adapted layers, "
        f"{args.repeats} rounds; limit step {1e3 * report['limit_step_seconds']['median']:.1f} ms"
    )
    for name, label in (("plain-gemms", "two GEMMs written plainly"), ("our-layer", "our layer")):
        row = report[name]
        print(
            f"{label:<28} +{format_ratio(row['ms_per_step'])} ms per step → "
            f"{format_ratio(row['ratio_to_limit'])} × the limit"
        )
    write_report(report, args.out, "kernels_")
    return 0


if __name__ == "__main__":
    sys.exit(main())
