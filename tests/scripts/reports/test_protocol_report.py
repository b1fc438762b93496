"""The protocol's table and figure from fixture rows (synthetic numbers, made here; issue 14)."""

from __future__ import annotations

import csv

import pytest

from scripts.reports import protocol_lr, protocol_report
from scripts.reports.collect_results import COLUMNS

SEED_EFFECT = {1: -0.02, 2: 0.0, 3: 0.02, 4: 0.01, 5: -0.01}
EARLY = {("aslora", "", 1), ("aslora", "", 2), ("aslora", "max_merges=2", 3)}


def _rows():
    rows = []
    specs = [
        ("lora", "", 73_728, 0.80),
        ("lora", "r=2", 18_432, 0.78),
        ("lora", "r=1", 9_216, 0.76),
        ("aslora", "", 15_360, 0.79),
        ("aslora", "max_merges=2", 27_648, 0.795),
        ("vera", "", 16_896, 0.70),
        ("aslora", "merge_distance_threshold=0.3", 21_504, 0.792),
    ]
    for adapter, variant, size, base in specs:
        for seed, effect in SEED_EFFECT.items():
            row = {c: "" for c in COLUMNS}
            row.update(
                grid="protocol",
                model="minilm-l6",
                task="rt_polarity",
                task_standin_for="sst2",
                adapter=adapter,
                variant=variant,
                seed=seed,
                main_metric="accuracy",
                best_metric=base + effect + 0.01,
                test_metric_at_best=base + effect,
                adapter_params_after=size,
                # ASLoRA's seeds 1 and 2 were best before their last two ties (two B's of 6,144 more)
                adapter_params_at_best=size + (12_288 if (adapter, variant, seed) in EARLY else 0),
                lora_reference=73_728,
                fraction_of_lora_after=size / 73_728,
                run_name=f"protocol_minilm-l6_rt_polarity_{adapter}_{variant}_s{seed}",
                git_dirty=str(adapter == "vera" and seed >= 4),  # as runs.csv writes it: "True" / "False"
            )
            rows.append(row)
    return rows


