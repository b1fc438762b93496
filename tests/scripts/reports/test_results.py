"""The results pipeline (issue 4): reports → runs.csv → tables, and the sharing-map figures."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from aslora.harness.runs.run import run
from hydra_glue import compose_run, current_run_name, options
from scripts.reports import collect_results, make_tables, plot_sharing

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
ROOT = Path(__file__).resolve().parents[3]


def test_tables_from_fixture_runs_match_golden(tmp_path):
    assert make_tables.main(["--runs", str(FIXTURES / "runs.csv"), "--out", str(tmp_path)]) == 0
    golden = sorted(p.name for p in (FIXTURES / "golden").iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == golden
    for name in golden:
        assert (tmp_path / name).read_text() == (FIXTURES / "golden" / name).read_text(), name


def test_grids_another_report_tables_get_no_median_table(tmp_path):
    # the fixture's rows again under every grid name protocol_report / smalldata_report own (the depth
    # grid included): the tables written are exactly the fixture's, none for an owned grid
    with open(FIXTURES / "runs.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    owned = [{**row, "grid": grid} for grid in make_tables.OWNED_GRIDS for row in rows]
    assert "smalldata-depth" in make_tables.OWNED_GRIDS
    with open(tmp_path / "runs.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows([*rows, *owned])
    assert make_tables.main(["--runs", str(tmp_path / "runs.csv"), "--out", str(tmp_path / "t")]) == 0
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == sorted(p.name for p in (FIXTURES / "golden").iterdir())


def test_make_tables_without_runs_says_what_to_do(tmp_path):
    with pytest.raises(SystemExit, match="collect_results"):
        make_tables.main(["--runs", str(tmp_path / "none.csv"), "--out", str(tmp_path)])


def test_a_run_goes_through_collect_tables_and_sharing_map(tmp_path):
    experiments = tmp_path / "experiments"
    container, choices = compose_run(["debug=smoke", f"experiments_dir={experiments}"])
    run(container, choices)
    assert collect_results.main(["--experiments", str(experiments), "--out", str(tmp_path / "runs.csv")]) == 0
    with open(tmp_path / "runs.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert (row["adapter"], row["grid"], row["num_distinct_B_after"], row["num_merges"]) == (
        "aslora",
        "smoke",
        "4",
        "8",
    )
    assert float(row["fraction_of_lora_after"]) < 0.25
    report = json.loads((experiments / container["run_name"] / "report.json").read_text())
    assert row["adapter_params_at_best"] == str(report["params"]["at_best"]["adapter"])  # the size behind the scores
    make_tables.main(["--runs", str(tmp_path / "runs.csv"), "--out", str(tmp_path / "tables")])
    table = (tmp_path / "tables" / "smoke_minilm-l6.md").read_text()
    assert "| ASLoRA | 15,360 | 20.8 |" in table and "stand-in for sst2" in table

    run_dir = tmp_path / "sharing" / container["run_name"]  # the copy collect_results keeps: enough to draw
    assert (run_dir / "adapter" / "aslora_config.json").is_file() and not (
        run_dir / "adapter" / "aslora_model.safetensors"
    ).exists()
    _, adapter = plot_sharing.load(run_dir)
    types, groups, _ = plot_sharing.sharing_matrix(adapter)
    assert types == ["query", "value"] and groups.shape == (2, 6)
    assert [len(np.unique(g)) for g in groups] == [2, 2]  # 6 layers, 4 ties each → 2 B's per type
    assert len(np.unique(groups)) == 4  # a query B and a value B never share an id (or a colour)
    assert plot_sharing.main([str(run_dir), "--out", str(tmp_path / "plots")]) == 0
    for name in ("sharing_map.png", "merge_timeline.png"):
        assert (tmp_path / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # every report is kept; on a fresh checkout --restore puts it back, and the grid skips that run
    kept = tmp_path / "reports" / f"{container['run_name']}.json"
    assert json.loads(kept.read_text())["best"]["metric"] == float(row["best_metric"])
    fresh = tmp_path / "fresh_experiments"
    args = ["--experiments", str(fresh), "--out", str(tmp_path / "runs.csv"), "--restore"]
    assert collect_results.main(args) == 0
    assert (fresh / container["run_name"] / "report.json").read_bytes() == kept.read_bytes()
    again, choices = compose_run(["debug=smoke", f"experiments_dir={fresh}"])
    assert run(again, choices) == float(row["best_metric"])
    assert not (fresh / container["run_name"] / "adapter").exists()  # skipped, not rerun
    (fresh / container["run_name"] / "report.json").write_text("{}")  # a run's own report is never overwritten
    assert collect_results.main(args) == 0
    assert (fresh / container["run_name"] / "report.json").read_text() == "{}"


def test_sharing_map_ids_are_per_B_across_module_types():
    # merge_scope=joint can give a value layer a query layer's B: the map must show it as that B.
    slots = [{"module_type": t, "depth": d} for t in ("query", "value") for d in range(3)]
    sharing = {
        "query_0": "query_1",
        "query_1": "query_1",
        "query_2": "query_2",
        "value_0": "value_0",
        "value_1": "query_2",
        "value_2": "query_2",
    }
    types, groups, labels = plot_sharing.sharing_matrix({"slots": slots, "sharing": sharing})
    assert types == ["query", "value"]
    assert groups[1, 1] == groups[1, 2] == groups[0, 2] and groups[0, 0] == groups[0, 1]
    assert len(np.unique(groups)) == 3
    assert labels == [["1", "1", "2"], ["0", "query:2", "query:2"]]


@pytest.mark.parametrize("sweep", options("sweep"))
def test_every_sweep_config_composes_and_validates(sweep):
    """Every job the sweep launches, at each of its swept values (seeds aside: a seed changes no
    setting), composes, validates and plans its schedule."""
    from aslora.harness.runs.settings import RunSettings
    from hydra_glue import composer
    from scripts.grids.preflight import jobs_of

    with composer() as compose:
        jobs = jobs_of([f"sweep={sweep}"])
        distinct = {tuple(o for o in job if not o.startswith("seed=")) for job in jobs}
        assert len(jobs) >= len(distinct) >= 1
        for job in sorted(distinct):
            container, choices = compose(list(job))
            RunSettings.from_dict(container, choices).plan()
            assert "sweep=" not in container["run_name"]  # the grid is the prefix; its name is not a swept key


def test_plot_sweep_draws_one_figure_per_swept_setting(tmp_path):
    from scripts.reports import plot_sweep
    from scripts.reports.collect_results import COLUMNS

    rows = []
    for name, values in (("max_merges", ["0", "2", "4"]), ("merge_candidates", ["adjacent", "all"])):
        for value in values:
            for seed in (1, 2):
                row = {c: "" for c in COLUMNS}
                row.update(
                    run_name=f"merge_minilm-l6_rt_polarity_aslora_adapter.params.{name}={value}_s{seed}",
                    variant=f"{name}={value}",  # what collect_results writes from the report's variant
                    grid="merge",
                    model="minilm-l6",
                    task="rt_polarity",
                    main_metric="accuracy",
                    best_metric=0.7 + 0.01 * seed,
                    adapter_params_after=30000,
                    fraction_of_lora_after=0.41,
                    seed=seed,
                )
                rows.append(row)
    with open(tmp_path / "runs.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    points = plot_sweep.swept_points(rows)
    assert sorted(points) == ["max_merges", "merge_candidates"] and sorted(points["max_merges"]) == ["0", "2", "4"]
    assert plot_sweep.main(["--runs", str(tmp_path / "runs.csv"), "--out", str(tmp_path / "fig")]) == 0
    assert sorted(p.name for p in (tmp_path / "fig").iterdir()) == [
        "sweep_max_merges.png",
        "sweep_merge_candidates.png",
    ]


def test_plot_sweep_without_merge_runs_errors_unless_if_any(tmp_path):
    from scripts.reports import plot_sweep
    from scripts.reports.collect_results import COLUMNS

    runs = tmp_path / "runs.csv"
    with open(runs, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerow(
            {**{c: "" for c in COLUMNS}, "run_name": "offline_minilm-l6_rt_polarity_lora_s1", "grid": "offline"}
        )
    with pytest.raises(SystemExit, match="make sweep-merge"):
        plot_sweep.main(["--runs", str(runs), "--out", str(tmp_path / "fig")])
    assert plot_sweep.main(["--runs", str(runs), "--out", str(tmp_path / "fig"), "--if-any"]) == 0
    assert not (tmp_path / "fig").exists()


@pytest.mark.parametrize(
    "report, expected",
    [
        # what the run recorded is what counts: the swept adapter settings, sorted; the lr has its own column
        (
            {"run_name": "merge_m_t_aslora_s1", "variant": {"adapter.params.max_merges": 2, "train.lr": 0.003}},
            "max_merges=2",
        ),
        ({"run_name": "merge_m_t_aslora_adapter.params.max_merges=9_s1", "variant": {}}, ""),
        # reports written before the field existed: read back from the run name
        (
            {
                "run_name": "ablation_m_t_aslora_adapter.params.a_sharing=per_module,adapter.params.merge_selection=random_s1"
            },
            "a_sharing=per_module,merge_selection=random",
        ),
        (
            {"run_name": "merge_m_t_aslora_adapter.params.merge_distance_threshold=0.03_s2"},
            "merge_distance_threshold=0.03",
        ),
        ({"run_name": "offline_minilm-l6_rt_polarity_lora_s1"}, ""),
    ],
)
def test_variant_is_read_from_the_report(report, expected):
    assert collect_results.variant(report) == expected


def test_lora_initialised_from_another_run_is_reported_as_a_labelled_variant(tmp_path):
    """The MNLI-initialisation option end to end, with offline tasks standing in for MNLI → MRPC."""
    import torch
    from safetensors.torch import load_file

    experiments = tmp_path / "experiments"
    source, choices = compose_run(["debug=smoke", "adapter=lora", "task=rt_polarity", f"experiments_dir={experiments}"])
    run(source, choices)
    adapter_dir = experiments / source["run_name"] / "adapter"
    container, choices = compose_run(
        [
            "debug=smoke",
            "adapter=lora",
            "task=bbc_news",
            f"experiments_dir={experiments}",
            f"init_adapter_from={adapter_dir}",
            "train.lr=1e-12",
            "train.head_lr=1e-3",
        ]
    )
    assert "init_adapter_from" not in container["run_name"]  # a path is no part of a name; the report holds it
    run(container, choices)
    report = json.loads((experiments / container["run_name"] / "report.json").read_text())
    assert report["init_adapter_from"] == str(adapter_dir)
    # at lr 1e-12 the LoRA matrices stay where the source run left them; the 5-class head trained
    before = {k: v for k, v in load_file(str(adapter_dir / "adapter_model.safetensors")).items() if ".lora_" in k}
    after = load_file(str(experiments / container["run_name"] / "adapter" / "adapter_model.safetensors"))
    assert before and all(torch.allclose(after[k], v, atol=1e-6) for k, v in before.items())
    assert collect_results.main(["--experiments", str(experiments), "--out", str(tmp_path / "runs.csv")]) == 0
    rows = {r["task"]: r for r in csv.DictReader(open(tmp_path / "runs.csv"))}
    assert rows["bbc_news"]["variant"] == "init=rt_polarity" and rows["rt_polarity"]["variant"] == ""


def test_init_adapter_from_is_refused_for_other_adapters_and_missing_directories(tmp_path):
    from aslora.harness.runs.settings import RunSettings

    container, choices = compose_run(["adapter=aslora", f"init_adapter_from={tmp_path}"])
    with pytest.raises(ValueError, match="init_adapter_from is for adapter=lora"):
        RunSettings.from_dict(container, choices)
    container, choices = compose_run(
        ["adapter=lora", f"init_adapter_from={tmp_path / 'none'}", f"experiments_dir={tmp_path / 'exp'}"]
    )
    with pytest.raises(ValueError, match="holds no saved adapter"):
        run(container, choices)
    assert not (tmp_path / "exp").exists()


def test_readme_table_blocks_are_filled_from_the_generated_tables(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(
        "intro\n<!-- table:offline_minilm-l6 -->\nstale numbers\n<!-- /table:offline_minilm-l6 -->\nend\n"
    )
    assert (
        make_tables.main(["--runs", str(FIXTURES / "runs.csv"), "--out", str(tmp_path / "t"), "--readme", str(readme)])
        == 0
    )
    golden = (FIXTURES / "golden" / "offline_minilm-l6.md").read_text()
    assert (
        readme.read_text()
        == f"intro\n<!-- table:offline_minilm-l6 -->\n{golden}<!-- /table:offline_minilm-l6 -->\nend\n"
    )
    readme.write_text("<!-- table:nonexistent_grid -->\n<!-- /table:nonexistent_grid -->\n")
    with pytest.raises(SystemExit, match="nonexistent_grid"):
        make_tables.main(["--runs", str(FIXTURES / "runs.csv"), "--out", str(tmp_path / "t"), "--readme", str(readme)])


def test_collect_keeps_rows_of_runs_it_does_not_find_unless_replace(tmp_path):
    out = tmp_path / "runs.csv"
    out.write_text((FIXTURES / "runs.csv").read_text())
    before = {r["run_name"] for r in csv.DictReader(open(out))}
    (tmp_path / "experiments").mkdir()
    assert collect_results.main(["--experiments", str(tmp_path / "experiments"), "--out", str(out)]) == 0
    assert {r["run_name"] for r in csv.DictReader(open(out))} == before and before
    assert collect_results.main(["--experiments", str(tmp_path / "experiments"), "--out", str(out), "--replace"]) == 0
    assert list(csv.DictReader(open(out))) == []


def _minimal_report(**train) -> dict:
    params = {"adapter": 100, "num_distinct_B": 2}
    return {
        "run_name": "smalldata_m_t_aslora_s1",
        "config": {"run_prefix": "smalldata_", "adapter": {"params": {}}, "train": {"lr": 1e-3, **train}},
        "model": "m",
        "task": "t",
        "adapter": "aslora",
        "seed": 1,
        "main_metric": "accuracy",
        "best": {"metric": 0.7, "epoch": 3, "test": {"accuracy": 0.69}},
        "params": {"before": params, "after": params, "lora_reference": 400, "fraction_of_lora_after": 0.25},
        "merge_history": [],
        "steps": 10,
        "train_seconds": 1.0,
        "environment": {"device": "cpu", "git_sha": "abc", "git_dirty": False},
        "variant": {},
    }


def test_a_runs_shared_a_lr_is_a_column_of_its_row():
    """Two arms that differ only in train.shared_a_lr (the small-data suite's A at lr/10) differ in runs.csv."""
    plain = collect_results.row(_minimal_report(), Path("r.json"))
    slow_a = collect_results.row(_minimal_report(shared_a_lr=1e-4), Path("r.json"))
    assert plain["shared_a_lr"] == "" and slow_a["shared_a_lr"] == 1e-4 and plain["lr"] == slow_a["lr"] == 1e-3
    assert set(slow_a) == set(collect_results.COLUMNS)


def test_committed_runs_are_restored_where_todays_jobs_look_so_a_fresh_clone_skips_them(tmp_path):
    """Reports committed before run names dropped the swept keys' ``train.``/``adapter.params.``
    prefixes are restored under today's names: every primary job of the confirmatory stage — composed
    as the stage composes it — then finds its finished run, and nothing runs again."""
    from scripts.grids.smalldata import CONFIRM_SWEEP, PRIMARY_ARMS, confirm_commands, read_arm_lr
    from scripts.grids.workspace import Workspace, every_job_done

    reports = ROOT / "results" / "reports"
    old = "smalldata-confirm_minilm-l6_rt_polarity_lora_adapter.params.r=2,train.lr=0.001_s6"
    assert (reports / f"{old}.json").is_file()  # named under the old rule
    space = Workspace.scratch(tmp_path)
    restored = collect_results.restore_reports(reports, space.experiments)
    assert len(restored) == len(list(reports.glob("*.json")))
    assert "smalldata-confirm_minilm-l6_rt_polarity_lora_r=2,lr=0.001_s6" in restored and old not in restored
    primary = confirm_commands(read_arm_lr(ROOT / "results" / "smalldata" / "arm_lr.csv"))[: 20 * len(PRIMARY_ARMS)]
    arms = {tuple(arm.commands(0, 0, CONFIRM_SWEEP)[:-2]) for arm in PRIMARY_ARMS}
    assert {tuple(c[:-2]) for c in primary} == arms and {c[-1] for c in primary} == {f"seed={s}" for s in range(6, 26)}
    for command in primary:  # LoRA r=8, LoRA r=2 and ASLoRA (paper schedule), seeds 6-25: all committed
        assert every_job_done([*command, *space.overrides]), command


def test_current_run_name_shortens_only_the_swept_part():
    report = {
        "run_name": "",
        "config": {"run_prefix": "p_"},
        "model": "m",
        "task": "t_train.x",
        "adapter": "lora",
        "seed": 3,
    }
    named = lambda name: current_run_name({**report, "run_name": name})  # noqa: E731
    assert named("p_m_t_train.x_lora_adapter.params.r=2,train.lr=0.001_s3") == "p_m_t_train.x_lora_r=2,lr=0.001_s3"
    assert named("p_m_t_train.x_lora_r=2,lr=0.001_s3") == "p_m_t_train.x_lora_r=2,lr=0.001_s3"  # today's: kept
    assert named("p_m_t_train.x_lora_s3") == "p_m_t_train.x_lora_s3"  # nothing swept
    assert named("by-hand_train.lr=1") == "by-hand_train.lr=1"  # not of the form: kept as it is


def test_restore_checks_every_report_first_and_never_writes_through_a_link(tmp_path):
    reports = tmp_path / "reports"
    reports.mkdir()
    name = "smalldata-confirm_minilm-l6_rt_polarity_lora_train.lr=0.001_s6"
    shutil.copyfile(ROOT / "results" / "reports" / f"{name}.json", reports / f"{name}.json")
    (reports / "zz_broken.json").write_text('{"status": "done"}')
    args = ["--experiments", str(tmp_path / "experiments"), "--out", str(tmp_path / "runs.csv"), "--restore"]
    assert collect_results.main(args) == 1
    assert not (tmp_path / "experiments").exists()  # the good report was not restored either
    (reports / "zz_broken.json").unlink()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "smalldata-confirm_minilm-l6_rt_polarity_lora_lr=0.001_s6").symlink_to(elsewhere)
    assert collect_results.main(args) == 1
    assert list(elsewhere.iterdir()) == []
