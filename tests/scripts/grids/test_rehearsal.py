"""The grid rehearsal (issue 21): make reproduce-glue's every job at tiny scale, then collect, tables
and figures, in a scratch folder — with the grids, recipes and schedules of the real run."""

from __future__ import annotations

import csv
import json

import pytest

from scripts.grids.catalog import GRIDS
from scripts.grids.rehearsal import glue_splits, rehearse

SEEDS = [
    pytest.param("1", id="one-seed", marks=pytest.mark.rehearsal),
    # every seed of all 150 GLUE jobs: longer than CI allows on 2 cores (make test-long)
    pytest.param(None, id="every-seed", marks=[pytest.mark.slow, pytest.mark.long]),
]


@pytest.mark.parametrize("seeds", SEEDS)
def test_the_glue_grid_rehearses_end_to_end(seeds, tmp_path):
    results = rehearse("glue", tmp_path, seeds, ["hydra/launcher=parallel", "hydra.launcher.n_jobs=2"])
    n_seeds = 1 if seeds else 5
    reports = {p.parent.name: json.loads(p.read_text()) for p in (tmp_path / "experiments").glob("*/report.json")}
    # every job of the three grids, by name, as the real grid names them: 6 tasks × 5 adapters, MNLI's
    # LoRA runs, then LoRA on MRPC/RTE/STS-B from them
    assert GRIDS["glue"][2] == ("sweep=glue_mnli_init",)
    expected = {
        *(f"glue_roberta-base_{t}_{a}_s{s}" for t in ("sst2", "mrpc", "cola", "qnli", "rte", "stsb")
          for a in ("lora", "vera", "tiedlora", "sharelora", "aslora") for s in range(1, n_seeds + 1)),
        *(f"glue_roberta-base_mnli_lora_s{s}" for s in range(1, n_seeds + 1)),
        *(f"glue_mnli-init_roberta-base_{t}_lora_s{s}" for t in ("mrpc", "rte", "stsb") for s in range(1, n_seeds + 1)),
    }  # fmt: skip
    assert set(reports) == expected and all(r["status"] == "done" for r in reports.values())

    # the recipes and schedules are the real ones: the ASLoRA paper's MRPC row ties at T_s + k·m
    mrpc = reports["glue_roberta-base_mrpc_aslora_s1"]
    assert mrpc["plan"]["merge_steps"] == [320 + 240 * k for k in range(1, 8)]
    assert sorted({e["step"] for e in mrpc["merge_history"]}) == mrpc["plan"]["merge_steps"]
    assert mrpc["params"]["after"]["num_distinct_B"] == 10  # 12 layers − 7 ties, per module type × 2
    assert mrpc["config"]["train"]["lr"] == 4e-4 and mrpc["config"]["train"]["epochs"] == 30
    assert reports["glue_mnli-init_roberta-base_rte_lora_s1"]["config"]["init_adapter_from"].endswith(
        "glue_roberta-base_mnli_lora_s1/adapter"
    )

    # collect, tables and figures ran on the result, in the scratch folder
    with open(results / "runs.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(expected)
    tables = {p.name for p in (results / "tables").iterdir()}
    assert tables and all(p.stat().st_size > 0 for p in (results / "tables").iterdir())
    assert "LoRA [init=mnli]" in "".join(p.read_text() for p in (results / "tables").glob("*.md"))
    aslora_runs = [name for name in expected if "_aslora_" in name]
    assert sorted(p.name for p in (results / "figures").iterdir()) == sorted(aslora_runs)
    assert all(any((results / "figures" / name).glob("*.png")) for name in aslora_runs)


def test_rehearsal_data_have_the_hubs_splits_and_columns(tmp_path):
    from scripts.grids.rehearsal import write_glue_task

    write_glue_task(tmp_path, "mnli", n_train=4, n_eval=3)
    assert sorted(p.stem for p in tmp_path.iterdir()) == sorted(glue_splits("mnli"))
    assert {"validation_matched", "validation_mismatched", "test_matched", "test_mismatched"} <= set(
        glue_splits("mnli")
    )
    rows = [json.loads(line) for line in (tmp_path / "test_matched.jsonl").read_text().splitlines()]
    assert set(rows[0]) == {"premise", "hypothesis", "label", "idx"} and {r["label"] for r in rows} == {-1}


@pytest.mark.slow
def test_the_alpaca_grid_rehearses_end_to_end(tmp_path):
    results = rehearse("alpaca", tmp_path, "1", [])
    reports = {p.parent.name: json.loads(p.read_text()) for p in (tmp_path / "experiments").glob("*/report.json")}
    assert set(reports) == {f"alpaca_llama-2-7b_alpaca_{a}_s1" for a in ("lora", "vera", "aslora")}
    aslora = reports["alpaca_llama-2-7b_alpaca_aslora_s1"]
    assert len({e["step"] for e in aslora["merge_history"]}) == 17  # LLaMA-2-7B's 17 ties per type
    assert aslora["prompt_format"] == "alpaca" and aslora["config"]["train"]["mixed_precision"] == "bf16"
    assert (results / "tables" / "alpaca_llama-2-7b.md").is_file()


def test_local_alpaca_files_are_checked_before_loading(tmp_path):
    from aslora.harness.inputs.data import check_task_available, get_task
    from scripts.grids.rehearsal import write_alpaca

    spec = get_task("alpaca")
    with pytest.raises(ValueError, match="has no train.jsonl"):
        check_task_available(spec, hub_enabled=False, local_dir=str(tmp_path))
    write_alpaca(tmp_path, 10)
    assert check_task_available(spec, hub_enabled=False, local_dir=str(tmp_path)) == 8  # 80 % trains
    rows = (tmp_path / "train.jsonl").read_text().splitlines()
    (tmp_path / "train.jsonl").write_text("\n".join([rows[0].replace('"output"', '"answer"'), *rows[1:]]))
    with pytest.raises(ValueError, match=r"row 0: 'output' is not a string"):
        check_task_available(spec, hub_enabled=False, local_dir=str(tmp_path))
    with pytest.raises(ValueError, match="reads no local files"):
        check_task_available(get_task("rt_polarity"), hub_enabled=False, local_dir=str(tmp_path))


@pytest.mark.slow
def test_an_offline_grid_rehearses_with_its_real_model_and_fewer_examples(tmp_path):
    results = rehearse("ablation", tmp_path, "1", ["hydra/launcher=parallel", "hydra.launcher.n_jobs=2"])
    reports = [json.loads(p.read_text()) for p in (tmp_path / "experiments").glob("*/report.json")]
    assert len(reports) == 3 * 2  # merge_selection × a_sharing, one seed
    assert {r["config"]["task"]["max_train_examples"] for r in reports} == {160}  # every job's schedule fits
    assert all(r["merge_history"] for r in reports)
    assert (results / "runs.csv").is_file() and any((results / "tables").glob("*.md"))


@pytest.mark.slow
@pytest.mark.long  # ~22 min on 2 cores (52 runs of 3 epochs): make test-long, not CI's slow step
def test_the_small_data_suite_rehearses_stage_by_stage(tmp_path):
    """make protocol-smalldata's stages — lr grid, collect, select, extend, every arm × seed — in a
    scratch workspace, then the suite's own table and learning-curve figure."""
    from scripts.grids.smalldata import ARMS, SEEDS

    results = rehearse("smalldata", tmp_path, None, [])
    reports = [json.loads(p.read_text()) for p in (tmp_path / "experiments").glob("*/report.json")]
    final = [r for r in reports if r["config"]["run_prefix"] == "smalldata_"]
    assert len(final) == len(ARMS) * len(SEEDS) and all(r["status"] == "done" for r in reports)
    lr_stage = [r for r in reports if r["config"]["run_prefix"] == "smalldata-lr_"]
    assert len(lr_stage) >= 3 * 3  # three adapters × the lr grid, plus what extend added
    with open(results / "smalldata" / "chosen_lr.csv") as f:
        assert len(list(csv.DictReader(f))) == 3
    # the paper-proportioned schedule ties at the same fractions of this shorter run
    paper = next(r for r in final if r["config"]["adapter"]["params"]["merge_start_fraction"] == 0.0464)
    total = paper["plan"]["total_steps"]
    assert paper["merge_history"] and max(paper["plan"]["merge_steps"]) <= 0.3 * total
    table = (results / "smalldata" / "tables.md").read_text()
    assert all(arm.label in table for arm in ARMS) and "PARTIAL" not in table
    assert (results / "figures" / "smalldata_curves.png").stat().st_size > 0


def test_a_staged_grid_refuses_overrides_outside_a_scratch_folder_and_one_seed(tmp_path):
    from scripts.grids.catalog import run_staged

    with pytest.raises(
        SystemExit, match=r"extra overrides \['task.max_train_examples=8'\] for staged grid 'smalldata'"
    ):
        run_staged("smalldata", None, ["task.max_train_examples=8"])
    with pytest.raises(SystemExit, match="--seeds is for the plain grids; staged grid 'protocol'"):
        rehearse("protocol", tmp_path, "1", [])
    assert list(tmp_path.iterdir()) == []  # refused before the tiny models and data are built


@pytest.mark.rehearsal  # composes every job of the staged grids (~100 s on 2 cores): with the rehearsal, not the fast suite
@pytest.mark.parametrize("grid", ["smalldata", "protocol", "protocol-instruct"])
def test_a_staged_grids_rehearsal_scale_fits_every_job_it_can_run(grid, tmp_path):
    """Every multirun the stages can run (the final and curve stages at any chosen lr) fits its
    schedule at the rehearsal's number of examples: the planner accepts every job."""
    from aslora.harness.runs.settings import RunSettings
    from hydra_glue import composer
    from scripts.grids.preflight import jobs_of
    from scripts.grids.rehearsal import _staged_commands, build

    scale = build(tmp_path, grid)
    n_train = int(next(o for o in scale if o.startswith("task.max_train_examples=")).split("=")[1])
    commands = _staged_commands(grid)
    with composer() as compose:
        jobs = [job for command in commands for job in jobs_of([*command, *scale])]
        for job in jobs:
            RunSettings.from_dict(*compose(job)).plan(n_train, num_processes=1)  # raises if a schedule does not fit
    adapters = {o.split("=")[1] for c in commands for o in c if o.startswith("adapter=")}
    assert {"lora", "aslora"} <= adapters
    # lr stages: 3 lrs per adapter; finals: 5 seeds (instruct: 3) per adapter and task. smalldata:
    # the exploratory lr stage (3 adapters x 3 lrs), its 8 arms once, the confirmatory study's
    # per-arm lr stage for its 5 secondary arms (one lr here), and its 8 arms once more
    expected = {"smalldata": 3 * 3 + 8 + 5 + 8, "protocol": 2 * (6 * 3) + 2 * 6 * 5, "protocol-instruct": 4 * 3 + 4 * 3}
    assert len(jobs) >= expected[grid] and (grid != "smalldata" or len(jobs) == expected[grid])
