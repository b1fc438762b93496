"""The grid preflight (issue 21): Hydra's own job list, every job checked before job 1, the plan printed."""

from __future__ import annotations

import pytest
import yaml

from hydra_glue import CONFIG_DIR, composer
from scripts.grids.preflight import GridProblem, check_grid, describe, grid_jobs, main
from tests.aslora.harness.inputs.test_data import write_glue_fixture
from tests.test_train import _cli


def _sweep_params(name: str) -> dict:
    return yaml.safe_load((CONFIG_DIR / "sweep" / f"{name}.yaml").read_text())["hydra"]["sweeper"]["params"]


def test_the_job_list_is_hydras_product_with_the_command_line_winning():
    params = _sweep_params("glue")  # task × adapter × seed
    jobs = grid_jobs(["sweep=glue", "hub=true"], params)
    assert len(jobs) == 6 * 5 * 5 == len({tuple(job) for job in jobs})
    # as Hydra's sweeper renders them for the launcher (it writes the parsed value: hub=True)
    assert jobs[0] == ["task=sst2", "adapter=lora", "seed=1", "sweep=glue", "hub=True"]
    assert jobs[-1] == ["task=stsb", "adapter=aslora", "seed=5", "sweep=glue", "hub=True"]
    # a key the sweep config sweeps, overridden on the command line, runs the command line's values only
    narrowed = grid_jobs(["sweep=smalldata_lr", "train.lr=5e-4"], _sweep_params("smalldata_lr"))
    assert [[o for o in job if o.startswith("train.lr")] for job in narrowed] == [["train.lr=0.0005"]]
    assert grid_jobs(["debug=smoke", "adapter.params.max_merges=1,2"], None) == [
        ["debug=smoke", "adapter.params.max_merges=1"],
        ["debug=smoke", "adapter.params.max_merges=2"],
    ]


def test_every_failing_job_is_named_before_the_first_runs(tmp_path):
    glue = tmp_path / "mrpc"
    glue.mkdir()
    write_glue_fixture(glue, "mrpc")
    (glue / "validation.jsonl").unlink()  # no validation split: every MRPC job needs it
    jobs = [
        ["debug=smoke", "adapter.params.max_merges=1"],  # fine
        ["debug=smoke", "adapter.params.max_merges=9"],  # 9 ties do not fit 16 steps
        ["debug=smoke", "task=mrpc", f"task.local_dir={glue}"],
        ["debug=smoke", "adapter=lora", "init_adapter_from=/nonexistent/adapter"],
        ["debug=smoke", "train.progress_bar=true"],  # excluded from the name: same directory as the next
        ["debug=smoke", "train.progress_bar=false"],
    ]
    with composer() as compose, pytest.raises(GridProblem) as problem:
        check_grid([[f"experiments_dir={tmp_path / 'exp'}", *job] for job in jobs], compose)
    text = str(problem.value)
    assert text.startswith("6 jobs checked; 5 would fail:")
    assert "job(s) 1: ValueError: merge schedule cannot complete: merge event 9" in text
    assert "job(s) 2: ValueError" in text and "validation" in text
    assert "job(s) 3: " in text and "/nonexistent/adapter" in text
    assert "job(s) 4-5: 2 jobs would write one run directory" in text
    assert "job(s) 0" not in text
    assert not (tmp_path / "exp").exists()


def test_the_plan_counts_jobs_steps_ties_and_done_runs(tmp_path, capsys):
    grid = [f"experiments_dir={tmp_path}", "debug=smoke", "adapter=aslora,lora"]
    assert main([*grid, "--jobs"]) == 0
    out = capsys.readouterr().out
    assert f"grid: 2 jobs (0 done, skipped; 2 to run), 1 process(es) each, results in {tmp_path}/<run>/" in out
    assert "1 × minilm-l6 · rt_polarity · aslora: 16 steps (16 an epoch); ties at steps 3, 5, 7, 9" in out
    assert "1 × minilm-l6 · rt_polarity · lora: 16 steps (16 an epoch)\n" in out
    assert "todo  smoke_minilm-l6_rt_polarity_lora_s42" in out
    # under 8 processes each job has 2 steps: ASLoRA's schedule no longer fits, and the CLI says so
    assert main([*grid, "--processes", "8"]) == 1
    assert "job(s) 0: ValueError" in capsys.readouterr().err


def test_a_grid_with_one_bad_job_stops_before_job_1_and_writes_nothing(tmp_path):
    result = _cli(
        ["-m", "debug=smoke", "adapter.params.max_merges=1,9", f"experiments_dir={tmp_path / 'exp'}"], tmp_path
    )
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "stopped before the first job: 2 jobs checked; 1 would fail:" in output and "job(s) 1: " in output
    assert "Launching" not in output  # no job started
    assert list(tmp_path.iterdir()) == []


def test_describe_says_which_runs_are_done(tmp_path):
    jobs = [[f"experiments_dir={tmp_path}", "debug=smoke", "adapter=lora"]]
    with composer() as compose:
        (job,) = check_grid(jobs, compose)
        (job.run_dir).mkdir(parents=True)
        (job.run_dir / "report.json").write_text('{"status": "done"}')
        (done,) = check_grid(jobs, compose)
    assert not job.done and done.done
    assert "(1 done, skipped; 0 to run)" in describe([done], every_job=True)


def test_a_local_data_job_is_planned_at_the_size_of_its_files(tmp_path):
    """The paper's MRPC schedule (ties at T_s + k·m: 560 … 1,280 with MiniLM's 4) fits MRPC's published
    3,668 examples (6,900 steps), not 24 local rows (60 steps): the preflight plans at the files' size."""
    glue = tmp_path / "mrpc"
    glue.mkdir()
    write_glue_fixture(glue, "mrpc")  # 24 training rows
    schedule = ["adapter.params.merge_start_step=320", "adapter.params.merge_interval_steps=240",
                "adapter.params.merge_start_fraction=null", "adapter.params.merge_interval_fraction=null"]  # fmt: skip
    job = [f"experiments_dir={tmp_path / 'exp'}", "model=minilm-l6", "task=mrpc", "adapter=aslora", *schedule]
    with composer() as compose:
        from aslora.harness.runs.settings import RunSettings

        published = RunSettings.from_dict(*compose(job)).plan()  # no data read: the task's published size
        assert published.total_steps == 6900 and published.merge_steps[-1] == 1280
        with pytest.raises(GridProblem, match=r"job\(s\) 0: ValueError: merge schedule cannot complete"):
            check_grid([[*job, f"task.local_dir={glue}"]], compose)
