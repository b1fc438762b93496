"""`make gpu-check`'s CPU dry run (what CI can run of it): every phase runs and the JSON holds each
phase's status and report."""

from __future__ import annotations

import json

import pytest


@pytest.mark.rehearsal  # ~1 min of benchmarks at toy sizes: with the rehearsal, which CI runs
def test_the_gpu_check_dry_run_runs_every_phase_and_writes_its_report(tmp_path):
    from scripts.bench.gpu_check import main

    out = tmp_path / "gpu_check.json"
    assert main(["--dry-run", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["device"] == "cpu (dry run)"
    phases = report["phases"]
    assert set(phases) == {"gpu-tests", "bench-roberta-base", "bench-depth-llama-2-7b-shapes"}
    assert all(p["status"] == "ok" for p in phases.values())
    assert "skipped" in phases["gpu-tests"]["summary"]  # no CUDA here: the gpu tests skip, they do not fail
    assert {"limit", "peft-lora", "aslora"} <= set(phases["bench-roberta-base"]["report"]["methods"])
    depth = phases["bench-depth-llama-2-7b-shapes"]["report"]["rows"]
    assert sorted({r["layers"] for r in depth}) == [2, 4] and {r["method"] for r in depth} == {"peft-lora", "aslora"}
    assert out.with_suffix(".log").read_text().count("=====") == 3
    assert not list(tmp_path.glob(".*parts"))  # the phases' own files are cleaned up


def test_the_gpu_check_refuses_a_machine_without_cuda_unless_dry():
    import torch

    from scripts.bench.gpu_check import main

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is here")
    with pytest.raises(SystemExit, match="no CUDA device here"):
        main([])
