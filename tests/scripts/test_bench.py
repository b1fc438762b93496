"""The benchmark script runs and reports ratios against PEFT LoRA (tiny shapes; not a timing test)."""

from __future__ import annotations

import json

from scripts.bench import main


def test_bench_writes_ratios_against_peft_lora(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert (
        main(
            [
                "--batch-size",
                "2",
                "--seq-len",
                "8",
                "--repeats",
                "1",
                "--warmup",
                "1",
                "--methods",
                "aslora",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    report = json.loads(out.read_text())
    methods = report["methods"]
    assert set(methods) == {"limit", "peft-lora", "aslora"}  # the two references are always measured
    assert methods["peft-lora"]["step_seconds_ratio"] == 1.0 and methods["limit"]["step_seconds_ratio_to_limit"] == 1.0
    assert methods["limit"]["adapter_params"] == 0  # nothing but the head trains
    # after its 4 ties per module type ASLoRA stores 15,360 of LoRA's 73,728 numbers (fp32)
    assert methods["aslora"]["adapter_params"] == 15_360 and methods["peft-lora"]["adapter_params"] == 73_728
    assert methods["aslora"]["adapter_bytes"] == 15_360 * 4 and methods["peft-lora"]["adapter_bytes"] == 73_728 * 4
    assert 0 < report["aslora"]["running_mean_update_fraction_of_step"] < 1
    assert "× LoRA" in capsys.readouterr().out


def test_bench_rejects_an_unknown_method(tmp_path):
    import pytest

    with pytest.raises(SystemExit, match="unknown --methods \\['aslora-plain'\\]"):
        main(["--methods", "aslora-plain", "--out", str(tmp_path / "b.json")])
