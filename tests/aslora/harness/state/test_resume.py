"""Checkpoints: a run hard-killed mid-way and resumed ends bit-identical to an uninterrupted one;
a truncated or corrupted checkpoint is skipped for the previous one (issue 5)."""

from __future__ import annotations

import json
import signal

import pytest
from safetensors.torch import load_file

from aslora.harness.state import checkpoint as ckpt
from tests.test_train import _cli

# 256 examples, batch 16 → 16 steps per epoch, 2 epochs; ASLoRA ties at steps 7, 11, 15, 19
RUN = [
    "debug=smoke",
    "adapter=aslora",
    "task.max_train_examples=256",
    "train.epochs=2",
    "train.batch_size=16",
    "checkpoint.every_steps=3",
    "checkpoint.keep_last=2",
]
NAME = "smoke_minilm-l6_rt_polarity_aslora_task.max_train_examples=256,batch_size=16,epochs=2_s42"


def _outcome(run_dir):
    report = json.loads((run_dir / "report.json").read_text())
    weights = load_file(run_dir / "adapter" / "aslora_model.safetensors")
    return report, weights, (run_dir / "metrics.csv").read_text()


def _assert_identical(a, b):
    (report_a, weights_a, metrics_a), (report_b, weights_b, metrics_b) = a, b
    # metrics.csv: the killed run's rows up to its checkpoint kept, the rest logged again — every row
    assert metrics_a.splitlines() == metrics_b.splitlines()
    assert report_a["epochs"] == report_b["epochs"]
    assert report_a["merge_history"] == report_b["merge_history"]
    assert report_a["params"]["after"] == report_b["params"]["after"]
    assert weights_a.keys() == weights_b.keys()
    for key in weights_a:
        assert weights_a[key].equal(weights_b[key]), key  # bit-identical, not merely close


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    root = tmp_path_factory.mktemp("straight")
    result = _cli([*RUN, f"experiments_dir={root}"], root)
    assert result.returncode == 0, result.stderr[-2000:]
    report, weights, metrics = _outcome(root / NAME)
    assert report["steps"] == 32 and len(report["merge_history"]) == 8 and report["resumed_from_step"] is None
    return report, weights, metrics


def _killed_run(root, kill_after_step):
    result = _cli([*RUN, f"experiments_dir={root}", f"kill_after_step={kill_after_step}"], root)
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    assert not (root / NAME / "report.json").exists()
    return root / NAME / "checkpoints"


def test_sigkill_mid_run_then_resume_is_bit_identical(straight, tmp_path):
    # killed after step 20: epoch 2, after the tie at step 19; the last checkpoint is step 18,
    # so steps 19–20 (and that tie) are lost and must be redone exactly
    checkpoints = _killed_run(tmp_path, kill_after_step=20)
    assert [p.name for p in ckpt.list_checkpoints(checkpoints)] == ["step-000000015", "step-000000018"]
    resumed = _cli([*RUN, f"experiments_dir={tmp_path}", "resume=true"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    outcome = _outcome(tmp_path / NAME)
    assert outcome[0]["resumed_from_step"] == 18
    _assert_identical(outcome, straight)


@pytest.mark.slow  # the fast suite keeps the SIGKILL resume and the unit tests of which checkpoint is taken
def test_corrupted_newest_checkpoint_is_skipped_for_the_previous(straight, tmp_path):
    checkpoints = _killed_run(tmp_path, kill_after_step=20)
    newest = ckpt.list_checkpoints(checkpoints)[-1]
    state = newest / f"{ckpt.STATE}.safetensors"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])  # truncated on disk
    resumed = _cli([*RUN, f"experiments_dir={tmp_path}", "resume=true"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    output = resumed.stdout + resumed.stderr  # Hydra's log handler writes to stdout
    assert "skipping checkpoint" in output and "does not match its SHA-256" in output
    outcome = _outcome(tmp_path / NAME)
    assert outcome[0]["resumed_from_step"] == 15
    _assert_identical(outcome, straight)


def test_checkpoint_without_manifest_is_ignored(tmp_path):
    good = ckpt.begin(tmp_path, 3)
    ckpt.write_rng(good, 0)
    state = {key: 1 for key in ckpt.STATE_KEYS}
    ckpt.commit(good, tmp_path, 3, state, keep_last=5)
    partial = tmp_path / "step-000000006"  # a directory as a crash would leave it, manifest never written
    partial.mkdir()
    (partial / f"{ckpt.STATE}.json").write_bytes(b"half")
    assert ckpt.latest_valid(tmp_path) == tmp_path / "step-000000003"
    assert ckpt.load_state(ckpt.latest_valid(tmp_path)) == state


def test_keep_last_prunes_older_checkpoints(tmp_path):
    for step in (2, 4, 6):
        ckpt.commit(ckpt.begin(tmp_path, step), tmp_path, step, {"step": step}, keep_last=2)  # any plain state
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step-000000004", "step-000000006"]
    assert not list(tmp_path.glob(".tmp-*"))
