"""The speed tables of ``results/README.md``, generated from the benchmarks' JSON (never typed).

    python -m scripts.bench.report --speed results/bench/minilm-l6_cpu.json \\
        --depth results/bench/depth_cached_cpu.json results/bench/depth_cpu.json \\
        --kernels results/bench/kernels_cpu.json --readme results/README.md

``make bench`` runs the benchmarks and then this. It fills two blocks:

* ``<!-- table:bench_speed -->`` — each method's step against the frozen-base limit and against
  PEFT LoRA (median over rounds of the two steps timed in the same round, with the distribution-free
  95 % interval and n of ``scripts.reports.stats.median_interval``), training memory and adapter bytes,
  ASLoRA's running-mean and merge-event costs, and what the target asks: ASLoRA's eager step
  ≤ ``TARGET_TO_LIMIT`` × the limit and ≤ PEFT LoRA, said as *met* only when the interval's upper end
  is below it, *not shown* when the interval straddles it;
* ``<!-- table:bench_depth -->`` — for each depth report (one batch shape each), per depth L the ratio to the limit and the overhead per adapted
  layer, and the Theil–Sen slope of that overhead against L with its 95 % interval, for each method
  and for ASLoRA's overhead minus PEFT LoRA's in the same round (what reading a B through the map
  adds, beside what grows with depth for any adapter): growth is *shown* when the interval lies above
  0; when it holds 0, the block says so with the most growth the interval still allows.

Each block names the command, the hardware, the commit (and whether the tree was dirty) it came from.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from aslora.harness.measuring.display import DISPLAY_NAMES
from aslora.json_file import read_json
from hydra_glue import ROOT
from scripts.bench.timing import format_ratio
from scripts.bench.trainees import COMPILED, LIMIT
from scripts.reports.make_tables import fill_readme

TARGET_TO_LIMIT = 1.02
"""Issue 36's bar for ASLoRA's eager step, as a multiple of the frozen-base limit."""
BENCH_ROWS = {  # rows that are not an adapter
    LIMIT: "limit: frozen base, input gradients through every layer, head only",
    "aslora-minus-peft-lora": "ASLoRA − PEFT LoRA, round by round (what reading a B through the map adds)",
}
QUALIFIERS = {"aslora": " (after its ties)", "peft-vera": " r = 1024"}
"""What the bench adds to an adapter's display name (:data:`aslora.harness.measuring.display.DISPLAY_NAMES`)."""


def _name(method: str) -> str:
    """A row's label: an adapter's display name (``peft-`` rows: PEFT's own implementation of it)
    with the bench's qualifier, ASLoRA in bold; ``…-compiled`` rows say so."""
    base = method.removesuffix(COMPILED)
    if base in BENCH_ROWS:
        name = BENCH_ROWS[base]
    else:
        adapter = base.removeprefix("peft-")
        name = DISPLAY_NAMES.get(adapter, adapter)
        name = (f"**{name}**" if adapter == "aslora" else name) + QUALIFIERS.get(base, "")
        name = f"PEFT {name}" if base.startswith("peft-") else name
    return name + (", `torch.compile` (inductor)" if method.endswith(COMPILED) else "")


def _provenance(report: dict[str, Any]) -> str:
    env = report["environment"]
    commit = f"`{env['git_sha'][:7]}`" + (" with uncommitted changes" if env.get("git_dirty") else ", clean tree")
    # the command as recorded, without `python -m`: the module's name is the one it had at that commit
    command = report["command"].removeprefix("python -m ")
    return f"`{command}` (run by `make bench`) on {env['device']}, torch {env['packages']['torch']}, commit {commit}"


def _against(ratio: dict[str, Any], bar: float) -> str:
    """``met`` (the whole interval at or below the bar), ``missed`` (the whole interval above),
    ``not shown`` (it straddles the bar, or there is no interval)."""
    if ratio["low"] is None:
        return f"not shown (n = {ratio['n']}: no interval)"
    if ratio["high"] <= bar:
        return "met"
    if ratio["low"] > bar:
        return "missed"
    return "not shown (the interval holds the bar)"


