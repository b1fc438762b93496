"""The "Earlier runs" prose of results/README is generated from runs.csv and results/sharing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aslora.export import CONFIG_FILE, FORMAT
from scripts.reports import earlier_runs


def _sharing_run(root: Path, name: str, owners: dict[str, list[int]], distances: dict[str, list[float]]) -> None:
    """A run as results/sharing keeps it: its report (tie history, training size) and last adapter's map.

    ``owners[kind][layer]`` is the layer whose B that layer reads at the end."""
    run = root / name
    (run / "adapter_last").mkdir(parents=True)
    sharing = {f"{kind}_{layer}": f"{kind}_{owner}" for kind, row in owners.items() for layer, owner in enumerate(row)}
    (run / "adapter_last" / CONFIG_FILE).write_text(
        json.dumps({"format": FORMAT, "adapter_type": "ASLoRAConfig", "sharing": sharing})
    )
    history = [
        {"step": 10 * i, "group": kind, "distance": d} for kind, ds in distances.items() for i, d in enumerate(ds)
    ]
    (run / "report.json").write_text(json.dumps({"merge_history": history, "train_examples": 1234}))


def _row(grid: str, adapter: str, seed: int, score: float, variant: str = "", **extra) -> dict:
    return {
        "run_name": f"{grid}_{adapter}_{variant}_s{seed}",
        "grid": grid,
        "task": "t",
        "adapter": adapter,
        "variant": variant,
        "seed": str(seed),
        "main_metric": extra.pop("main_metric", "accuracy"),
        "best_metric": str(score),
        **extra,
    }


def test_groups_and_spans_read_a_map_by_its_lowest_layer():
    adapter = {"sharing": {"q_0": "q_5", "q_1": "q_5", "q_2": "q_5", "q_3": "q_5", "q_4": "q_4", "q_5": "q_5"}}
    grouped = earlier_runs.groups(adapter)["q"]
    assert grouped == [(5, [0, 1, 2, 3, 5]), (4, [4])]
    assert earlier_runs.pattern(grouped) == "layers 0–3, 5 read layer 5's B, layer 4 keeps its own"
    assert earlier_runs.span([1, 2, 3, 7, 9, 10]) == "1–3, 7, 9–10"


def test_sharing_prose_counts_maps_and_says_when_distances_do_not_always_rise(tmp_path):
    rows = [_row("offline", "aslora", s, 0.7) for s in (1, 2, 3)]
    common = [4, 4, 4, 4, 4, 5]
    _sharing_run(
        tmp_path, rows[0]["run_name"], {"query": common, "value": common}, {"query": [0.2, 0.6], "value": [0.1, 0.3]}
    )
    _sharing_run(
        tmp_path, rows[1]["run_name"], {"query": common, "value": common}, {"query": [0.2, 0.4], "value": [0.1, 0.2]}
    )
    _sharing_run(
        tmp_path,
        rows[2]["run_name"],
        {"query": [3, 3, 3, 3, 5, 5], "value": common},
        {"query": [0.5, 0.4], "value": [0.1, 0.2]},
    )
    text = earlier_runs.sharing_text(rows, tmp_path)
    assert "in 5 of the 6, layers 0–4 read layer 4's B, layer 5 keeps its own" in text
    assert "in 1 (query, t seed 3), layers 0–3 read layer 3's B, layers 4–5 read layer 5's B" in text
    # seed 3's query tie joined a closer pair (0.5 then 0.4): the schedule-not-threshold reading is not drawn
    assert "In 5 of the 6 (run, module type) sequences" in text
    assert "in the others a later tie joined a closer pair" in text and "schedule, not a distance" not in text


def test_merge_prose_pairs_by_seed_and_checks_the_renamed_runs_reproduce(tmp_path):
    fraction = {0: "0.54", 1: "0.46", 4: "0.21"}
    rows = [
        _row("merge", "aslora", s, score, f"max_merges={k}", fraction_of_lora_after=fraction[k], max_merges=str(k))
        for k, scores in {0: (0.76, 0.78), 1: (0.75, 0.77), 4: (0.74, 0.70)}.items()
        for s, score in zip((1, 2), scores, strict=True)
    ]
    rows += [
        _row("merge", "aslora", s, score, "merge_candidates=adjacent", fraction_of_lora_after="0.21", max_merges="4")
        for s, score in ((1, 0.74), (2, 0.70))
    ]
    rows += [
        _row("merge", "aslora", s, score, "merge_candidates=all", fraction_of_lora_after="0.21", max_merges="4")
        for s, score in ((1, 0.75), (2, 0.72))
    ]
    for row in rows:
        if row["variant"] == "merge_candidates=all":
            _sharing_run(tmp_path, row["run_name"], {"query": [1, 1, 2]}, {"query": [0.1]})
    text = earlier_runs.merge_text(rows, tmp_path)
    assert "- 1 tie per module type (46.0 % of LoRA's parameters): -1.0 (n=2: -1.0, -1.0)" in text
    assert "- 4 ties per module type (21.0 % of LoRA's parameters): -5.0 (n=2: -2.0, -8.0)" in text
    assert "below 25 % of LoRA's parameters: 4." in text
    assert "`adjacent`): +1.5 (n=2: +1.0, +2.0)" in text
    assert "query: layers 0–1 read layer 1's B, layer 2 keeps its own (seeds 1, 2)" in text
    assert "reproduce them exactly (0.7400 and 0.7000" in text
    rows[-3]["best_metric"] = "0.701"  # adjacent seed 2 no longer equals max_merges=4 seed 2
    assert "do not reproduce them: 0.7400 against 0.7400, 0.7010 against 0.7000" in earlier_runs.merge_text(
        rows, tmp_path
    )


def test_instruct_prose_reads_size_ties_and_gaps(tmp_path):
    extra = dict(main_metric="loss", steps="123", adapter_params_after="109056", fraction_of_lora_after="0.2367")
    rows = [_row("instruct", a, 1, score, **extra) for a, score in (("aslora", 2.34), ("lora", 2.29), ("vera", 2.44))]
    _sharing_run(tmp_path, rows[0]["run_name"], {"q": [1, 1, 2, 3], "v": [0, 2, 2, 3]}, {"q": [0.1], "v": [0.2]})
    text = earlier_runs.instruct_text(rows, tmp_path)
    assert "one epoch of 1,234 pairs (123 optimizer steps)" in text
    assert "109,056 parameters, 23.7 % of LoRA, 1 tie per module type: 3 of 4 B's left per type" in text
    assert "ends +0.05 against LoRA's held-out loss and -0.10 against VeRA's" in text
    assert "One seed each" in text
    rows += [_row("instruct", a, 2, score, **extra) for a, score in (("aslora", 2.30), ("lora", 2.29), ("vera", 2.30))]
    text = earlier_runs.instruct_text(rows, tmp_path)
    assert (
        "ends +0.03 (n=2: +0.05, +0.01) against LoRA's" in text and "-0.05 (n=2: -0.10, +0.00) against VeRA's" in text
    )
    assert "One seed each" not in text


def test_readme_blocks_are_filled_and_a_missing_run_is_named(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(
        "x\n<!-- table:earlier_merge -->\nold\n<!-- /table:earlier_merge -->\n<!-- table:bench_speed -->\nkept\n<!-- /table:bench_speed -->\n"
    )
    rows = [
        _row("merge", "aslora", s, 0.7, f"max_merges={k}", fraction_of_lora_after="0.5") for k in (0, 1) for s in (1, 2)
    ]
    filled = earlier_runs.fill_readme(
        readme,
        {"earlier_merge": earlier_runs.merge_text(rows, tmp_path)},
        owns=lambda n: n.startswith(earlier_runs.BLOCKS),
    )
    assert filled == ["earlier_merge"] and "old" not in readme.read_text() and "kept" in readme.read_text()
    with pytest.raises(SystemExit, match="nowhere_s1 not found"):
        earlier_runs.sharing_text([_row("offline", "aslora", 1, 0.7) | {"run_name": "nowhere_s1"}], tmp_path)


def test_the_committed_readme_blocks_regenerate_from_the_committed_runs(tmp_path):
    """results/README.md's earlier-runs prose is what the script writes from runs.csv and results/sharing today."""
    from hydra_glue import ROOT

    copy = tmp_path / "README.md"
    committed = (ROOT / "results" / "README.md").read_text()
    copy.write_text(committed)
    assert earlier_runs.main(["--readme", str(copy)]) == 0
    assert copy.read_text() == committed