def test_table_has_test_intervals_and_paired_differences(tmp_path):
    runs = tmp_path / "runs.csv"
    with open(runs, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(_rows())
    assert protocol_report.main(["--runs", str(runs), "--tables", str(tmp_path), "--figures", str(tmp_path)]) == 0
    table = (tmp_path / "protocol_minilm-l6.md").read_text()
    # LoRA's test scores are 78–82 (median 80.0); every adapter shares the seed effects
    assert "| LoRA | 73,728 | 100.0 | 73,728 (0 of 5) | 80.0 (78.0–82.0, n=5) | 81.0 (79.0–83.0, n=5) | 5 |" in table
    # a row with runs from a dirty tree says how many, and the caption says what that means
    assert (
        "| VeRA | 16,896 | 22.9 | 16,896 (0 of 5) | 70.0 (68.0–72.0, n=5) | 71.0 (69.0–73.0, n=5) | 5 (2 dirty) |"
        in table
    )
    assert "“k dirty”: k of the row's runs came from a tree with uncommitted changes" in table
    # the size behind the scores: the median over seeds, and how many seeds were scored before the last tie
    assert "| ASLoRA | 15,360 | 20.8 | 15,360 (2 of 5) | 79.0 (" in table
    assert (
        "| ASLoRA [max_merges=2] | 27,648 | 37.5 | 27,648 (1 of 5) |" in table
        and "| LoRA [r=2] | 18,432 | 25.0 | 18,432 (0 of 5) | 78.0 (" in table
    )
    # the paired differences are exact: ASLoRA is 1.0 below LoRA and 1.0 above LoRA r=2 on every seed
    # (a constant difference: a zero-width t-interval; the sign-flip p is its floor at n = 5, 2/32)
    assert "exact sign-flip p): -1.0 [-1.0, -1.0] (n=5, p=0.062)" in table
    # equal budgets: every ASLoRA point against the LoRA rank nearest its size (here all nearest r=2)
    assert "| ASLoRA | 15,360 | LoRA [r=2] | 18,432 | +1.0 [+1.0, +1.0] (n=5, p=0.062) | 5 |" in table
    assert "| ASLoRA [max_merges=2] | 27,648 | LoRA [r=2] | 18,432 | +1.5 [+1.5, +1.5] (n=5, p=0.062) | 5 |" in table
    rows = _rows()[15:18]  # ASLoRA seeds 1-3: two scored early, the median the larger size
    assert protocol_report._when_scored(rows) == "27,648 (2 of 3)"
    assert (
        protocol_report._when_scored([*rows, {**rows[0], "adapter_params_at_best": ""}]) == "—"
    )  # predates the column
    lines = table.splitlines()
    order = [line.split("|")[1].strip() for line in lines if line.startswith("| ") and not line.startswith("| adapter")]
    assert order[:3] == ["LoRA [r=1]", "LoRA [r=2]", "LoRA"]  # by size within an adapter
    assert (tmp_path / "protocol_minilm-l6.png").stat().st_size > 10_000

    # README's protocol block is filled by this script; make_tables' blocks are left to make_tables
    readme = tmp_path / "README.md"
    readme.write_text(
        "a\n<!-- table:protocol_minilm-l6 -->\nSTALE-BLOCK\n<!-- /table:protocol_minilm-l6 -->\n"
        "<!-- table:offline_minilm-l6 -->\nkept\n<!-- /table:offline_minilm-l6 -->\n"
    )
    args = ["--runs", str(runs), "--tables", str(tmp_path), "--figures", str(tmp_path), "--readme", str(readme)]
    assert protocol_report.main(args) == 0
    assert table in readme.read_text() and "STALE-BLOCK" not in readme.read_text() and "kept" in readme.read_text()
    readme.write_text("<!-- table:protocol_roberta-base -->\n<!-- /table:protocol_roberta-base -->\n")
    with pytest.raises(SystemExit, match=r"protocol_roberta-base"):
        protocol_report.main(args)


def test_without_protocol_runs(tmp_path):
    runs = tmp_path / "runs.csv"
    with open(runs, "w", newline="") as f:
        csv.DictWriter(f, fieldnames=COLUMNS).writeheader()
    assert protocol_report.main(["--runs", str(runs), "--if-any", "--tables", str(tmp_path / "t")]) == 0
    assert not (tmp_path / "t").exists()


def test_lr_table_shows_every_grid_value_and_bolds_the_choice():
    def row(adapter, lr, score, variant=""):
        return {
            "grid": "protocol-lr",
            "model": "minilm-l6",
            "task": "rt_polarity",
            "adapter": adapter,
            "variant": variant,
            "lr": str(lr),
            "best_metric": str(score),
            "main_metric": "accuracy",
            "run_name": f"rt_polarity_{adapter}_{variant}_{lr}",
        }

    rows = [
        row("lora", 1e-3, 0.75),
        row("lora", 3e-3, 0.79),
        row("lora", 1e-2, 0.77),
        row("aslora", 1e-3, 0.73),
        row("aslora", 3e-3, 0.75),
        row("aslora", 1e-2, 0.76),
        row("aslora", 3e-2, 0.575),
        row("lora", 3e-3, 0.786, variant="r=2"),
        {**row("lora", 3e-3, 0.9), "grid": "offline"},
    ]
    table = protocol_lr.lr_markdown("minilm-l6", rows)
    assert "| adapter | 0.001 | 0.003 | 0.01 | 0.03 |" in table
    assert "| LoRA | 75.0 | **79.0** | 77.0 | — |" in table  # the offline row is not part of the grid
    assert "| LoRA [r=2] | — | **78.6** | — | — |" in table
    assert "| ASLoRA | 73.0 | 75.0 | **76.0** | 57.5 |" in table
    # LoRA r=2 has one lr, LoRA r=8 and ASLoRA chose inside: no edge note; VeRA at its top edge gets one
    assert "edge" not in table
    # the gap the prose discusses, computed: 76.0 - 79.0 at the chosen lrs; 73-75, 75-79, 76-77 lr by lr
    assert (
        "ASLoRA − LoRA, validation accuracy ×100, one seed (negative favours LoRA): -3.0 at each one's chosen lr "
        "(0.01 against 0.003); lr by lr where both ran: 0.001: -2.0, 0.003: -4.0, 0.01: -1.0." in table
    )
    assert "†" not in table  # no run here says it came from a dirty tree
    dirty = [{**row("vera", 3e-2, 0.76), "git_dirty": "True"}, {**row("vera", 0.1, 0.78), "git_dirty": "False"}]
    table = protocol_lr.lr_markdown("minilm-l6", rows + dirty)
    assert "| VeRA | — | — | — | 76.0† | **78.0** |" in table
    assert "†: 1 of these 10 runs came from a tree with uncommitted changes" in table
    assert "VeRA: the choice sits at the top edge (`extend` goes no further than 0.1 up or 1e-05 down)" in table


def test_equal_budget_pairs_nearest_on_a_log_scale_ties_to_the_smaller_lora():
    def runs(size, seeds=(1, 2, 3)):
        return [{"adapter_params_after": size, "seed": s} for s in seeds]

    by_adapter = {
        ("lora", "r=1"): runs(9_216),
        ("lora", "r=4"): runs(36_864),
        ("lora", ""): runs(73_728),
        ("aslora", ""): runs(18_432),  # the geometric mean of r=1 and r=4: a tie → the smaller
        ("aslora", "max_merges=1"): runs(33_792),
        ("aslora", "max_merges=5"): runs(9_216),
        ("vera", ""): runs(16_896),
    }
    pairs = dict(protocol_report.equal_budget_pairs(by_adapter))
    assert pairs == {
        ("aslora", ""): ("lora", "r=1"),
        ("aslora", "max_merges=1"): ("lora", "r=4"),
        ("aslora", "max_merges=5"): ("lora", "r=1"),
    }
    assert protocol_report.equal_budget_pairs({("aslora", ""): runs(15_360)}) == []  # no LoRA, no pairs


def test_curve_points_are_labelled_by_their_setting():
    assert protocol_report._short("max_merges=2") == "≤2 ties" and protocol_report._short("max_merges=0") == "no ties"
    assert protocol_report._short("max_merges=1") == "≤1 tie"
    assert protocol_report._short("merge_distance_threshold=2.72") == "d≤2.72"
    assert protocol_report._short("r=4") == "r=4"


@pytest.mark.parametrize("early_seeds", [(1, 2), (1, 2, 3)])
def test_the_figure_draws_the_size_when_scored_where_most_seeds_scored_before_the_last_tie(
    tmp_path, monkeypatch, early_seeds
):
    import aslora.harness.measuring.figures as figures

    drawn = []
    monkeypatch.setattr(figures, "save", lambda fig, path: drawn.append(fig) or path)
    rows = _rows()
    for row in rows:  # ASLoRA (no variant) scored before its last two ties in these seeds
        early = row["adapter"] == "aslora" and row["variant"] == "" and row["seed"] in early_seeds
        row["adapter_params_at_best"] = row["adapter_params_after"] + (12_288 if early else 0)
    protocol_report.figure("minilm-l6", protocol_report.groups(rows)["minilm-l6"], tmp_path / "f.png")
    open_markers = [
        (list(line.get_xdata()), list(line.get_ydata()))
        for line in drawn[0].axes[0].get_lines()
        if line.get_marker() == "s" and line.get_markerfacecolor() == "white"
    ]
    if len(early_seeds) < 3:  # the median seed was scored at the final size: nothing to draw
        assert open_markers == []
    else:  # median size when scored 27,648, at ASLoRA's median test score 79.0
        assert open_markers == [([27_648], [pytest.approx(79.0)])]


def test_size_and_percent_of_lora_are_the_median_over_seeds():
    # a distance threshold lets 5 ties through in one seed and 4 in the others: size is the median
    runs = [
        {"adapter_params_after": size, "lora_reference": 73_728, "fraction_of_lora_after": size / 73_728}
        for size in (24_576, 21_504, 21_504)
    ]
    assert protocol_report._size(runs) == 21_504
    assert protocol_report._percent_of_lora(runs) == pytest.approx(100 * 21_504 / 73_728)


def test_a_loss_suite_is_reported_to_three_decimals_with_its_direction(tmp_path):
    """The instruct suite scores a held-out loss (~2.2): one decimal would hide the differences
    between adapters, and a negative ASLoRA − LoRA is then ASLoRA's win."""
    rows = []
    for adapter, variant, size, base in [
        ("lora", "", 460_800, 2.150),
        ("lora", "r=2", 115_200, 2.160),
        ("aslora", "", 109_056, 2.1630),
    ]:
        for seed, effect in SEED_EFFECT.items():
            row = {c: "" for c in COLUMNS}
            row.update(
                grid="protocol-instruct",
                model="smollm2-135m",
                task="instruct",
                adapter=adapter,
                variant=variant,
                seed=seed,
                main_metric="loss",
                best_metric=base + effect + 0.2,
                test_metric_at_best=base + effect,
                adapter_params_after=size,
                adapter_params_at_best=size,
                lora_reference=460_800,
                lr="0.001",
                run_name=f"protocol-instruct_smollm2-135m_instruct_{adapter}_{variant}_s{seed}",
            )
            rows.append(row)
            if seed == 1:  # the lr stage: one seed
                rows.append({**row, "grid": "protocol-instruct-lr", "run_name": row["run_name"] + "_lr"})
    runs = tmp_path / "runs.csv"
    with open(runs, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    assert protocol_report.main(["--runs", str(runs), "--tables", str(tmp_path), "--figures", str(tmp_path)]) == 0
    table = (tmp_path / "protocol_smollm2-135m.md").read_text()
    assert "**instruct**, loss (lower is better)" in table
    assert (
        "| LoRA | 460,800 | 100.0 | 460,800 (0 of 5) | 2.150 (" in table
        and "| ASLoRA | 109,056 | 23.7 | 109,056 (0 of 5) | 2.163 (" in table
    )
    assert (
        "(test; negative favours ASLoRA; mean [95 % t-interval], exact sign-flip p): +0.013 [+0.013, +0.013]" in table
    )
    assert "| ASLoRA | 109,056 | LoRA [r=2] | 115,200 | +0.003 [+0.003, +0.003] (n=5, p=0.062) | 5 |" in table
    lr_table = (tmp_path / "protocol-lr_smollm2-135m.md").read_text()
    assert "**instruct**, validation loss (lower is better)" in lr_table
    assert "| ASLoRA | **2.343** |" in lr_table  # seed 1: 2.163 - 0.02 + 0.2
    assert (  # LoRA's seed 1: 2.150 - 0.02 + 0.2 = 2.330
        "ASLoRA − LoRA, validation loss (lower is better), one seed (negative favours ASLoRA): +0.013 at each one's "
        "chosen lr (0.001 against 0.001); lr by lr where both ran: 0.001: +0.013." in lr_table
    )


def test_readme_blocks_of_other_scripts_are_left_alone_and_its_own_missing_ones_refused(tmp_path):
    """`make tables` runs this report on results/README.md, which also marks the benchmarks' blocks
    (``bench_*``, filled by scripts/bench/report.py): those are not this report's to miss."""
    rows = []
    for adapter, score in (("lora", 0.79), ("aslora", 0.76)):
        row = {c: "" for c in COLUMNS}
        row.update(
            grid="protocol-lr",
            model="minilm-l6",
            task="rt_polarity",
            adapter=adapter,
            lr="0.003",
            seed=1,
            main_metric="accuracy",
            best_metric=score,
            run_name=f"lr_{adapter}",
        )
        rows.append(row)
    runs = tmp_path / "runs.csv"
    with open(runs, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    bench = "<!-- table:bench_speed -->\nmeasured elsewhere\n<!-- /table:bench_speed -->\n"
    readme = tmp_path / "README.md"
    readme.write_text(f"<!-- table:protocol-lr_minilm-l6 -->\n<!-- /table:protocol-lr_minilm-l6 -->\n{bench}")
    argv = ["--runs", str(runs), "--tables", str(tmp_path), "--figures", str(tmp_path), "--if-any"]
    assert protocol_report.main([*argv, "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert "| ASLoRA | **76.0** |" in text and "-3.0 at each one's chosen lr (0.003 against 0.003)" in text
    assert bench in text
    readme.write_text(f"{text}<!-- table:protocol_gpt2 -->\n<!-- /table:protocol_gpt2 -->\n")
    with pytest.raises(SystemExit, match=r"protocol_gpt2"):
        protocol_report.main([*argv, "--readme", str(readme)])
