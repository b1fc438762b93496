"""evaluate.py (issue 13): a saved adapter — ours or PEFT's — reproduces its run's final scores."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from aslora.harness.measuring.evaluation import evaluate_saved
from aslora.harness.runs.report import read_report
from aslora.harness.runs.run import run
from hydra_glue import ROOT, compose_run, group_config


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    experiments = tmp_path_factory.mktemp("exp")
    names = {}
    for adapter, task in (
        ("aslora", "rt_polarity"),
        ("lora", "rt_polarity"),
        ("aslora", "bbc_news"),
        ("full", "rt_polarity"),
    ):
        container, choices = compose_run(
            ["debug=smoke", f"adapter={adapter}", f"task={task}", f"experiments_dir={experiments}"]
        )
        run(container, choices)
        names[adapter, task] = experiments / container["run_name"]
    return names


@pytest.mark.parametrize("adapter, task", [("aslora", "rt_polarity"), ("lora", "rt_polarity"), ("aslora", "bbc_news")])
def test_a_saved_adapter_reproduces_the_runs_final_scores(runs, adapter, task):
    run_dir = runs[adapter, task]
    fmt = "aslora_config.json" if adapter == "aslora" else "adapter_config.json"  # ours, or PEFT's own format
    assert (run_dir / "adapter" / fmt).is_file()
    result = evaluate_saved(run=str(run_dir), texts=["a moving, funny film", "two hours I want back"])
    best = read_report(run_dir / "report.json")["best"]
    assert result["validation"] == best["validation"] and result["test"] == best["test"]
    saved = json.loads((run_dir / "eval.json").read_text())
    assert saved["validation"] == best["validation"] and len(saved["predictions"]) == 2
    classes = 5 if task == "bbc_news" else 2
    assert all(
        len(p["probabilities"]) == classes and abs(sum(p["probabilities"]) - 1) < 1e-4 for p in saved["predictions"]
    )


@pytest.mark.parametrize(
    "adapter", ["aslora", pytest.param("lora", marks=pytest.mark.slow)]
)  # PEFT's format: slow suite
def test_the_best_epochs_adapter_reproduces_the_reported_scores_and_the_last_is_kept_beside_it(
    adapter, tmp_path, monkeypatch
):
    """A run whose best validation epoch is not its last (epoch 1 of 2: ``is_better`` is pinned so
    that only the first epoch counts) saves that epoch's adapter as ``adapter/`` and the final
    weights as ``adapter_last/``; ``evaluate.py`` reproduces the report's best scores from the
    first and the last epoch's validation scores from the second, exactly."""
    import aslora.harness.training.loop as loop

    container, choices = compose_run(
        ["debug=smoke", f"adapter={adapter}", "train.epochs=2", f"experiments_dir={tmp_path}"]
    )
    with monkeypatch.context() as patch:
        patch.setattr(loop, "is_better", lambda metric, new, best: best is None)
        run(container, choices)
    run_dir = tmp_path / container["run_name"]
    report = read_report(run_dir / "report.json")
    assert report["best"]["epoch"] == 1 and report["adapters"]["best"]["epoch"] == 1
    assert (
        report["adapters"]["last"]["epoch"] == 2 and "test" not in report["epochs"][1]
    )  # test only where val improves
    best = evaluate_saved(run=str(run_dir))
    assert best["adapter_epoch"] == 1
    assert best["validation"] == report["best"]["validation"] and best["test"] == report["best"]["test"]
    last = evaluate_saved(run=str(run_dir), epoch="last", out=str(tmp_path / "last.json"))
    assert last["adapter_epoch"] == 2 and last["validation"] == report["epochs"][-1]["val"]
    from safetensors.torch import load_file

    weights = "aslora_model.safetensors" if adapter == "aslora" else "adapter_model.safetensors"
    first, final = load_file(run_dir / "adapter" / weights), load_file(run_dir / "adapter_last" / weights)
    if adapter == "aslora":  # a saved adapter holds its live B's: the last lacks those retired after the best epoch
        retired = {e["retired"] for e in report["merge_history"] if e["step"] > 15}
        assert {f"lora_B.{b}" for b in retired} == set(first) - set(final) and len(retired) == 2
        assert set(final) <= set(first)
    else:
        assert first.keys() == final.keys()
    assert any(not first[k].equal(final[k]) for k in set(first) & set(final))
    if adapter == "aslora":  # ties at steps 7, 11, 15 (epoch 1) and 19: the best epoch's adapter has 3 per type
        from aslora.export import read_adapter_meta

        history = read_adapter_meta(run_dir / "adapter")["merge_history"]
        assert [e["step"] for e in history] == [7, 7, 11, 11, 15, 15]
        assert len(report["merge_history"]) == 8
        assert report["params"]["at_best"]["num_distinct_B"] == 6 and report["params"]["after"]["num_distinct_B"] == 4
        # the sharing map is the end of training's, as its caption's counts (params.after) are
        from scripts.reports.plot_sharing import load, sharing_matrix

        _, groups, _ = sharing_matrix(load(run_dir)[1])
        assert len({int(g) for g in groups.flatten()}) == report["params"]["after"]["num_distinct_B"] == 4
    with pytest.raises(ValueError, match="epoch='middle' must be one of"):
        evaluate_saved(run=str(run_dir), epoch="middle")


def test_adapter_dir_with_task_and_model(runs, tmp_path):
    run_dir = runs["aslora", "rt_polarity"]
    result = evaluate_saved(
        adapter_dir=str(run_dir / "adapter"),
        task=group_config("task", "rt_polarity"),
        model=group_config("model", "minilm-l6"),
        out=str(tmp_path / "eval.json"),
        max_eval_examples=64,
    )
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
    with pytest.raises(ValueError, match="unknown model .gpt5."):  # what evaluate.py reads model=gpt5 with
        group_config("model", "gpt5")
    with pytest.raises(ValueError, match="adapter_dir= needs task=<name> and model=<name>"):
        evaluate_saved(adapter_dir=str(tmp_path), task="rt_polarity", model="minilm-l6")
    cli = subprocess.run(
        [sys.executable, str(ROOT / "evaluate.py"), f"run={tmp_path}", "split=test"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert cli.returncode != 0 and "unknown key(s) ['split']" in cli.stderr


@pytest.mark.parametrize(
    "options, message",
    [
        ({"texts": "one film"}, r"texts= must be a list of strings"),
        ({"texts": [""]}, r"texts\[0\] is empty"),
        ({"texts": ["fine", 3]}, r"texts\[1\]=3 is not a string"),
        ({"texts": ["x"] * 1001}, r"texts= has 1,001 entries; at most 1,000"),
        ({"prompts": ["word " * 5000]}, r"prompts\[0\] has 25,000 characters; at most 20,000"),
        ({"prompts": [None]}, r"prompts\[0\]=None is not a string"),
    ],
)
def test_bad_texts_and_prompts_are_refused_before_anything_loads(options, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        evaluate_saved(run=str(tmp_path), **options)


def test_a_very_long_text_is_truncated_to_the_tasks_length(runs):
    result = evaluate_saved(
        run=str(runs["aslora", "rt_polarity"]), texts=["a moving, funny film " * 20_000], max_eval_examples=8
    )
    assert len(result["predictions"]) == 1 and result["predictions"][0]["label"] in (0, 1)
