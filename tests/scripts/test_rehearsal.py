"""The grid rehearsal (issue 21): make reproduce-glue's every job at tiny scale, then collect, tables
and figures, in a scratch folder — with the grids, recipes and schedules of the real run."""

from __future__ import annotations

import csv
import json

import pytest

from scripts.grids import GRIDS
from scripts.rehearsal import glue_splits, rehearse

SEEDS = [pytest.param("1", id="one-seed"), pytest.param(None, id="every-seed", marks=pytest.mark.slow)]


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
    from scripts.rehearsal import write_glue_task

    write_glue_task(tmp_path, "mnli", n_train=4, n_eval=3)
    assert sorted(p.stem for p in tmp_path.iterdir()) == sorted(glue_splits("mnli"))
    assert {"validation_matched", "validation_mismatched", "test_matched", "test_mismatched"} <= set(
        glue_splits("mnli")
    )
    rows = [json.loads(line) for line in (tmp_path / "test_matched.jsonl").read_text().splitlines()]
    assert set(rows[0]) == {"premise", "hypothesis", "label", "idx"} and {r["label"] for r in rows} == {-1}
