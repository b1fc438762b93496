"""The comparison protocol's stages (issue 14) on fixture rows: lr chosen on validation, final and
curve commands that compose into valid runs, thresholds that bind."""

from __future__ import annotations

import pytest

from aslora.harness.settings import RunSettings
from scripts.compose import compose_run
from scripts.protocol import final_commands, select, thresholds


def _row(task, adapter, lr, score, variant="", metric="accuracy"):
    return {"grid": "protocol-lr", "task": task, "adapter": adapter, "variant": variant, "lr": str(lr),
            "best_metric": str(score), "main_metric": metric, "run_name": f"{task}_{adapter}_{variant}_{lr}"}


ROWS = [
    _row("rt_polarity", "lora", 3e-4, 0.74), _row("rt_polarity", "lora", 1e-3, 0.77), _row("rt_polarity", "lora", 3e-3, 0.76),
    _row("rt_polarity", "aslora", 3e-4, 0.70), _row("rt_polarity", "aslora", 1e-3, 0.75), _row("rt_polarity", "aslora", 3e-3, 0.75),
    _row("rt_polarity", "lora", 1e-3, 0.73, variant="r=2"), _row("rt_polarity", "lora", 3e-3, 0.75, variant="r=2"),
    _row("rt_polarity", "vera", 1e-3, 0.55), _row("rt_polarity", "vera", 1e-2, 0.71),
    _row("instruct", "aslora", 3e-4, 2.40, metric="loss"), _row("instruct", "aslora", 1e-3, 2.30, metric="loss"),
    {**_row("rt_polarity", "lora", 1e-2, 0.99), "grid": "offline"},  # another grid: never chosen from
]


def test_select_takes_the_best_validation_lr_per_adapter_and_records_the_grid():
    chosen = {(r["task"], r["adapter"], r["variant"]): r for r in select(ROWS)}
    assert chosen["rt_polarity", "lora", ""]["lr"] == "0.001" and chosen["rt_polarity", "lora", ""]["grid"] == "0.0003,0.001,0.003"
    assert chosen["rt_polarity", "aslora", ""]["lr"] == "0.001"  # a tie goes to the smaller lr
    assert chosen["rt_polarity", "lora", "r=2"]["lr"] == "0.003"
    assert chosen["rt_polarity", "vera", ""]["lr"] == "0.01"
    assert chosen["instruct", "aslora", ""]["lr"] == "0.001"  # held-out loss: lower is better


def test_final_commands_compose_into_valid_five_seed_runs_at_the_chosen_lr():
    commands = final_commands(select(ROWS))
    assert ["sweep=protocol_final", "task=rt_polarity", "adapter=lora", "adapter.params.r=2", "train.lr=0.003"] in commands
    for overrides in commands:
        if overrides[1] == "task=instruct":
            continue  # the fixture's instruct row is for the lower-is-better rule only
        container, choices = compose_run([*overrides, "seed=1"])
        settings = RunSettings.from_dict(container, choices)
        assert settings.run_name.startswith("protocol_minilm-l6_") and settings.train.lr == float(overrides[-1].split("=")[1])
        settings.check_schedule_fits()


def test_final_stage_runs_the_main_comparison_first():
    """ASLoRA, LoRA r=8 and LoRA r=2 on every task before the other adapters: a protocol stopped
    part-way has answered the question it exists for."""
    adapters = [(c[2], c[3] if c[3].startswith("adapter.params") else "") for c in final_commands(select(ROWS))]
    assert adapters[:5] == [("adapter=aslora", ""), ("adapter=aslora", ""), ("adapter=lora", ""),
                            ("adapter=lora", "adapter.params.r=2"), ("adapter=vera", "")]


def test_thresholds_are_quantiles_of_recorded_tie_distances():
    reports = [{"merge_history": [{"distance": d} for d in (0.1, 0.2, 0.3, 0.4, 0.5)]}]
    assert thresholds(reports) == [0.2, 0.3, 0.4]
    with pytest.raises(SystemExit, match="no tie distances recorded yet"):
        thresholds([{"merge_history": []}])
