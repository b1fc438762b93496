"""The comparison protocol's stages (issue 14) on fixture rows: lr chosen on validation, final and
curve commands that compose into valid runs, thresholds that bind."""

from __future__ import annotations

import pytest
import torch

from aslora.harness.runs.settings import RunSettings
from hydra_glue import compose_run
from scripts.grids import lr_search
from scripts.grids.lr_search import next_lr
from scripts.grids.protocol import LR_GRIDS, LR_SWEEP, SWEEPS, curve_commands, final_commands, thresholds


def select(rows):
    return lr_search.select(rows, LR_GRIDS)


def extension_commands(chosen):
    return lr_search.extension_commands(chosen, LR_SWEEP)


def extend_until_inside(current_rows, train):
    return lr_search.extend_until_inside(current_rows, train, LR_GRIDS, LR_SWEEP)


def _row(task, adapter, lr, score, variant="", metric="accuracy"):
    return {
        "grid": "protocol-lr",
        "task": task,
        "adapter": adapter,
        "variant": variant,
        "lr": str(lr),
        "best_metric": str(score),
        "main_metric": metric,
        "run_name": f"{task}_{adapter}_{variant}_{lr}",
    }


ROWS = [
    _row("rt_polarity", "lora", 3e-4, 0.74),
    _row("rt_polarity", "lora", 1e-3, 0.77),
    _row("rt_polarity", "lora", 3e-3, 0.76),
    _row("rt_polarity", "aslora", 3e-4, 0.70),
    _row("rt_polarity", "aslora", 1e-3, 0.75),
    _row("rt_polarity", "aslora", 3e-3, 0.75),
    _row("rt_polarity", "lora", 1e-3, 0.73, variant="r=2"),
    _row("rt_polarity", "lora", 3e-3, 0.75, variant="r=2"),
    _row("rt_polarity", "vera", 1e-3, 0.55),
    _row("rt_polarity", "vera", 1e-2, 0.71),
    _row("instruct", "aslora", 3e-4, 2.40, metric="loss"),
    _row("instruct", "aslora", 1e-3, 2.30, metric="loss"),
    {**_row("rt_polarity", "lora", 1e-2, 0.99), "grid": "offline"},  # another grid: never chosen from
]


def test_select_takes_the_best_validation_lr_per_adapter_and_records_the_grid():
    chosen = {(r["task"], r["adapter"], r["variant"]): r for r in select(ROWS)}
    assert (
        chosen["rt_polarity", "lora", ""]["lr"] == "0.001"
        and chosen["rt_polarity", "lora", ""]["grid"] == "0.0003,0.001,0.003"
    )
    assert chosen["rt_polarity", "aslora", ""]["lr"] == "0.001"  # a tie goes to the smaller lr
    assert chosen["rt_polarity", "lora", "r=2"]["lr"] == "0.003"
    assert chosen["rt_polarity", "vera", ""]["lr"] == "0.01"
    assert chosen["instruct", "aslora", ""]["lr"] == "0.001"  # held-out loss: lower is better


def test_final_commands_compose_into_valid_five_seed_runs_at_the_chosen_lr():
    commands = final_commands(select(ROWS))
    assert [
        "sweep=protocol_final",
        "task=rt_polarity",
        "adapter=lora",
        "adapter.params.r=2",
        "train.lr=0.003",
    ] in commands
    assert ["sweep=protocol_instruct_final", "task=instruct", "adapter=aslora", "train.lr=0.001"] in commands
    for overrides in commands:
        container, choices = compose_run([*overrides, "seed=1"])
        settings = RunSettings.from_dict(container, choices)
        prefix = "protocol-instruct_smollm2-135m_" if overrides[1] == "task=instruct" else "protocol_minilm-l6_"
        assert settings.run_name.startswith(prefix) and settings.train.lr == float(overrides[-1].split("=")[1])
        settings.plan()
    only_instruct = final_commands(select(ROWS), suite="protocol-instruct")
    assert only_instruct == [c for c in commands if c[1] == "task=instruct"] and only_instruct


