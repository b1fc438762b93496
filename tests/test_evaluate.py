"""evaluate.py (issue 13): a saved adapter — ours or PEFT's — reproduces its run's final scores."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from aslora.harness.evaluation import evaluate_saved
from aslora.harness.report import read_report
from aslora.harness.run import run
from scripts.compose import ROOT, compose_run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    experiments = tmp_path_factory.mktemp("exp")
    names = {}
    for adapter, task in (("aslora", "rt_polarity"), ("lora", "rt_polarity"), ("aslora", "bbc_news"), ("full", "rt_polarity")):
        container, choices = compose_run(["debug=smoke", f"adapter={adapter}", f"task={task}",
                                          f"experiments_dir={experiments}"])
        run(container, choices)
        names[adapter, task] = experiments / container["run_name"]
    return names


@pytest.mark.parametrize("adapter, task", [("aslora", "rt_polarity"), ("lora", "rt_polarity"), ("aslora", "bbc_news")])
def test_a_saved_adapter_reproduces_the_runs_final_scores(runs, adapter, task):
    run_dir = runs[adapter, task]
    fmt = "aslora_config.json" if adapter == "aslora" else "adapter_config.json"  # ours, or PEFT's own format
    assert (run_dir / "adapter" / fmt).is_file()
    result = evaluate_saved(run=str(run_dir), texts=["a moving, funny film", "two hours I want back"])
    final = read_report(run_dir / "report.json")["epochs"][-1]
    assert result["validation"] == final["val"] and result["test"] == final["test"]
    saved = json.loads((run_dir / "eval.json").read_text())
    assert saved["validation"] == final["val"] and len(saved["predictions"]) == 2
    classes = 5 if task == "bbc_news" else 2
    assert all(len(p["probabilities"]) == classes and abs(sum(p["probabilities"]) - 1) < 1e-4 for p in saved["predictions"])


def test_adapter_dir_with_task_and_model(runs, tmp_path):
    run_dir = runs["aslora", "rt_polarity"]
    result = evaluate_saved(adapter_dir=str(run_dir / "adapter"), task="rt_polarity", model="minilm-l6",
                            out=str(tmp_path / "eval.json"), max_eval_examples=64)
    # the same 64 examples the run (debug=smoke) scored, so the same scores
    final = read_report(run_dir / "report.json")["epochs"][-1]
    assert result["validation_examples"] == 64 and result["validation"] == final["val"]
    assert (tmp_path / "eval.json").is_file()


def test_bad_requests_fail_clearly(runs, tmp_path):
    with pytest.raises(ValueError, match="give run=experiments/<run_name>, or adapter_dir="):
        evaluate_saved()
    with pytest.raises(ValueError, match=r"adapter=full\) saved no adapter"):
        evaluate_saved(run=str(runs["full", "rt_polarity"]))
    with pytest.raises(ValueError, match="report.json not found"):
        evaluate_saved(run=str(tmp_path))
    with pytest.raises(ValueError, match="unknown model .gpt5."):
        evaluate_saved(adapter_dir=str(tmp_path), task="rt_polarity", model="gpt5")
    cli = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), f"run={tmp_path}", "split=test"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert cli.returncode != 0 and "unknown key(s) ['split']" in cli.stderr
