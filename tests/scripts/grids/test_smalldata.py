"""The small-data suite (issue 24): its stages compose into the intended runs."""

from __future__ import annotations

import pytest

from aslora.harness.runs.settings import RunSettings
from hydra_glue import compose_run
from scripts.grids import lr_search
from scripts.grids.smalldata import ARMS, DEPTH_SEEDS, LR_GRID, SEEDS, depth_commands, final_commands, lr_commands

TRAIN_EXAMPLES = 1000  # configs/sweep/smalldata_*.yaml: task.max_train_examples
LR_GRID_VALUES = ("0.001", "0.003", "0.01")


def _settings(overrides: list[str]) -> RunSettings:
    container, choices = compose_run(overrides)
    return RunSettings.from_dict(container, choices)


def _chosen_rows() -> list[dict]:
    """One lr-stage row per (adapter, variant, lr), as collect_results writes them from the reports
    the lr stage's runs would write (their ``variant``: the swept adapter settings, as data)."""
    from scripts.reports.collect_results import variant

    rows = []
    for overrides in lr_commands():
        for score, lr in zip((0.70, 0.75, 0.72), LR_GRID_VALUES, strict=True):
            settings = _settings([*overrides, f"train.lr={lr}", "seed=1"])
            adapter = settings.adapter.name
            rows.append(
                {
                    "grid": LR_GRID,
                    "task": settings.task.name,
                    "adapter": adapter,
                    "lr": lr,
                    "variant": variant(
                        {"variant": dict(o.split("=", 1) for o in overrides if o.startswith("adapter.params."))}
                    ),
                    "best_metric": str(score),
                    "main_metric": "accuracy",
                    "run_name": settings.run_name,
                }
            )
    return rows


def test_lr_stage_runs_three_adapters_over_three_lrs_in_the_small_data_regime():
    runs = [_settings([*c, f"train.lr={lr}", "seed=1"]) for c in lr_commands() for lr in LR_GRID_VALUES]
    assert len(runs) == 9 and len({s.run_name for s in runs}) == 9
    for s in runs:
        assert s.run_name.startswith("smalldata-lr_minilm-l6_rt_polarity_")
        assert (s.task.max_train_examples, s.task.max_eval_examples, s.train.batch_size, s.train.epochs) == (
            1000,
            500,
            16,
            30,
        )
        assert s.train.group_by_length and s.plan(TRAIN_EXAMPLES).total_steps == 30 * 63


def test_final_stage_runs_every_arm_at_its_chosen_lr_seed_by_seed():
    chosen = lr_search.select(_chosen_rows(), (LR_GRID,))
    assert {(r["adapter"], r["variant"]) for r in chosen} == {arm.lr_from for arm in ARMS}
    assert all(r["lr"] == "0.003" for r in chosen)  # the fixture's best validation
    commands = final_commands(chosen)
    assert len(commands) == len(ARMS) * len(SEEDS) == 40
    # seed by seed, every arm within a seed: the same 8 arms for each seed, differing only in it
    assert [c[-1] for c in commands] == [f"seed={s}" for s in SEEDS for _ in ARMS]
    assert all(commands[i][:-1] == commands[i % len(ARMS)][:-1] for i in range(len(commands)))
    first_seed = [_settings(c) for c in commands[: len(ARMS)]]  # composing one seed's arms covers every arm
    names = [s.run_name for s in first_seed]
    assert len(set(names)) == len(names) and all(n.startswith("smalldata_minilm-l6_rt_polarity_") for n in names)
    shared_a = [s for s in first_seed if s.train.shared_a_lr is not None]
    assert len(shared_a) == 1 and shared_a[0].train.shared_a_lr == pytest.approx(shared_a[0].train.lr / 10)


def _merge_steps(arm) -> list[int]:
    return list(_settings(arm.commands(3e-3, 1)).plan(TRAIN_EXAMPLES).merge_steps)


