"""The prose of results/README's "Earlier runs" section, from the runs it describes.

    python -m scripts.reports.earlier_runs [--runs results/runs.csv] [--sharing results/sharing] [--readme results/README.md]

Three blocks, each generated, none typed:

- ``earlier_instruct``: the untuned instruction runs (grid ``instruct``): ASLoRA's size, its ties and
  B's left per module type, and its held-out loss against LoRA's and VeRA's, seed by seed.
- ``earlier_sharing``: which layers end up reading one B (the map the ties of §3.2 leave; the paper
  draws its own in Figure 3) in the offline grid's runs, counted over (run, module type); whether each
  tie joins a more distant pair than the one before; and the groups of the instruction run.
- ``earlier_merge``: the ``max_merges`` and ``merge_candidates`` sweeps (grid ``merge``): each setting
  against no ties, paired by seed. Two seeds per point, so the per-seed differences are shown, not
  an interval (``scripts/reports/stats.py``: no interval below five seeds).

The map of a run is read from its last adapter in ``results/sharing/<run>/`` (``plot_sharing.load``),
the ties and their distances from its report's ``merge_history``; scores from ``results/runs.csv``.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections import Counter, defaultdict
from itertools import pairwise
from pathlib import Path

from hydra_glue import ROOT
from scripts.reports.make_tables import fill_readme
from scripts.reports.plot_sharing import load
from scripts.reports.scores import scale, score_digits
from scripts.reports.stats import format_paired, paired

BLOCKS = "earlier_"
"""README blocks this script fills: ``earlier_instruct``, ``earlier_sharing``, ``earlier_merge``."""


def groups(adapter: dict) -> dict[str, list[tuple[int, list[int]]]]:
    """module type → [(the layer whose B it is, [the layers reading it])], by the lowest layer reading it.

    ``adapter["sharing"]`` maps ``<type>_<layer>`` to the key of the B that slot reads."""
    by_type: dict[str, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    for slot, key in adapter["sharing"].items():
        kind, layer = slot.rsplit("_", 1)
        owner = key.rsplit("_", 1)
        by_type[kind][int(owner[1]) if owner[0] == kind else -1].append(int(layer))
    return {
        kind: sorted(((o, sorted(ls)) for o, ls in owners.items()), key=lambda g: g[1][0])
        for kind, owners in by_type.items()
    }


def span(layers: list[int]) -> str:
    """Layers as runs of neighbours: ``0–3, 5``."""
    runs: list[list[int]] = []
    for layer in layers:
        if runs and layer == runs[-1][-1] + 1:
            runs[-1].append(layer)
        else:
            runs.append([layer])
    return ", ".join(f"{r[0]}–{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs)


def pattern(type_groups: list[tuple[int, list[int]]]) -> str:
    """``layers 0–4 read layer 4's B, layer 5 keeps its own``."""
    parts = []
    for owner, layers in type_groups:
        if layers == [owner]:
            parts.append(f"layer {owner} keeps its own")
        else:
            parts.append(f"layers {span(layers)} read layer {owner}'s B")
    return ", ".join(parts)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _runs(rows: list[dict], grid: str, adapter: str | None = None) -> list[dict]:
    return sorted(
        (r for r in rows if r["grid"] == grid and (adapter is None or r["adapter"] == adapter)),
        key=lambda r: (r["task"], r["variant"], int(r["seed"])),
    )


def _loaded(sharing: Path, row: dict) -> tuple[dict, dict]:
    run_dir = sharing / row["run_name"]
    if not run_dir.is_dir():
        raise SystemExit(f"{run_dir} not found: results/sharing holds every ASLoRA run's report and last adapter")
    return load(run_dir)


