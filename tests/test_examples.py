"""The examples of "Use ASLoRA in your own code" run as a user runs them (tiny slices),
and a Trainer run killed after a checkpoint resumes to the same adapter as an uninterrupted one."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from hydra_glue import ROOT

EXAMPLES = ROOT / "examples"


def _example(name, *args, cwd):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    return done, (json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else None)


def test_plain_pytorch_loop_example(tmp_path):
    done, summary = _example("plain_pytorch_loop.py", "--train-examples", "96", "--eval-examples", "32", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert summary["ties"] == 8 and summary["adapter_params"] == 15_360  # 4 ties per type: 20.8 % of LoRA
    assert summary["folded_accuracy"] == summary["held_out_accuracy"]  # saved, reloaded, folded: same predictions


@pytest.mark.slow  # ~26 s: CI runs it in `make test-slow`
def test_trainer_example_killed_after_a_checkpoint_resumes_bit_identically(tmp_path):
    common = [
        "--train-examples",
        "48",
        "--eval-examples",
        "16",
        "--max-steps",
        "12",
        "--batch-size",
        "4",
        "--save-steps",
        "8",
    ]
    done, straight = _example(
        "hf_trainer_classification.py", *common, "--output-dir", str(tmp_path / "a"), cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    killed, _ = _example(
        "hf_trainer_classification.py",
        *common,
        "--output-dir",
        str(tmp_path / "b"),
        "--kill-after-step",
        "8",
        cwd=tmp_path,
    )
    assert killed.returncode == -9  # SIGKILL right after checkpoint-8, after the ties at steps 3–6
    checkpoint = tmp_path / "b" / "checkpoint-8"
    files = {p.name for p in checkpoint.iterdir()}
    assert "adapter_model.safetensors" in files and "model.safetensors" not in files  # adapter-sized
    assert sum(p.stat().st_size for p in checkpoint.glob("*.safetensors")) < 200_000
    done, resumed = _example(
        "hf_trainer_classification.py", *common, "--output-dir", str(tmp_path / "b"), "--resume", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert resumed["merge_history"] == straight["merge_history"] and len(straight["merge_history"]) == 8
    assert resumed["validation_accuracy"] == straight["validation_accuracy"]
    a, b = (load_file(tmp_path / d / "final" / "adapter_model.safetensors") for d in ("a", "b"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_trl_sft_example_ties_during_sft(tmp_path):
    done, summary = _example(
        "trl_sft_smollm2.py",
        "--max-steps",
        "6",
        "--batch-size",
        "2",
        "--train-examples",
        "12",
        "--eval-examples",
        "4",
        "--max-merges",
        "2",
        "--max-length",
        "48",
        "--output-dir",
        str(tmp_path / "out"),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert summary["steps"] == 6 and summary["num_ties"] == 4  # 2 per module type (q_proj, v_proj)
    # SmolLM2: one global A (576 × 8) + 28 q B's (576 × 8) + 28 v B's (192 × 8) after the ties
    assert summary["adapter_params"] == 8 * 576 + 28 * 8 * 576 + 28 * 8 * 192


@pytest.mark.peft_suite  # with PEFT's own suite (make test-peft), keeping make test under 10 minutes
def test_trl_dpo_example_takes_its_reference_from_the_disabled_adapter_and_ties(tmp_path):
    args = ["--tiny", "--pairs", "24", "--max-steps", "6", "--batch-size", "4", "--max-merges", "2"]
    done, summary = _example("trl_dpo_smollm2.py", *args, "--output-dir", str(tmp_path / "out"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert summary["steps"] == 6 and summary["num_ties"] == 4  # 2 per module type (q_proj, v_proj)
    # the reference log-probabilities: one forward per step with the adapter disabled, no second model
    assert summary["adapter_off"] == 6 and summary["adapter_on"] >= 6
    # the tiny LLaMA (4 layers, width 16, v 16→8): one A (8 × 16) + 2 q B's (16 × 8) + 2 v B's (8 × 8)
    assert summary["adapter_params"] == 8 * 16 + 2 * 16 * 8 + 2 * 8 * 8