def test_the_paper_schedule_ends_its_ties_by_thirty_percent_of_the_run():
    total = 30 * 63
    paper = _merge_steps(ARMS[2])
    assert paper == [152, 217, 282, 347] and paper[-1] / total <= 0.30
    shipped = _merge_steps(ARMS[3])
    assert len(shipped) == 4 and shipped[-1] / total > 0.6  # the shipped schedule ties until 70 %
    warmup = _settings(ARMS[2].commands(3e-3, 1)).plan(TRAIN_EXAMPLES).warmup_steps
    assert paper[0] > warmup  # no tie is decided on B's that have not moved


def test_ablation_arms_tie_as_often_and_when_aslora_does():
    by_label = {arm.label: arm for arm in ARMS}
    paper = _merge_steps(by_label["ASLoRA, paper schedule"])
    for label in ("ASLoRA, random ties", "ASLoRA, fixed ties", "ASLoRA, paper schedule, A at lr/10"):
        assert _merge_steps(by_label[label]) == paper, label
    assert _merge_steps(by_label["ASLoRA, no ties (shared A only)"]) == []
    selections = {
        _settings(by_label[label].commands(3e-3, 1)).adapter_config().merge_selection
        for label in ("ASLoRA, paper schedule", "ASLoRA, random ties", "ASLoRA, fixed ties")
    }
    assert selections == {"similarity", "random", "fixed"}


def test_shared_a_lr_is_refused_for_an_adapter_without_a_shared_a():
    with pytest.raises(ValueError, match=r"train.shared_a_lr=0.001 is for adapters with a shared A .*adapter='lora'"):
        _settings(["adapter=lora", "train.shared_a_lr=1e-3"])


def _fixture_report(arm, seed: int, test: float, curve: list[float], extra: tuple = ()) -> dict:
    """A report as train.py writes it, for ``arm`` at ``seed``: the config composed from the arm's own
    overrides (the report code identifies arms by config, so the fixture must hold the real one)."""
    from hydra_glue import compose_run

    container, _ = compose_run([*arm.commands(3e-3, seed), *extra])
    epochs = [
        {"epoch": i + 1, "train_loss": 0.7 / (i + 1), "val": {"accuracy": v, "loss": 0.5 + 0.01 * i}}
        for i, v in enumerate(curve)
    ]
    best = max(range(len(curve)), key=lambda i: curve[i])
    size = 15_360 if arm.adapter == "aslora" else 73_728 // (8 // container["adapter"]["params"]["r"])
    return {
        "status": "done",
        "config": container,
        "seed": seed,
        "adapter": arm.adapter,
        "model": container["model"]["name"],
        "task": "rt_polarity",
        "wall_seconds": 600.0,
        "main_metric": "accuracy",
        "best": {"metric": curve[best], "epoch": best + 1, "test": {"accuracy": test}},
        "epochs": epochs,
        "params": {"after": {"adapter": size}, "at_best": {"adapter": size}, "lora_reference": 73_728},
        "steps": 63 * len(curve),
        "merge_history": [{"step": 152}, {"step": 347}] if arm.adapter == "aslora" else [],
        "train_examples": 1000,
        "environment": {"device": "CPU: test (2 cores)"},
    }


