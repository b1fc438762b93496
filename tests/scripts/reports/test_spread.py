"""scripts/reports/spread.py: every arm's score seed by seed, from runs.csv rows."""

import csv

import pytest

from scripts.reports import spread
from scripts.reports.collect_results import COLUMNS


def _row(adapter, seed, test, variant="", lr="0.01", shared_a_lr="", grid="protocol", metric="accuracy"):
    row = {c: "" for c in COLUMNS}
    row.update(grid=grid, model="minilm-l6", task="rt_polarity", adapter=adapter, seed=str(seed), variant=variant)
    row.update(lr=lr, shared_a_lr=shared_a_lr, main_metric=metric, test_metric_at_best=str(test))
    return row


ROWS = [
    _row("aslora", 1, 0.733),
    _row("aslora", 2, 0.715),
    _row("aslora", 1, 0.751, variant="max_merges=0"),
    _row("aslora", 2, 0.722, variant="max_merges=0"),
    _row("aslora", 1, 0.740, shared_a_lr="0.0001"),
    _row("lora", 1, 0.771, lr="0.003"),
    _row("lora", 2, 0.790, lr="0.003"),
    _row("lora", 3, 0.774, lr="0.003"),
    _row("lora", 1, 0.5, grid="smalldata"),  # another grid: not in this table
    _row("lora", 4, ""),  # unfinished: no test score
]


def test_the_table_lists_each_arm_seed_by_seed_with_its_range(tmp_path):
    runs = tmp_path / "runs.csv"
    with open(runs, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(ROWS)
    out = tmp_path / "spread.md"
    assert spread.main(["--runs", str(runs), "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert "| arm | lr | seed 1 | seed 2 | seed 3 | range |" in lines
    assert "| ASLoRA | 0.01 | 73.3 | 71.5 | — | 1.8 |" in lines
    assert "| ASLoRA [max_merges=0] | 0.01 | 75.1 | 72.2 | — | 2.9 |" in lines
    assert "| ASLoRA [A lr 0.0001] | 0.01 | 74.0 | — | — | — |" in lines  # one seed: no range
    assert "| LoRA | 0.003 | 77.1 | 79.0 | 77.4 | 1.9 |" in lines
    assert sum(line.startswith("| ") for line in lines) == 1 + 4  # the header and four arms


def test_a_grid_with_no_runs_says_what_to_run(tmp_path):
    runs = tmp_path / "runs.csv"
    with open(runs, "w", newline="") as f:
        csv.DictWriter(f, fieldnames=COLUMNS).writeheader()
    with pytest.raises(SystemExit, match="no finished runs of grid 'protocol' on model 'minilm-l6'"):
        spread.main(["--runs", str(runs), "--out", str(tmp_path / "x.md")])
    assert spread.main(["--runs", str(runs), "--out", str(tmp_path / "x.md"), "--if-any"]) == 0
    assert not (tmp_path / "x.md").exists()
