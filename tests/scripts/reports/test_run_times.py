"""The run-times table README's command table points at is computed from runs.csv, never typed."""

from __future__ import annotations

import csv

import pytest

from hydra_glue import ROOT
from scripts.reports import run_times


def _row(
    grid="smalldata", model="minilm-l6", device="CPU: AMD EPYC (2 cores)", seconds="480.0", steps="1890", name="r"
):
    return {"run_name": name, "grid": grid, "model": model, "device": device, "train_seconds": seconds, "steps": steps}


def _lines(markdown: str) -> list[str]:
    return [line for line in markdown.splitlines() if line.startswith("| ") and "---" not in line][1:]


def test_median_range_and_total_per_grid_model_and_cpu():
    rows = [
        _row(seconds="360"),  # 6 min
        _row(seconds="480"),  # 8 min
        _row(seconds="3120"),  # 52 min: a run beside a test suite
        _row(device="CPU: Intel(R) Xeon(R) Processor (2 cores)", seconds="246", steps="1890"),
        _row(grid="protocol", seconds="96", steps="126"),
        _row(grid="protocol", seconds="108", steps="124"),
    ]
    lines = _lines(run_times.table(rows))
    assert lines == [
        "| protocol | minilm-l6 | AMD EPYC (2 cores) | 2 | 125 | 1.7 (1.6–1.8) | 0.1 |",
        "| smalldata | minilm-l6 | AMD EPYC (2 cores) | 3 | 1,890 | 8.0 (6.0–52.0) | 1.1 |",
        "| smalldata | minilm-l6 | Intel Xeon (2 cores) | 1 | 1,890 | 4.1 (4.1–4.1) | 0.1 |",
    ]


def test_a_row_without_a_time_is_an_error_naming_the_run_and_nothing_is_written(tmp_path):
    runs, out = tmp_path / "runs.csv", tmp_path / "tables" / "run_times.md"
    rows = [_row(name="fine"), _row(name="smalldata_lora_s3", seconds="")]
    with open(runs, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(SystemExit, match="'smalldata_lora_s3' has no train_seconds"):
        run_times.main(["--runs", str(runs), "--out", str(out)])
    assert not out.parent.exists()


def test_the_committed_table_and_readme_block_regenerate_from_the_committed_runs(tmp_path):
    readme, out = tmp_path / "README.md", tmp_path / "run_times.md"
    committed = (ROOT / "results" / "README.md").read_text()
    readme.write_text(committed)
    assert run_times.main(["--out", str(out), "--readme", str(readme)]) == 0
    assert readme.read_text() == committed
    assert out.read_text() == (ROOT / "results" / "tables" / "run_times.md").read_text()
    # README's command table quotes no minutes of its own: it points here
    assert "results/tables/run_times.md" in (ROOT / "README.md").read_text()