def test_the_report_identifies_arms_from_their_configs_and_pairs_them_by_seed(tmp_path):
    import json

    from scripts.grids.smalldata import ARMS
    from scripts.reports.smalldata_report import arm_identities, by_arm, final_table, main, read_reports

    lora, lora2, paper, shipped = ARMS[0], ARMS[1], ARMS[2], ARMS[3]
    reports = [
        _fixture_report(lora, 1, 0.80, [0.70, 0.78, 0.76]),
        _fixture_report(lora, 2, 0.78, [0.71, 0.77, 0.74]),
        _fixture_report(lora2, 1, 0.79, [0.70, 0.75, 0.77]),
        _fixture_report(paper, 1, 0.77, [0.68, 0.74, 0.75]),
        _fixture_report(paper, 2, 0.74, [0.69, 0.73, 0.72]),
        _fixture_report(shipped, 1, 0.75, [0.69, 0.74, 0.73]),
    ]
    reports[-1]["environment"]["git_dirty"] = True  # its tree had uncommitted changes: the row says so
    arms = by_arm(reports, arm_identities())
    assert {label: len(runs) for label, runs in arms.items()} == {
        lora.label: 2,
        lora2.label: 1,
        paper.label: 2,
        shipped.label: 1,
    }  # shipped ≠ paper: by config
    table = "\n".join(final_table(arms))
    # paper − LoRA r=8 by seed: 77−80 = −3, 74−78 = −4 → mean −3.5; against LoRA r=2 only seed 1: 77−79 = −2
    assert (
        f"| {paper.label} | 15,360 | 20.8 | 0 of 2 | 2.5 | 75.5 (74.0–77.0, n=2) | -3.5 (n=2: -3.0, -4.0) | "
        f"-2.0 (n=1: -2.0) |" in table
    )  # below five seeds, the differences themselves, not an interval
    assert f"| {lora.label} | 73,728 | 100.0 | 0 of 2 | 2 | 79.0 (78.0–80.0, n=2) | — |" in table
    assert f"| {shipped.label} (1 dirty) | 15,360 |" in table and "dirty" not in table.replace(
        shipped.label + " (1 dirty)", ""
    )
    directory = tmp_path / "reports"
    directory.mkdir()
    for r in reports:
        prefix = r["config"]["run_prefix"]
        (directory / f"{prefix}{r['adapter']}_{r['seed']}_{len(json.dumps(r['config']))}.json").write_text(
            json.dumps(r)
        )
    assert len(read_reports(directory, "smalldata")) == len(reports)
    assert (
        main(["--reports", str(directory), "--out", str(tmp_path / "out"), "--figure", str(tmp_path / "curves.png")])
        == 0
    )
    written = (tmp_path / "out" / "tables.md").read_text()
    assert "PARTIAL: seeds still to run" in written and f"{paper.label} (3)" in written
    assert f"| {lora.label} | 2 | 0.50 (1) | 0.52 | 0.233 | 77.5 (2) | 75.0 |" in written  # the curves, tabled
    assert (tmp_path / "curves.png").stat().st_size > 10_000


def test_the_curve_table_reads_the_median_curves_where_they_bottom_out_peak_and_end():
    from scripts.reports.smalldata_report import arm_identities, by_arm, curve_table, curves

    lora, paper = ARMS[0], ARMS[2]
    reports = [
        _fixture_report(lora, 1, 0.80, [0.70, 0.78, 0.76]),
        _fixture_report(lora, 2, 0.78, [0.72, 0.76, 0.74]),
        _fixture_report(lora, 3, 0.78, [0.74, 0.74, 0.80]),
        _fixture_report(paper, 1, 0.77, [0.68, 0.74, 0.75]),
    ]
    reports[3]["epochs"][0]["val"]["loss"] = 0.9  # the paper arm's loss bottoms out at epoch 2, not 1
    arms = by_arm(reports, arm_identities())
    table = "\n".join(curve_table(arms, curves(arms)))
    # LoRA: median accuracy per epoch 72, 76, 76 → highest 76.0 first at epoch 2; loss 0.5 + 0.01·(epoch−1);
    # training loss 0.7 / epoch → 0.233 at epoch 3
    assert f"| {lora.label} | 3 | 0.50 (1) | 0.52 | 0.233 | 76.0 (2) | 76.0 |" in table
    assert f"| {paper.label} | 1 | 0.51 (2) | 0.52 | 0.233 | 75.0 (3) | 75.0 |" in table
    assert ARMS[1].label not in table  # an arm with no runs has no row