@pytest.mark.parametrize("model_name, tasks", [("minilm-l6", ["rt_polarity"]), ("smollm2-135m", ["instruct"])])
def test_lora_r2_is_the_rank_nearest_aslora_final_size(model_name, tasks):
    """The equal-budget baseline every lr stage runs (adapter.params.r=2), from closed-form counts."""
    from transformers import AutoModelForSequenceClassification

    import aslora
    from aslora.params import lora_parameter_count
    from tests.conftest import tie_lowest_upward
    from tests.test_configs import _architecture

    container, choices = compose_run([f"model={model_name}", f"task={tasks[0]}", "adapter=aslora"])
    config = RunSettings.from_dict(container, choices).adapter_config()
    with torch.device("meta"):
        model = aslora.apply_adapter(AutoModelForSequenceClassification.from_config(_architecture(model_name)), config)
    shapes = [(s.in_features, s.out_features) for s in aslora.find_pool(model).slots.values()]
    tie_lowest_upward(model, config.merges_allowed)
    final = aslora.count_parameters(model).adapter
    nearest = min(range(1, 9), key=lambda r: abs(lora_parameter_count(shapes, r) - final))
    assert nearest == 2, (final, [lora_parameter_count(shapes, r) for r in (1, 2, 3)])
    assert any("adapter.params.r=2" in c for c in SWEEPS["protocol"].lr_stage + SWEEPS["protocol-instruct"].lr_stage)


def test_final_stage_runs_the_main_comparison_first():
    """ASLoRA, LoRA r=8 and LoRA r=2 on every task before the other adapters: a protocol stopped
    part-way has answered the question it exists for."""
    adapters = [(c[2], c[3] if c[3].startswith("adapter.params") else "") for c in final_commands(select(ROWS))]
    assert adapters[:5] == [
        ("adapter=aslora", ""),
        ("adapter=aslora", ""),
        ("adapter=lora", ""),
        ("adapter=lora", "adapter.params.r=2"),
        ("adapter=vera", ""),
    ]


def test_thresholds_are_quantiles_of_recorded_tie_distances():
    reports = [{"merge_history": [{"distance": d} for d in (0.1, 0.2, 0.3, 0.4, 0.5)]}]
    assert thresholds(reports) == [0.2, 0.3, 0.4]
    with pytest.raises(SystemExit, match="no tie distances recorded yet"):
        thresholds([{"merge_history": []}])


def test_curve_commands_sweep_sizes_at_the_chosen_lr_with_three_seeds():
    reports = [{"task": "rt_polarity", "merge_history": [{"distance": d} for d in (0.1, 0.2, 0.3, 0.4, 0.5)]}]
    commands = curve_commands(select(ROWS), reports)
    assert commands == [
        [
            "sweep=protocol_final",
            "task=rt_polarity",
            "adapter=aslora",
            "train.lr=0.001",
            "seed=1,2,3",
            "adapter.params.max_merges=0,1,2,3,5",
        ],
        [
            "sweep=protocol_final",
            "task=rt_polarity",
            "adapter=aslora",
            "train.lr=0.001",
            "seed=1,2,3",
            "adapter.params.merge_distance_threshold=0.2,0.3,0.4",
        ],
        [
            "sweep=protocol_final",
            "task=rt_polarity",
            "adapter=lora",
            "train.lr=0.001",
            "seed=1,2,3",
            "adapter.params.r=1,4",
        ],
    ]  # bbc_news has no chosen lr in the fixture rows, so no curve


