"""A resume checks the whole checkpoint against the run before anything is written (issue 37): a
checkpoint edited past its manifest — a key dropped, a position, the pool's map or log, the
optimizer's or scheduler's state — is refused naming the file and field, and neither the run's
directory nor anything outside it changes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

from aslora.harness.runs.run import run
from aslora.harness.state import checkpoint as ckpt
from aslora.harness.state import safe_state
from hydra_glue import compose_run
from tests.aslora.harness.runs.test_run_dir import _snapshot

# 128 examples at batch 8 = 16 steps an epoch, 2 epochs: checkpoints at steps 28 and 32 (kept: 2);
# the newest (step 32, epoch 2, its 16 batches done) is the one a resume reads
RUN = ["debug=smoke", "adapter=aslora", "train.epochs=2", "checkpoint.every_steps=4"]
POOL = "shared_lora.aslora_pool.default."


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A run that wrote its checkpoints; its report removed, so resume=true would read the newest."""
    root = tmp_path_factory.mktemp("finished")
    container, choices = compose_run([*RUN, f"experiments_dir={root}"])
    run(container, choices)
    run_dir = root / container["run_name"]
    (run_dir / "report.json").unlink()
    return run_dir


def _resume(finished: Path, tmp_path: Path, edit: Callable[[dict[str, Any]], None]) -> tuple[Any, Path]:
    """A copy of ``finished`` whose newest checkpoint's state is edited by ``edit`` and re-hashed
    (past the manifest: the check under test must refuse it), and the composed resume."""
    run_dir = tmp_path / "exp" / finished.name
    shutil.copytree(finished, run_dir)
    newest = ckpt.latest_valid(run_dir / "checkpoints")
    state = ckpt.load_state(newest)
    edit(state)
    safe_state.save(state, newest / "state.json", newest / "state.safetensors")
    manifest = json.loads((newest / ckpt.MANIFEST).read_text())
    manifest["files"] = {name: ckpt._sha256(newest / name) for name in manifest["files"]}
    (newest / ckpt.MANIFEST).write_text(json.dumps(manifest))
    return compose_run([*RUN, f"experiments_dir={tmp_path / 'exp'}", "resume=true"]), run_dir


def _drop(prefix: str) -> Callable[[dict[str, Any]], None]:
    def edit(state: dict[str, Any]) -> None:
        for key in [k for k in state["model"] if k.startswith(prefix)]:
            del state["model"][key]

    return edit


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(state: dict[str, Any]) -> None:
        *parents, last = path.split("/")
        target = state
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        target[int(last) if isinstance(target, list) else last] = value(target[last]) if callable(value) else value

    return edit


def _tie_at(step: int) -> Callable[[dict[str, Any]], None]:
    def edit(state: dict[str, Any]) -> None:
        state["model"][POOL + "merge_log"][0, 0] = float(step)

    return edit


def _remap(state: dict[str, Any]) -> None:
    b_map = state["model"][POOL + "b_map"]
    b_map[0] = b_map[-1]  # layer 0 reads another B than its log says


def _moment(state: dict[str, Any]) -> None:
    entry = state["optimizer"]["state"][0]
    entry["exp_avg"] = torch.zeros(3)


CASES = {
    "no shared A": (_drop(POOL + "lora_A."), r"missing keys \['shared_lora\.aslora_pool\.default\.lora_A"),
    "no head": (_drop("classifier."), r"missing keys \['classifier\."),
    "an extra key": (
        _set("model", lambda m: {**m, "stray.weight": torch.zeros(1)}),
        r"unexpected keys \['stray\.weight'\]",
    ),
    "the best epoch's weights lack a B": (
        lambda s: s["result"]["best_state"].pop(POOL + "lora_B.query_0"),
        r"result\.best_state\).*missing keys",
    ),
    "an lr of 50": (_set("optimizer/param_groups/0/lr", 50.0), r"optimizer group 0 has lr=50\.0"),
    "another weight decay": (_set("optimizer/param_groups/0/weight_decay", 0.5), r"weight_decay=0\.5"),
    "another initial lr": (_set("optimizer/param_groups/0/initial_lr", 1.0), r"initial_lr=1\.0"),
    "a moment of another shape": (_moment, r"optimizer exp_avg of parameter 0 is not shaped"),
    "a step past the run": (_set("step", 10_000), r"step=10000 must be an integer in \[0, 32\]"),
    "a step as text": (_set("step", "32"), r"step='32' must be an integer"),
    "an inconsistent position": (_set("batches_done", 3), r"position is inconsistent"),
    "an epoch record missing": (_set("result/epochs", []), r"result\.epochs must hold one record per finished epoch"),
    "a map its log does not lead to": (_remap, r"b_map .* is not what its merge_log leads to"),
    "a tie at an unplanned step": (_tie_at(2), r"a tie at step 2, not a merge step of this run's plan"),
    "a wrong running-mean count": (_set(f"model/{POOL}num_mean_updates", torch.tensor(5)), r"num_mean_updates=5"),
    "a scheduler at another step": (_set("scheduler/last_epoch", 7), r"scheduler counts 7 steps"),
    "another scheduler": (_set("scheduler/base_lrs", [1.0]), r"scheduler base_lrs=\[1\.0\]"),
}


# the fast suite keeps one of each kind (model, optimizer, position, pool, scheduler); the rest run slow
FAST = {
    "no shared A",
    "an lr of 50",
    "an inconsistent position",
    "a map its log does not lead to",
    "a scheduler at another step",
}


@pytest.mark.parametrize(
    "case", [case if case in FAST else pytest.param(case, marks=pytest.mark.slow) for case in CASES]
)
def test_an_edited_checkpoint_is_refused_before_anything_is_written(case, finished, tmp_path):
    edit, message = CASES[case]
    (container, choices), run_dir = _resume(finished, tmp_path, edit)
    outside = tmp_path / "outside"
    outside.mkdir()
    before_run, listing = _snapshot(run_dir), sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(ValueError, match=message) as refused:
        run(container, choices)
    assert "state.json" in str(refused.value)  # names the file
    assert _snapshot(run_dir) == before_run  # config, log, metrics.csv, checkpoints: untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == listing and not any(outside.iterdir())


def test_the_unedited_checkpoint_resumes(finished, tmp_path):
    (container, choices), run_dir = _resume(finished, tmp_path, lambda state: None)
    assert run(container, choices) is not None
    report = json.loads((run_dir / "report.json").read_text())
    assert report["resumed_from_step"] == 32 and len(report["epochs"]) == 2