def test_the_depth_stage_runs_the_three_main_arms_on_twelve_layers_under_its_own_grid():
    chosen = lr_search.select(_chosen_rows(), (LR_GRID,))
    commands = depth_commands(chosen)
    assert len(commands) == 3 * len(DEPTH_SEEDS) and len(depth_commands(chosen, (1, 2, 3))) == 9
    runs = [_settings(c) for c in commands]
    assert [s.adapter.name for s in runs] == ["lora", "lora", "aslora"]
    assert all(s.run_name.startswith("smalldata-depth_mpnet-base_rt_polarity_") for s in runs)
    assert all(s.train.lr == 3e-3 and s.train.epochs == 30 for s in runs)  # MiniLM's chosen lr, the same regime
    aslora = runs[2]
    plan = aslora.plan(TRAIN_EXAMPLES)
    # 12 layers: 7 ties per type (RoBERTa-base's), all done by 30 % of the run, as the paper's are
    assert aslora.adapter.params["max_merges"] == 7
    assert len(plan.merge_steps) == 7 and max(plan.merge_steps) <= 0.30 * plan.total_steps


def test_the_report_tables_the_depth_runs_apart_from_minilms_arms(tmp_path):
    import json

    from scripts.grids.smalldata import DEPTH_GRID, DEPTH_MODEL
    from scripts.reports.smalldata_report import main

    depth = (f"model={DEPTH_MODEL}", f"run_prefix={DEPTH_GRID}_")
    reports = [
        _fixture_report(ARMS[0], 1, 0.80, [0.70, 0.78, 0.76]),
        _fixture_report(ARMS[0], 1, 0.84, [0.72, 0.82, 0.80], depth),
        _fixture_report(ARMS[2], 1, 0.83, [0.71, 0.81, 0.79], depth),
    ]
    reports.append(_fixture_report(ARMS[0], 3, 0.85, [0.73, 0.83, 0.81], depth))
    for r, sha in zip(reports, ("1" * 40, "2" * 40, "2" * 40, "3" * 40), strict=True):
        r["environment"]["git_sha"] = sha
    directory = tmp_path / "reports"
    directory.mkdir()
    for i, r in enumerate(reports):
        (directory / f"{r['config']['run_prefix']}{i}.json").write_text(json.dumps(r))
    out = tmp_path / "out"
    assert main(["--reports", str(directory), "--out", str(out), "--figure", str(tmp_path / "c.png")]) == 0
    written = (out / "tables.md").read_text()
    minilm, depth_part = written.split("Depth (")
    assert "runs by commit: `2222222`: seed 1; `3333333`: seed 3;" in depth_part  # which code made which seed
    assert f"| {ARMS[0].label} | 73,728 | 100.0 | 0 of 1 | 2 | 80.0 (80.0–80.0, n=1)" in minilm  # the MiniLM run only
    assert f"{ARMS[2].label}" not in minilm.split("Final arms")[1].split("PARTIAL")[0]
    assert f"| {ARMS[0].label} | 73,728 | 100.0 | 0 of 2 | 2 | 84.5 (84.0–85.0, n=2)" in depth_part
    assert f"| {ARMS[2].label} | 15,360 | 20.8 | 0 of 1 | 2 | 83.0 (83.0–83.0, n=1) | -1.0 (n=1: -1.0)" in depth_part
    assert f"{ARMS[0].label} 10, 10 min" in depth_part
    # the stage's status comes from the reports: seeds 1-5 of each of the three arms
    assert depth_part.endswith(
        f"PARTIAL: depth seeds still to run — {ARMS[0].label} (seeds 2, 4, 5), {ARMS[1].label} (seeds 1, 2, 3, 4, "
        f"5), {ARMS[2].label} (seeds 2, 3, 4, 5).\n"
    )
    for arm, seed in [(a, s) for a in ARMS[:3] for s in range(1, 6)]:
        (directory / f"{DEPTH_GRID}_full_{ARMS.index(arm)}_{seed}.json").write_text(
            json.dumps(_fixture_report(arm, seed, 0.8, [0.7, 0.8, 0.8], depth))
        )
    assert main(["--reports", str(directory), "--out", str(out), "--figure", str(tmp_path / "c.png")]) == 0
    assert "PARTIAL" not in (out / "tables.md").read_text().split("Depth (")[1]