def test_a_choice_at_the_grid_edge_is_flagged_and_extended_one_step_beyond():
    chosen = {(r["task"], r["adapter"], r["variant"]): r for r in select(ROWS)}
    assert chosen["rt_polarity", "lora", "r=2"]["edge"] == "top" and chosen["rt_polarity", "lora", ""]["edge"] == ""
    assert chosen["rt_polarity", "vera", ""]["edge"] == "top"
    assert [next_lr(lr, "top") for lr in (3e-4, 1e-3, 3e-3, 4e-3, 1e-2)] == [1e-3, 3e-3, 1e-2, 1e-2, 3e-2]
    assert [next_lr(lr, "bottom") for lr in (1e-3, 3e-4, 4e-3)] == [3e-4, 1e-4, 1e-3]
    commands = extension_commands(select(ROWS))
    assert ["sweep=protocol_lr", "task=rt_polarity", "adapter=lora", "adapter.params.r=2", "train.lr=0.01"] in commands
    assert ["sweep=protocol_lr", "task=rt_polarity", "adapter=vera", "train.lr=0.03"] in commands
    assert [
        "sweep=protocol_instruct_lr",
        "task=instruct",
        "adapter=aslora",
        "train.lr=0.003",
    ] in commands  # loss: 1e-3 best
    assert not any("adapter=lora" in c and "adapter.params.r=2" not in c for c in commands)  # LoRA r=8 chose inside
    for overrides in commands:
        container, choices = compose_run([*overrides, "seed=1"])
        settings = RunSettings.from_dict(container, choices)
        assert settings.run_name.startswith(("protocol-lr_", "protocol-instruct-lr_")) and (
            "_lr=" in settings.run_name or ",lr=" in settings.run_name
        )
    # beyond the limits: reported, not run
    assert extension_commands([{**chosen["rt_polarity", "vera", ""], "grid": "0.03,0.1", "lr": "0.1"}]) == []


def _vera_trainer(rows: list, score, trained: list):
    """A stand-in for train.py: records the overrides and appends the run's lr-stage row."""

    def train(overrides):
        trained.append(overrides)
        lr = float(next(o for o in overrides if o.startswith("train.lr=")).split("=")[1])
        rows.append(_row("rt_polarity", "vera", lr, score(lr)))

    return train


def test_extend_repeats_until_every_choice_lies_inside_its_grid():
    # VeRA's validation score climbs up to lr 0.03 and falls after: the first extension (0.03) is
    # again the top edge, the second (0.1) puts the choice inside; LoRA chose inside from the start
    scores = {1e-3: 0.55, 4e-3: 0.60, 1e-2: 0.70, 3e-2: 0.74, 0.1: 0.58}
    rows = [r for r in ROWS if r["task"] == "rt_polarity" and r["adapter"] in ("lora", "vera") and not r["variant"]]
    trained = []
    chosen = {
        (r["adapter"], r["variant"]): r
        for r in extend_until_inside(lambda: list(rows), _vera_trainer(rows, scores.get, trained))
    }
    assert [o[-1] for o in trained] == ["train.lr=0.03", "train.lr=0.1"]  # nothing run for LoRA
    assert chosen["vera", ""]["lr"] == "0.03" and chosen["vera", ""]["edge"] == ""
    assert chosen["lora", ""]["lr"] == "0.001"


def test_extend_stops_at_the_lr_limit_and_keeps_the_edge_flagged():
    rows = [_row("rt_polarity", "vera", lr, lr) for lr in (1e-3, 4e-3, 1e-2)]  # the score keeps climbing
    trained = []
    chosen = extend_until_inside(lambda: list(rows), _vera_trainer(rows, lambda lr: lr, trained))
    assert [o[-1] for o in trained] == ["train.lr=0.03", "train.lr=0.1"]  # 0.3 is beyond LR_LIMITS
    assert chosen[0]["lr"] == "0.1" and chosen[0]["edge"] == "top"


def test_select_stage_writes_the_choices_and_names_an_empty_runs_file(tmp_path):
    import csv

    from scripts.grids import staged

    runs = tmp_path / "results" / "runs.csv"
    runs.parent.mkdir()
    with open(runs, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(ROWS[0]))
        writer.writeheader()
        writer.writerows(ROWS)
    assert staged.main(["protocol", "select", "--root", str(tmp_path)]) == 0  # reads <root>/results/runs.csv
    with open(tmp_path / "results" / "protocol" / "chosen_lr.csv", newline="") as f:
        written = {(r["task"], r["adapter"], r["variant"]): r for r in csv.DictReader(f)}
    assert written == {(r["task"], r["adapter"], r["variant"]): r for r in select(ROWS)}
    assert written["rt_polarity", "vera", ""]["edge"] == "top"
    runs.write_text("run_name,grid\n")
    with pytest.raises(SystemExit, match="no runs of an lr grid .*runs.csv"):
        staged.main(["protocol", "select", "--root", str(tmp_path)])


