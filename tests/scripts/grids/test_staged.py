"""The one driver of the staged suites: every suite is data it runs alike, and every wrong call is
refused before anything trains or is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts.grids import staged
from scripts.grids.catalog import COLLECT, STAGED

ROOT = Path(__file__).resolve().parents[3]


def test_every_stage_a_grid_runs_is_a_stage_of_its_suite():
    for grid, (suite, stages) in STAGED.items():
        assert suite in staged.SUITES, grid
        names = staged.SUITES[suite].stage_names
        assert [s for s in stages if s != COLLECT] == [s for s in names if s in stages], grid  # in the suite's order


def test_an_unknown_stage_is_refused_naming_the_suite_s_stages(tmp_path):
    with pytest.raises(SystemExit, match=r"suite 'protocol-instruct' has no stage 'curves'; its stages: lr, select"):
        staged.main(["protocol-instruct", "curves", "--root", str(tmp_path)])
    assert list(tmp_path.iterdir()) == []


def test_seeds_are_refused_where_a_stage_takes_none_and_must_be_integers(tmp_path):
    with pytest.raises(SystemExit, match=r"stage 'final' of suite 'protocol' takes no --seeds"):
        staged.main(["protocol", "final", "--seeds", "1,2", "--root", str(tmp_path)])
    with pytest.raises(SystemExit, match=r"--seeds '1,x'"):
        staged.main(["smalldata", "final", "--seeds", "1,x", "--root", str(tmp_path)])
    assert list(tmp_path.iterdir()) == []


def test_a_stage_before_its_input_exists_names_the_stage_to_run_first(tmp_path, capsys):
    with pytest.raises(SystemExit, match=r"chosen_lr.csv not found: stage 'final' comes after 'select' "):
        staged.main(["smalldata", "final", "--root", str(tmp_path)])
    with pytest.raises(SystemExit, match=r"runs.csv not found: run the lr stage, then `make collect`"):
        staged.main(["smalldata", "select", "--root", str(tmp_path)])
    assert not (tmp_path / "experiments").exists() and not (tmp_path / "results").exists()
    # plan prints what it can and says where it stops
    assert staged.main(["smalldata", "plan", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[5] for line in out if line.startswith("$")] == [
        "adapter=lora",
        "adapter=aslora",
        "adapter=lora",
    ]
    assert out[-1] == f"# final: after `select` (it needs {tmp_path / 'results' / 'smalldata' / 'chosen_lr.csv'})"


def test_confirm_waits_for_the_arms_lrs(tmp_path):
    (tmp_path / "results" / "smalldata").mkdir(parents=True)
    (tmp_path / "results" / "smalldata" / "chosen_lr.csv").write_text("task,adapter,variant,lr\n")
    with pytest.raises(SystemExit, match=r"arm_lr.csv not found: stage 'confirm' comes after 'arm-lr'"):
        staged.main(["smalldata", "confirm", "--root", str(tmp_path)])


def test_a_command_whose_every_job_has_finished_is_not_launched(tmp_path, monkeypatch, capsys):
    """A restarted grid passes its finished runs in the driver: no train.py started (under SLURM, no
    job queued) for a command whose every job has a finished report; one unfinished job launches it."""
    import shutil

    import scripts.grids.workspace as workspace
    from hydra_glue import compose_run

    reports = ROOT / "results" / "reports"
    command = ["sweep=smalldata_confirm", "task=rt_polarity", "adapter=lora", "train.lr=0.001", "seed=6,7"]
    space = workspace.Workspace.scratch(tmp_path)
    names = [compose_run([*command[:-1], f"seed={s}", *space.overrides])[0]["run_name"] for s in (6, 7)]
    assert names == [f"smalldata-confirm_minilm-l6_rt_polarity_lora_lr=0.001_s{s}" for s in (6, 7)]
    calls = []
    monkeypatch.setattr(workspace.subprocess, "run", lambda *a, **k: calls.append(a))

    def finish(name):  # the committed report of that run (named before the keys were shortened), where the job looks
        (tmp_path / "experiments" / name).mkdir(parents=True)
        committed = reports / f"{name.replace('_lora_lr=', '_lora_train.lr=')}.json"
        shutil.copyfile(committed, tmp_path / "experiments" / name / "report.json")

    finish(names[0])
    space.train(command, dry_run=False)
    assert len(calls) == 1  # seed 7 has not run: train.py runs the multirun (and skips seed 6 itself)
    finish(names[1])
    space.train(command, dry_run=False)
    assert len(calls) == 1 and "done, skipped: python train.py -m sweep=smalldata_confirm" in capsys.readouterr().out
    space.train([*command, "overwrite=true"], dry_run=False)
    assert len(calls) == 2  # overwrite asks for a rerun
    space.train(["sweep=smalldata_confirm", "adapter=nope"], dry_run=False)
    assert len(calls) == 3  # a command that does not compose is train.py's to refuse, with its preflight
