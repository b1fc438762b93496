"""`train.py` end to end on the real MiniLM-L6 and rt_polarity data (debug=smoke: 16 steps)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from aslora.harness.runs.report import read_report
from aslora.harness.runs.run import run
from hydra_glue import compose_run
from tests.aslora.harness.inputs.test_data import write_glue_fixture
from tests.conftest import run_cli

# VeRA, ShareLoRA and Tied-LoRA also run end to end through train.py in CI's GLUE rehearsal
# (tests/scripts/grids/test_rehearsal.py): here they are in the slow suite
ADAPTERS = [
    "aslora",
    "lora",
    "full",
    *(pytest.param(a, marks=pytest.mark.slow) for a in ("vera", "sharelora", "tiedlora")),
]


def _run(overrides: list[str], experiments: Path):
    container, choices = compose_run(["debug=smoke", f"experiments_dir={experiments}", *overrides])
    return run(container, choices), container


def _cli(args: list[str], cwd: Path, **env_overrides: str) -> subprocess.CompletedProcess:
    return run_cli(args, cwd, **env_overrides)


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_smoke_run_writes_a_valid_report(adapter, tmp_path):
    best, container = _run([f"adapter={adapter}"], tmp_path)
    report = read_report(tmp_path / container["run_name"] / "report.json")
    assert report["status"] == "done" and report["adapter"] == adapter
    assert report["choices"]["adapter"] == adapter and report["choices"]["model"] == "minilm-l6"
    assert 0.0 <= best <= 1.0 and report["best"]["metric"] == best
    assert report["best"]["epoch"] == 1 and set(report["best"]["validation"]) == {"accuracy", "f1", "loss"}
    assert report["best"]["test"] is not None  # rt_polarity has a labelled test split
    assert report["steps"] == 16 and len(report["epochs"]) == 1
    assert report["params"]["lora_reference"] == 73_728  # LoRA r=8 on MiniLM-L6 q,v: 6·2·8·(384+384)
    env = report["environment"]
    assert env["packages"]["torch"].startswith("2.13.0") and env["device"]
    assert "git_sha" in env and "wall_seconds" in report
    after = report["params"]["after"]
    if adapter == "aslora":
        assert after["num_distinct_B"] == 4 and after["adapter"] == 15_360
        assert report["params"]["fraction_of_lora_after"] < 0.25
        assert len(report["merge_history"]) == 8  # 4 ties per module type
        assert report["params"]["before"]["num_distinct_B"] == 12
    elif adapter == "lora":
        assert after["adapter"] == 73_728
    elif adapter == "full":
        assert after["trainable"] == after["total"]
    else:
        assert report["merge_history"] == []


def test_done_run_is_skipped_unless_overwrite(tmp_path):
    best, container = _run(["adapter=lora"], tmp_path)
    path = tmp_path / container["run_name"] / "report.json"
    stamp = path.stat().st_mtime_ns
    again, _ = _run(["adapter=lora"], tmp_path)
    assert again == best and path.stat().st_mtime_ns == stamp
    _run(["adapter=lora", "overwrite=true"], tmp_path)
    assert path.stat().st_mtime_ns != stamp


@pytest.mark.slow  # two processes' runs are compared in tests/scripts/grids/test_launch.py
def test_same_seed_same_result(tmp_path):
    first, _ = _run(["adapter=aslora", "seed=7"], tmp_path / "a")
    second, container = _run(["adapter=aslora", "seed=7"], tmp_path / "b")
    a = read_report(tmp_path / "a" / container["run_name"] / "report.json")
    b = read_report(tmp_path / "b" / container["run_name"] / "report.json")
    assert a["epochs"] == b["epochs"] and a["merge_history"] == b["merge_history"]


@pytest.mark.slow  # CI's GLUE rehearsal runs every GLUE task from local GLUE-schema files
def test_glue_task_end_to_end_from_local_glue_schema_files(tmp_path):
    write_glue_fixture(tmp_path, "mrpc", n_train=128, n_val=16)
    best, container = _run(
        ["task=mrpc", "model=minilm-l6", f"task.local_dir={tmp_path}", "adapter=aslora"], tmp_path / "exp"
    )
    report = read_report(tmp_path / "exp" / container["run_name"] / "report.json")
    assert set(report["best"]["validation"]) == {"accuracy", "f1", "loss"} and report["best"]["test"] is None
    assert report["steps"] == 16 and report["task"] == "mrpc"


def test_cli_smoke_and_two_point_multirun(tmp_path, sequential_smoke_grid):
    single = _cli(["debug=smoke", "adapter=lora", f"experiments_dir={tmp_path / 'one'}"], tmp_path)
    assert single.returncode == 0, single.stderr[-2000:]
    assert (tmp_path / "one" / "smoke_minilm-l6_rt_polarity_lora_s42" / "report.json").is_file()
    reports = sorted(sequential_smoke_grid.glob("*/report.json"))
    assert [p.parent.name for p in reports] == [
        "smoke_minilm-l6_rt_polarity_aslora_max_merges=1_s42",
        "smoke_minilm-l6_rt_polarity_aslora_max_merges=2_s42",
    ]
    distinct = [json.loads(p.read_text())["params"]["after"]["num_distinct_B"] for p in reports]
    assert distinct == [10, 8]  # 12 B's minus one or two ties per module type
    # the run's identity is recorded as data: the swept key with its resolved value, nothing excluded
    assert [json.loads(p.read_text())["variant"] for p in reports] == [
        {"adapter.params.max_merges": 1},
        {"adapter.params.max_merges": 2},
    ]
    assert json.loads(next((tmp_path / "one").glob("*/report.json")).read_text())["variant"] == {}
    # one home per run: Hydra writes no second tree; the run keeps its config, overrides and log itself
    assert [p.name for p in tmp_path.iterdir()] == ["one"]
    assert sorted(p.name for p in sequential_smoke_grid.parent.iterdir()) == ["sweep"]
    home = tmp_path / "one" / "smoke_minilm-l6_rt_polarity_lora_s42"
    assert yaml.safe_load((home / "overrides.yaml").read_text()) == [
        "debug=smoke",
        "adapter=lora",
        f"experiments_dir={tmp_path / 'one'}",
    ]
    assert yaml.safe_load((home / "config.yaml").read_text())["run_name"] == home.name
    log = (home / "train.log").read_text()
    assert f"run {home.name}" in log and "best accuracy" in log
    for report in reports:  # each job of the grid logs its own run, and only its own
        log = (report.parent / "train.log").read_text()
        assert log.count("[aslora][INFO] - run ") == 1 and f"- run {report.parent.name}\n" in log
    (grid_config,) = (sequential_smoke_grid / "_grids").glob("*/multirun.yaml")
    assert "max_merges=1,2" in grid_config.read_text()


@pytest.mark.parametrize(
    "args, message",
    [
        (["task=sst3"], "sst3"),
        (["adapter=qlora"], "qlora"),
        (["model=gpt5"], "gpt5"),
        (["task=sst2"], "hub=true"),
        (["model=roberta-base"], "Hugging Face Hub, which is off"),
        (["adapter.params.target_modules=[q_proj]"], "matches no module"),
        (["adapter.params.max_merges=9"], "merge event 9 (max_merges)"),
        (["train.lr=-1", "train.epochs=0"], "train.epochs=0"),
        (["task=instruct", "model=minilm-l6"], "model 'minilm-l6' is an encoder"),
        (["task=alpaca", "model=smollm2-135m"], "tatsu-lab/alpaca from the Hugging Face Hub, which is off"),
        # Hydra's own hint for an unknown key must not be silently ignored (and mislabel the run)
        (["+adapter.merge_distance_threshold=0.1"], "did you mean adapter.params.merge_distance_threshold=0.1?"),
        (["train.warmup_ratio=0.3"], "the first ASLoRA merge would be at step 3, within the learning-rate warm-up"),
    ],
)
def test_bad_input_fails_clearly_and_writes_nothing(args, message, tmp_path):
    """Through the CLI where Hydra itself is part of the answer (an unknown group option or key; a
    refusal after the model loads, so Hydra has had every chance to write); in-process otherwise."""
    overrides = ["debug=smoke", f"experiments_dir={tmp_path / 'exp'}", *args]
    if args[0] in CLI_CASES:
        result = _cli(overrides, tmp_path)
        assert result.returncode != 0
        assert message in result.stderr + result.stdout
    else:
        with pytest.raises(ValueError) as error:
            run(*compose_run(overrides))
        assert message in str(error.value)
    assert list(tmp_path.iterdir()) == []  # nothing: no run directory, no Hydra output tree, no log


CLI_CASES = {
    "task=sst3",
    "adapter=qlora",
    "model=gpt5",
    "+adapter.merge_distance_threshold=0.1",
    "adapter.params.target_modules=[q_proj]",
}


def test_ties_of_the_smoke_run_come_after_warm_up_on_moved_B(tmp_path):
    _, container = _run(["adapter=aslora"], tmp_path)
    report = read_report(tmp_path / container["run_name"] / "report.json")
    assert [e["step"] for e in report["merge_history"]] == [3, 3, 5, 5, 7, 7, 9, 9]  # warm-up is step 1
    assert all(e["distance"] > 0 for e in report["merge_history"])


UNREACHABLE_HUB = "http://127.0.0.1:9"  # nothing listens on port 9: the connection is refused at once


def test_a_hub_grid_without_hub_access_stops_before_its_first_job(tmp_path):
    import time

    started = time.perf_counter()
    result = _cli(["-m", "sweep=glue", f"experiments_dir={tmp_path / 'exp'}"], tmp_path, HF_ENDPOINT=UNREACHABLE_HUB)
    assert result.returncode != 0 and time.perf_counter() - started < 60
    output = result.stderr + result.stdout
    assert (
        "stopped before the first job" in output and "task.local_dir" in output and "make reproduce-offline" in output
    )
    assert not (tmp_path / "exp").exists()


def test_a_glue_task_runs_its_paper_model_unless_told_otherwise(tmp_path, caplog):
    container, choices = compose_run(["task=sst2"])
    assert choices["model"] == "roberta-base"  # the LoRA recipe's model, not the offline default
    container, choices = compose_run(["task=sst2", "model=minilm-l6"])
    assert choices["model"] == "minilm-l6"
    result = _cli(
        ["task=sst2", "hub=true", f"experiments_dir={tmp_path / 'exp'}"], tmp_path, HF_ENDPOINT=UNREACHABLE_HUB
    )
    assert result.returncode != 0 and "needs the Hugging Face Hub" in result.stderr + result.stdout
    # a recipe paired with another model is stated at the start of the run
    write_glue_fixture(tmp_path, "sst2", n_train=128, n_val=16)
    with caplog.at_level("INFO", logger="aslora"):
        _run(["task=sst2", "model=minilm-l6", f"task.local_dir={tmp_path}", "adapter=lora"], tmp_path / "exp2")
    assert (
        "task sst2's training recipe (lr, epochs, max length) is the one published for roberta-base; "
        "this run applies it to minilm-l6" in caplog.text
    )


def test_every_tie_is_logged_per_group_and_wandb_lives_in_the_run_directory(tmp_path):
    import csv

    from aslora.harness.measuring.tracking import Tracker
    from aslora.harness.runs.settings import WandbSettings

    _, container = _run(["adapter=aslora"], tmp_path)
    with open(tmp_path / container["run_name"] / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    ties = [(int(r["step"]), r["key"]) for r in rows if r["key"].startswith("aslora/merge_distance/")]
    assert len(ties) == 8 and len(set(ties)) == 8  # query and value at the same step: two points, not one
    assert {key for _, key in ties} == {"aslora/merge_distance/query", "aslora/merge_distance/value"}

    run_dir = tmp_path / "wandb_run"
    history = read_report(tmp_path / container["run_name"] / "report.json")["merge_history"]
    with Tracker(WandbSettings(mode="offline"), "r", {}, run_dir=run_dir, group="glue") as tracker:
        assert tracker.run.group == "glue" and Path(tracker.run.dir).is_relative_to(run_dir)
        tracker.merge_table(history)
        tracker.log({"train/loss": 0.5}, 1)
    assert list((run_dir / "wandb").glob("offline-run-*"))


@pytest.mark.slow
def test_compiled_run_counts_and_checkpoints_the_model_not_its_compile_wrapper(tmp_path):
    """train.compile=true (inductor; ~1.5 min on 2 CPU cores): the same counts as eager, and a
    checkpoint (in the format the loop writes) keyed by the model, not its compile wrapper."""

    _, container = _run(["adapter=aslora", "train.compile=true", "checkpoint.every_steps=8"], tmp_path)
    report = read_report(tmp_path / container["run_name"] / "report.json")
    assert report["params"]["after"]["adapter"] == 15_360 and len(report["merge_history"]) == 8
    from aslora.harness.state import checkpoint as ckpt

    checkpoint = ckpt.latest_valid(tmp_path / container["run_name"] / "checkpoints")
    assert checkpoint is not None  # the format the loop writes now (it read state.pt, no longer written)
    state = ckpt.load_state(checkpoint)
    assert state["model"] and not any(key.startswith("_orig_mod.") for key in state["model"])
    # the keys an uncompiled model has: the pool's factors and the head, by their own names
    assert any(".aslora_pool.default.lora_A." in key for key in state["model"])
    assert any(key.startswith("classifier.") for key in state["model"])


def test_the_final_line_gives_the_size_of_the_adapter_behind_the_score():
    """The default run's best epoch (1 of 2) comes before its last two ties: the line says both sizes."""
    from aslora.harness.runs.run import _sizes

    params = {"lora_reference": 73_728, "after": {"adapter": 15_360}, "at_best": {"adapter": 27_648}}
    assert _sizes(params, 8) == "27648 params at the best epoch (37.5 % of LoRA r=8), 15360 at the end (20.8 %)"
    assert _sizes({**params, "at_best": {"adapter": 15_360}}, 8) == "15360 params (20.8 % of LoRA r=8)"
    assert _sizes({"lora_reference": 73_728, "after": {"adapter": 73_728}}, 8) == "73728 params (100.0 % of LoRA r=8)"


def test_a_refused_run_prints_its_message_alone_and_full_error_shows_the_traceback(tmp_path):
    """The mission's first command on a machine without the Hub: one message saying what to set,
    exit 1, no traceback (HYDRA_FULL_ERROR=1 shows it); nothing written."""
    refused = _cli(["task=sst2", "adapter=aslora", f"experiments_dir={tmp_path / 'exp'}"], tmp_path)
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: task 'sst2' loads nyu-mll/glue from the Hugging Face Hub, which is off")
    assert "Traceback" not in refused.stderr and "Error executing job" not in refused.stderr
    full = _cli(["task=sst2", f"experiments_dir={tmp_path / 'exp'}"], tmp_path, HYDRA_FULL_ERROR="1")
    assert full.returncode == 1 and "Traceback" in full.stderr and "RunRefused: task 'sst2'" in full.stderr
    assert not (tmp_path / "exp").exists()