def test_a_grid_refuses_a_dirty_tree_naming_the_files_and_writes_nothing(tmp_path, monkeypatch):
    import scripts.grids.workspace as workspace
    from scripts.grids.smalldata import SMALLDATA
    from scripts.grids.stages import run_stage

    monkeypatch.setattr(workspace, "modified_files", lambda root: ["aslora/adapters/pool.py", "configs/train.yaml"])
    space = workspace.Workspace(root=tmp_path)  # restores and trains: a grid of committed results
    with pytest.raises(SystemExit, match=r"uncommitted changes \(aslora/adapters/pool.py, configs/train.yaml\)"):
        run_stage(SMALLDATA, "arm-lr", space)
    assert list(tmp_path.iterdir()) == []  # nothing restored, nothing trained
    calls = []
    monkeypatch.setattr(workspace.subprocess, "run", lambda *a, **k: calls.append(a))
    here = (f"experiments_dir={tmp_path / 'experiments'}",)  # no finished run there: train.py is started
    workspace.Workspace(root=tmp_path, overrides=here, allow_dirty=True).train(["sweep=smalldata_lr"], dry_run=False)
    assert len(calls) == 1  # allow_dirty: it runs (each report then carries the diff)
    monkeypatch.undo()
    assert modified_files_of_a_clean_checkout(tmp_path) == []


def modified_files_of_a_clean_checkout(path):
    import subprocess

    from scripts.grids.workspace import modified_files

    subprocess.run(["git", "init", "-q", str(path / "repo")], check=True)
    (path / "repo" / "a.txt").write_text("a")
    subprocess.run(["git", "-C", str(path / "repo"), "add", "a.txt"], check=True)
    subprocess.run(
        ["git", "-C", str(path / "repo"), "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "a"], check=True
    )
    clean = modified_files(path / "repo")
    (path / "repo" / "a.txt").write_text("b")
    assert modified_files(path / "repo") == ["a.txt"]
    return clean


def test_each_arm_s_lr_is_chosen_on_its_own_validation_runs():
    from scripts.grids.smalldata import choose_lr

    def run(lr, metric):
        return {"config": {"train": {"lr": lr}}, "best": {"metric": metric}, "run_name": f"r{lr}"}

    inside = choose_lr([run(3e-4, 0.70), run(1e-3, 0.77), run(3e-3, 0.77), run(1e-2, 0.60)])
    assert inside["lr"] == 1e-3 and inside["edge"] == ""  # a tie goes to the smaller lr
    top = choose_lr([run(3e-4, 0.70), run(1e-3, 0.72), run(3e-3, 0.75)])
    assert top["lr"] == 3e-3 and top["edge"] == "top" and top["grid"] == "0.0003,0.001,0.003"


def test_the_confirmatory_commands_follow_the_plan_s_seeds_and_each_arm_s_lr():
    import json as _json

    from hydra_glue import ROOT
    from scripts.grids.smalldata import ARMS, confirm_commands

    plan = _json.loads((ROOT / "results" / "smalldata" / "plan.json").read_text())
    lrs = {arm.label: 1e-3 * (i + 1) for i, arm in enumerate(ARMS)}
    commands = confirm_commands(lrs)
    for arm in ARMS:
        first, last = plan["seeds"][arm.label]
        mine = [
            c
            for c in commands
            if c[: len(arm.commands(lrs[arm.label], 0, "smalldata_confirm")) - 1]
            == arm.commands(lrs[arm.label], 0, "smalldata_confirm")[:-1]
        ]
        assert sorted(int(c[-1].split("=")[1]) for c in mine) == list(range(first, last + 1)), arm.label
    assert all(c[0] == "sweep=smalldata_confirm" for c in commands)