def instruct_text(rows: list[dict], sharing: Path) -> str:
    runs = _runs(rows, "instruct")
    by = {
        a: {int(r["seed"]): float(r["best_metric"]) for r in runs if r["adapter"] == a}
        for a in ("aslora", "lora", "vera")
    }
    if not all(by.values()):
        raise SystemExit("grid 'instruct' in runs.csv lacks an ASLoRA, LoRA or VeRA run")
    ours = next(r for r in runs if r["adapter"] == "aslora")
    report, adapter = _loaded(sharing, ours)
    type_groups = groups(adapter)
    ties = Counter(m["group"] for m in report["merge_history"])
    depth = max(sum(len(layers) for _, layers in g) for g in type_groups.values())
    left = {kind: len(g) for kind, g in type_groups.items()}
    per_type = (
        f"{_count(next(iter(ties.values())), 'tie')} per module type: {next(iter(left.values()))} of {depth} B's left per type"
        if len(set(ties.values())) == 1 and len(set(left.values())) == 1
        else "; ".join(f"{kind}: {_count(ties[kind], 'tie')}, {left[kind]} of {depth} B's left" for kind in type_groups)
    )
    gaps = {other: paired(by["aslora"], by[other]) for other in ("lora", "vera")}
    shown = {other: f"{g.mean:+.2f}" if g.n == 1 else format_paired(g, 2) for other, g in gaps.items()}
    spread = (
        " One seed each: no spread, so read the order, not the gaps."
        if max(g.n for g in gaps.values()) == 1
        else " Paired by seed (mean; a t-interval and sign-flip p from five seeds, the values below)."
    )
    return (
        f"All three adapters start from the same instruction-tuned model and one epoch of "
        f"{report['train_examples']:,} pairs ({ours['steps']} optimizer steps); ASLoRA "
        f"({int(ours['adapter_params_after']):,} parameters, {100 * float(ours['fraction_of_lora_after']):.1f} % of "
        f"LoRA, {per_type}) ends {shown['lora']} against LoRA's held-out loss and "
        f"{shown['vera']} against VeRA's (lower is better).{spread} Each report also holds greedy answers to three held-out "
        f"prompts (`samples`).\n"
    )


def sharing_text(rows: list[dict], sharing: Path) -> str:
    offline = _runs(rows, "offline", "aslora")
    if not offline:
        raise SystemExit("grid 'offline' in runs.csv has no ASLoRA run")
    seen: dict[str, list[str]] = defaultdict(list)
    rising, sequences, example = 0, 0, None
    for row in offline:
        report, adapter = _loaded(sharing, row)
        for kind, type_groups in groups(adapter).items():
            seen[pattern(type_groups)].append(f"{kind}, {row['task']} seed {row['seed']}")
            distances = [m["distance"] for m in report["merge_history"] if m["group"] == kind]
            sequences += 1
            rising += all(b > a for a, b in pairwise(distances))
            if example is None and len(distances) > 1:
                example = f"{distances[0]:.2f} → {distances[-1]:.2f} for {kind} in {row['task']} seed {row['seed']}"
    total = sum(len(v) for v in seen.values())
    ranked = sorted(seen.items(), key=lambda kv: -len(kv[1]))
    first, rest = ranked[0], ranked[1:]
    text = (
        f"In the untuned runs of the offline grid ({len(offline)} ASLoRA runs, {total} (run, module type) "
        f"maps), which layers end on one B: in {len(first[1])} of the {total}, {first[0]}"
    )
    for words, where in rest:
        text += f"; in {len(where)} ({'; '.join(where)}), {words}"
    text += (
        f". In {rising} of the {sequences} (run, module type) sequences each tie joins a more distant pair "
        f"than the one before (running-mean distance {example})"
        + (
            ", so the schedule, not a distance threshold, decides how far merging goes."
            if rising == sequences
            else "; in the others a later tie joined a closer pair."
        )
    )
    instruct = _runs(rows, "instruct", "aslora")
    if instruct:
        report, adapter = _loaded(sharing, instruct[0])
        widest = {kind: max((ls for _, ls in type_groups), key=len) for kind, type_groups in groups(adapter).items()}
        shared = {kind: sum(len(ls) > 1 for _, ls in g) for kind, g in groups(adapter).items()}
        text += (
            f" In the instruction run (seed {instruct[0]['seed']}) the ties of each type leave "
            + ", ".join(f"{n} shared B's for {kind}" for kind, n in shared.items())
            + "; the largest groups: "
            + ", ".join(f"{kind} layers {span(ls)}" for kind, ls in widest.items())
            + "."
        )
    return text + "\n"


def maps_text(runs: list[dict], sharing: Path) -> str:
    """``query: layers 0–3, 5 read layer 5's B, layer 4 keeps its own (seeds 1, 2)``: each module
    type's final map, and the seeds that ended on it."""
    seeds: dict[tuple[str, str], list[str]] = defaultdict(list)
    for row in runs:
        for kind, type_groups in groups(_loaded(sharing, row)[1]).items():
            seeds[kind, pattern(type_groups)].append(row["seed"])
    return "; ".join(
        f"{kind}: {words} (seed{'s' if len(s) > 1 else ''} {', '.join(s)})" for (kind, words), s in seeds.items()
    )