def test_overrides_without_a_scratch_root_are_refused(tmp_path):
    from scripts.grids import staged

    for suite in staged.SUITES:
        with pytest.raises(SystemExit, match=r"\['task.max_train_examples=8'\] need --root"):
            staged.main([suite, "plan", "task.max_train_examples=8"])


def test_a_scratch_workspace_gives_every_train_call_its_overrides(tmp_path, capsys):
    from scripts.grids import staged

    for suite in staged.SUITES:
        assert staged.main([suite, "plan", "--root", str(tmp_path), "task.max_train_examples=8"]) == 0
        lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("$ python train.py")]
        assert lines and all(
            line.endswith(f"experiments_dir={tmp_path / 'experiments'} task.max_train_examples=8") for line in lines
        )


def test_a_flat_grid_is_flagged_and_extended_upward():
    # VeRA predicting the majority class at every lr: the tie rule picks the smallest lr, but that is
    # no choice at all; a model that did not move needs a larger step
    rows = [_row("rt_polarity", "vera", lr, 0.575) for lr in (1e-3, 4e-3, 1e-2)]
    chosen = select(rows)
    assert chosen[0]["edge"] == "flat" and chosen[0]["lr"] == "0.001"
    assert extension_commands(chosen) == [["sweep=protocol_lr", "task=rt_polarity", "adapter=vera", "train.lr=0.03"]]
    scores = {1e-3: 0.575, 4e-3: 0.575, 1e-2: 0.575, 3e-2: 0.70, 0.1: 0.74}
    trained = []
    chosen = extend_until_inside(lambda: list(rows), _vera_trainer(rows, scores.get, trained))
    assert [o[-1] for o in trained] == ["train.lr=0.03", "train.lr=0.1"]
    assert chosen[0]["lr"] == "0.1" and chosen[0]["edge"] == "top"  # at LR_LIMITS: stays flagged


def test_a_flat_grid_is_reported_as_flat_not_as_an_edge(tmp_path, capsys):
    flat = select([_row("rt_polarity", "vera", lr, 0.575) for lr in (1e-3, 4e-3, 1e-2)])
    lr_search.write_chosen(flat, tmp_path / "runs.csv", tmp_path / "protocol" / "chosen_lr.csv", LR_GRIDS)
    assert "flat, every lr scored the same: `extend` goes up" in capsys.readouterr().out
    extension_commands([{**flat[0], "grid": "0.03,0.1"}])  # the next lr up is beyond LR_LIMITS
    out = capsys.readouterr().out
    assert "every lr scored the same; 0.3 is outside" in out and "edge" not in out


@pytest.mark.parametrize("suite", sorted(SWEEPS))
def test_a_suites_lr_and_final_stages_train_alike(suite):
    """The lr is chosen in one stage and used in the other, so both must draw the same batches at
    the same scale; only the instruct suite groups batches by length (it started after that saving
    was measured; the classification suite's runs predate it and keep the default order)."""
    spec = SWEEPS[suite]
    stages = []
    for sweep in (spec.lr_sweep, spec.final_sweep):
        container, choices = compose_run([f"sweep={sweep}", f"task={spec.tasks[0]}", "seed=1"])
        settings = RunSettings.from_dict(container, choices)
        stages.append(
            (
                settings.train.group_by_length,
                settings.train.epochs,
                settings.train.batch_size,
                settings.task.max_length,
                settings.task.max_train_examples,
            )
        )
    assert stages[0] == stages[1], stages
    assert stages[0][0] is (suite == "protocol-instruct")