def _growth(slope: dict[str, float], depths: list[int]) -> str:
    """What a slope's interval says: growth shown (it lies above 0), a fall shown, or no growth
    detected — then with the most the design leaves room for over the depths measured (an interval
    holding 0 is not evidence of flatness by itself; its upper end says how flat)."""
    span = depths[-1] - depths[0]
    if slope["low"] > 0:
        return f"grows with depth (by at least {slope['low'] * span:.3f} ms per layer from L = {depths[0]} to {depths[-1]})"
    if slope["high"] < 0:
        return "falls with depth"
    return (
        f"no growth detected; the interval allows at most {slope['high'] * span:+.3f} ms per layer "
        f"from L = {depths[0]} to {depths[-1]}"
    )


def speed_block(report: dict[str, Any], kernels: dict[str, Any] | None = None) -> str:
    methods = report["methods"]
    rounds = methods[LIMIT]["step_ratio_to_limit"]["n"]
    lines = [
        "<!-- generated by scripts/bench/report.py; do not edit -->",
        f"{report['model']}, batch {report['batch_size']} × {report['seq_len']}, r = {report['rank']}, "
        f"{report['dtype']}: {rounds} rounds of one training step (forward, backward, AdamW) per method, in an "
        f"order shuffled each round, each beside one step of its limit, after warm-up. {_provenance(report)}. "
        "A ratio to the limit is the median over rounds of the method's step over the adjacent limit step; a "
        "ratio to LoRA, of the two methods' such ratios in the same round; each with its 95 % order-statistic "
        "interval. Compiled rows are taken against the compiled limit and the compiled LoRA.",
        "",
        "| method | step (s) | step × limit [95 %] | step × PEFT LoRA [95 %] | training memory × LoRA | adapter bytes × LoRA |",
        "|---|---|---|---|---|---|",
    ]
    for method, row in methods.items():
        adapter = "—" if method.startswith(LIMIT) else f"{row['adapter_bytes_ratio']:.3f}"
        lines.append(
            f"| {_name(method)} | {row['step_seconds']:.3f} | {format_ratio(row['step_ratio_to_limit'])} | "
            f"{format_ratio(row['step_ratio_to_lora'])} | {row['memory_bytes_ratio']:.2f} | {adapter} |"
        )
    if "aslora" in methods:
        aslora = methods["aslora"]
        lines += [
            "",
            f"ASLoRA's eager step against the target ≤ {TARGET_TO_LIMIT}× the limit: "
            f"{_against(aslora['step_ratio_to_limit'], TARGET_TO_LIMIT)}; ≤ PEFT LoRA: "
            f"{_against(aslora['step_ratio_to_lora'], 1.0)}.",
        ]
        extras = report.get("aslora") or {}
        if extras:
            lines.append(
                f"Its running-mean update takes {100 * extras['running_mean_update_fraction_of_step']:.3f} % of a "
                f"step, one merge event (every B untied: the costliest search) "
                f"{100 * extras['merge_event_fraction_of_step']:.2f} %, and after `merge_into_base` inference runs "
                f"at {extras['folded_inference_ratio_to_base']:.2f}× the base model's time."
            )
    if kernels is not None:
        lines += ["", kernels_line(kernels)]
    return "\n".join(lines) + "\n"