def merge_text(rows: list[dict], sharing: Path) -> str:
    runs = _runs(rows, "merge")
    if not runs:
        raise SystemExit("grid 'merge' in runs.csv has no run")
    sample, digits = runs[0], score_digits(runs[0])
    by_variant: dict[str, dict[int, dict]] = defaultdict(dict)
    for r in runs:
        by_variant[r["variant"]][int(r["seed"])] = r

    def score(r: dict) -> float:
        return scale(r) * float(r["best_metric"])

    def against(variant: str, base: str) -> str:
        scores = {name: {s: score(r) for s, r in by_variant[name].items()} for name in (variant, base)}
        return format_paired(paired(scores[variant], scores[base]), digits)

    ties = sorted((int(v.split("=")[1]), v) for v in by_variant if v.startswith("max_merges="))
    base = f"max_merges={ties[0][0]}"
    lines = [
        f"Each setting against no ties ({base}), {sample['main_metric']} ×100 at the best validation epoch, "
        f"paired by seed (mean; a t-interval and sign-flip p from five seeds, the values below):",
        "",
    ]
    below = None
    for k, variant in ties[1:]:
        fraction = 100 * float(next(iter(by_variant[variant].values()))["fraction_of_lora_after"])
        if below is None and fraction < 25:
            below = k
        lines.append(
            f"- {_count(k, 'tie')} per module type ({fraction:.1f} % of LoRA's parameters): {against(variant, base)}"
        )
    if below is not None:
        lines += ["", f"The fewest ties that take the adapter below 25 % of LoRA's parameters: {below}."]
    if "merge_candidates=all" in by_variant and "merge_candidates=adjacent" in by_variant:
        lines += [
            "",
            f"Any two layers as candidates (`merge_candidates=all`) against neighbours only (`adjacent`): "
            f"{against('merge_candidates=all', 'merge_candidates=adjacent')}. Which layers end on one B under "
            f"`all`: {maps_text(list(by_variant['merge_candidates=all'].values()), sharing)}.",
        ]
        same = f"max_merges={int(next(iter(by_variant['merge_candidates=adjacent'].values()))['max_merges'])}"
        if same in by_variant:
            pairs = [
                (
                    float(by_variant["merge_candidates=adjacent"][s]["best_metric"]),
                    float(by_variant[same][s]["best_metric"]),
                )
                for s in sorted(set(by_variant["merge_candidates=adjacent"]) & set(by_variant[same]))
            ]
            verdict = (
                "reproduce them exactly (" + " and ".join(f"{a:.4f}" for a, _ in pairs) + ", separate processes)"
                if all(a == b for a, b in pairs)
                else "do not reproduce them: " + ", ".join(f"{a:.4f} against {b:.4f}" for a, b in pairs)
            )
            lines.append(f"The `adjacent` runs are the `{same}` runs' settings under another name and {verdict}.")
    return "\n".join(lines) + "\n"


def blocks(rows: list[dict], sharing: Path) -> dict[str, str]:
    return {
        "earlier_instruct": instruct_text(rows, sharing),
        "earlier_sharing": sharing_text(rows, sharing),
        "earlier_merge": merge_text(rows, sharing),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=ROOT / "results" / "runs.csv")
    parser.add_argument("--sharing", type=Path, default=ROOT / "results" / "sharing")
    parser.add_argument("--readme", type=Path, default=ROOT / "results" / "README.md")
    args = parser.parse_args(argv)
    if not args.runs.is_file():
        raise SystemExit(f"{args.runs} does not exist: run `python -m scripts.reports.collect_results` first")
    with open(args.runs, newline="") as f:
        rows = list(csv.DictReader(f))
    header = "<!-- generated by scripts/reports/earlier_runs.py; do not edit -->\n"
    text = {name: header + body for name, body in blocks(rows, args.sharing).items()}
    filled = fill_readme(args.readme, text, owns=lambda name: name.startswith(BLOCKS))
    print(f"filled {', '.join(filled) or 'no'} block(s) in {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