def kernels_line(report: dict[str, Any]) -> str:
    """What the adapted layers cost timed alone (``scripts.bench.kernels``), as the step they would
    make; and whether the bar lies below the adapter's own arithmetic written plainly (the whole
    interval above it) — then no implementation of the layer alone can meet it on that machine."""
    ours, plain = report["our-layer"]["ratio_to_limit"], report["plain-gemms"]["ratio_to_limit"]
    verdict = (
        f"the two GEMMs alone already exceed the ≤ {TARGET_TO_LIMIT}× bar on this machine"
        if plain["low"] is not None and plain["low"] > TARGET_TO_LIMIT
        else f"the two GEMMs alone do not rule out the ≤ {TARGET_TO_LIMIT}× bar"
    )
    return (
        f"**The layers alone** ({report['adapted_layers']} adapted projections of {report['model']} at "
        f"{report['batch_size']} × {report['seq_len']} tokens, each timed alone, forward and backward, against the "
        f"frozen projection; {report['repeats']} rounds. {_provenance(report)}): ASLoRA's layers add what would make "
        f"a step {format_ratio(ours)}× the limit; the same two GEMMs written plainly "
        f"(`addmm_(h, Bᵀ, alpha=α/r)`) {format_ratio(plain)}× — {verdict}."
    )


def depth_block(reports: list[dict[str, Any]]) -> str:
    """One table per depth report, in the order given (``make bench``: a batch whose activations
    stay in cache, where an adapter's cost is its kernels and their launches, then a larger one)."""
    parts = ["<!-- generated by scripts/bench/report.py; do not edit -->"]
    for report in reports:
        parts.append(_depth_table(report))
    return "\n".join(parts)


def _depth_table(report: dict[str, Any]) -> str:
    rows = report["rows"]
    rounds = rows[0]["ratio_to_limit"]["n"] if rows else 0
    lines = [
        f"**Batch {report['batch_size']} × {report['seq_len']}.** "
        f"A RoBERTa-shaped encoder of width {report['width']} (MLP {report['intermediate']}), random weights, "
        f"{report['dtype']}, r = 8 on query and value, "
        f"ASLoRA tied down to one B per type; {rounds} rounds, every (depth, method) once per round in "
        f"shuffled order, each step beside one of its depth's limit. {_provenance(report)}. Overhead per "
        "adapted layer: (method's step − the adjacent limit step) / 2L.",
        "",
        "| L | method | step × limit [95 %] | overhead per adapted layer, ms [95 %] |",
        "|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['layers']} | {_name(row['method'])} | {format_ratio(row['ratio_to_limit'])} | "
            f"{format_ratio(row['overhead_per_adapted_layer_ms'])} |"
        )
    lines.append("")
    depths = sorted({row["layers"] for row in rows})
    for method, slope in (report.get("slope_ms_per_block") or {}).items():
        if slope is None:
            continue
        lines.append(
            f"- {_name(method)}: the overhead per adapted layer moves {1e3 * slope['slope']:+.1f} µs per block "
            f"of depth [{1e3 * slope['low']:+.1f}, {1e3 * slope['high']:+.1f}] (Theil–Sen, 95 %, "
            f"{slope['n']} round × depth points): {_growth(slope, depths)}."
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speed", type=Path, required=True, help="scripts.bench.speed's JSON")
    parser.add_argument(
        "--depth",
        type=Path,
        nargs="+",
        required=True,
        help="scripts.bench.depth's JSON files, one table each, in order",
    )
    parser.add_argument("--kernels", type=Path, default=None, help="scripts.bench.kernels's JSON (optional)")
    parser.add_argument("--readme", type=Path, default=ROOT / "results" / "README.md")
    args = parser.parse_args(argv)
    for path in (args.speed, *args.depth, *([args.kernels] if args.kernels else []), args.readme):
        if not path.is_file():
            raise SystemExit(f"{path} does not exist: run `make bench` (it writes every JSON file this reads)")
    speed = read_json(args.speed, "a benchmark report", dict)
    depths = [read_json(path, "a benchmark report", dict) for path in args.depth]
    kernels = read_json(args.kernels, "a benchmark report", dict) if args.kernels else None
    blocks = {"bench_speed": speed_block(speed, kernels), "bench_depth": depth_block(depths)}
    filled = fill_readme(args.readme, blocks, owns=lambda name: name in blocks)
    print(f"filled {', '.join(filled) or 'no'} table(s) in {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
