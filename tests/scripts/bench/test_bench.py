"""The benchmark script runs and reports ratios against PEFT LoRA (tiny shapes; not a timing test)."""

from __future__ import annotations

import json

import pytest

from scripts.bench.speed import main


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
                "6",
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
    assert methods["peft-lora"]["step_ratio_to_lora"]["median"] == 1.0
    assert methods["limit"]["step_ratio_to_limit"] == {
        "median": 1.0,
        "low": 1.0,
        "high": 1.0,
        "n": 6,
        "coverage": 0.96875,
    }
    # each ratio is the median over rounds of the method's step over the limit step timed beside it, and
    # its 95 % interval the 1st and 6th of the six round ratios (the order statistics the binomial gives at n = 6)
    aslora_times, limit_times = methods["aslora"]["step_seconds_all"], methods["aslora"]["limit_seconds_all"]
    ratios = sorted(a / b for a, b in zip(aslora_times, limit_times, strict=True))
    assert methods["aslora"]["step_ratio_to_limit"]["median"] == pytest.approx((ratios[2] + ratios[3]) / 2)
    assert (methods["aslora"]["step_ratio_to_limit"]["low"], methods["aslora"]["step_ratio_to_limit"]["high"]) == (
        pytest.approx(ratios[0]),
        pytest.approx(ratios[-1]),
    )
    assert methods["limit"]["adapter_params"] == 0  # nothing but the head trains
    # after its 4 ties per module type ASLoRA stores 15,360 of LoRA's 73,728 numbers (fp32)
    assert methods["aslora"]["adapter_params"] == 15_360 and methods["peft-lora"]["adapter_params"] == 73_728
    assert methods["aslora"]["adapter_bytes"] == 15_360 * 4 and methods["peft-lora"]["adapter_bytes"] == 73_728 * 4
    assert 0 < report["aslora"]["running_mean_update_fraction_of_step"] < 1
    assert "step × limit [95 %]" in capsys.readouterr().out


def test_kernels_bench_times_each_adapted_layer_alone_and_takes_the_ratio_per_round(tmp_path, capsys):
    import statistics

    from scripts.bench.kernels import main as kernels_main

    out = tmp_path / "kernels.json"
    assert kernels_main(["--batch-size", "2", "--seq-len", "8", "--repeats", "6", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["adapted_layers"] == 12  # MiniLM-L6: query and value in each of 6 blocks
    limit = report["limit_seconds_all"]
    for name in ("plain-gemms", "our-layer"):
        extra = report[name]["extra_seconds_all"]
        assert len(extra) == len(limit) == 6
        # the step the layers would make: 1 + (Σ layers' extra time) / (the limit step of the same round)
        ratios = [1 + e / s for e, s in zip(extra, limit, strict=True)]
        assert report[name]["ratio_to_limit"]["median"] == pytest.approx(statistics.median(ratios))
        assert report[name]["ratio_to_limit"]["low"] == pytest.approx(min(ratios))
    assert "our layer" in capsys.readouterr().out


def test_bench_rejects_an_unknown_method(tmp_path):
    with pytest.raises(SystemExit, match="unknown --methods \\['aslora-plain'\\]"):
        main(["--methods", "aslora-plain", "--out", str(tmp_path / "b.json")])


def _ratio(median, low, high, n=15):
    return {"median": median, "low": low, "high": high, "n": n, "coverage": 0.965}


def test_the_speed_target_is_met_only_when_the_whole_interval_is_below_it():
    from scripts.bench.report import _against

    assert _against(_ratio(1.00, 0.99, 1.015), 1.02) == "met"
    assert _against(_ratio(1.01, 0.99, 1.03), 1.02).startswith("not shown")  # median below, interval across
    assert _against(_ratio(1.05, 1.03, 1.07), 1.02) == "missed"
    assert _against({"median": 1.0, "low": None, "high": None, "n": 1, "coverage": None}, 1.02).startswith("not shown")


def test_bench_report_fills_both_blocks_from_the_json_and_says_flat_only_when_the_slope_interval_holds_zero(tmp_path):
    from scripts.bench.report import main as report_main

    env = {
        "git_sha": "0123456789abcdef",
        "git_dirty": False,
        "device": "CPU: test (2 cores)",
        "packages": {"torch": "2"},
    }
    row = {"step_seconds": 1.0, "memory_bytes_ratio": 1.0, "adapter_bytes_ratio": 0.208}
    speed = {
        "command": "python -m scripts.bench.speed",
        "model": "minilm-l6",
        "batch_size": 32,
        "seq_len": 64,
        "rank": 8,
        "dtype": "float32",
        "environment": env,
        "methods": {
            "limit": {
                **row,
                "step_ratio_to_limit": _ratio(1.0, 1.0, 1.0),
                "step_ratio_to_lora": _ratio(0.95, 0.94, 0.96),
            },
            "peft-lora": {
                **row,
                "step_ratio_to_limit": _ratio(1.05, 1.04, 1.06),
                "step_ratio_to_lora": _ratio(1, 1, 1),
            },
            "aslora": {
                **row,
                "step_ratio_to_limit": _ratio(1.006, 0.998, 1.013),
                "step_ratio_to_lora": _ratio(0.95, 0.94, 0.97),
            },
        },
        "aslora": {
            "running_mean_update_fraction_of_step": 0.0001,
            "merge_event_fraction_of_step": 0.0013,
            "folded_inference_ratio_to_base": 0.99,
        },
    }
    depth_rows = [
        {
            "layers": L,
            "method": "aslora",
            "ratio_to_limit": _ratio(1.01, 1.0, 1.02),
            "overhead_per_adapted_layer_ms": _ratio(0.2, 0.1, 0.3),
        }
        for L in (4, 8)
    ]
    depth = {
        "command": "python -m scripts.bench.depth",
        "width": 256,
        "intermediate": 256,
        "batch_size": 8,
        "seq_len": 64,
        "dtype": "float32",
        "environment": env,
        "rows": depth_rows,
        "slope_ms_per_block": {
            "aslora-minus-peft-lora": {"slope": 0.001, "low": -0.002, "high": 0.004, "n": 30},
            "peft-lora": {"slope": 0.01, "low": 0.005, "high": 0.02, "n": 30},
        },
    }
    (tmp_path / "s.json").write_text(json.dumps(speed))
    (tmp_path / "d.json").write_text(json.dumps(depth))
    (tmp_path / "cached.json").write_text(json.dumps({**depth, "batch_size": 1, "seq_len": 32}))
    kernels = {
        "command": "python -m scripts.bench.kernels",
        "model": "minilm-l6",
        "batch_size": 32,
        "seq_len": 64,
        "adapted_layers": 12,
        "repeats": 40,
        "environment": env,
        "plain-gemms": {"ratio_to_limit": _ratio(1.038, 1.025, 1.041)},
        "our-layer": {"ratio_to_limit": _ratio(1.036, 1.031, 1.040)},
    }
    (tmp_path / "k.json").write_text(json.dumps(kernels))
    readme = tmp_path / "README.md"
    readme.write_text(
        "x\n<!-- table:bench_speed -->\nSTALE\n<!-- /table:bench_speed -->\n<!-- table:bench_depth -->\n<!-- /table:bench_depth -->\n"
    )
    assert (
        report_main(
            [
                "--speed",
                str(tmp_path / "s.json"),
                "--depth",
                str(tmp_path / "cached.json"),
                str(tmp_path / "d.json"),
                "--kernels",
                str(tmp_path / "k.json"),
                "--readme",
                str(readme),
            ]
        )
        == 0
    )
    text = readme.read_text()
    # one table per depth report, in the order given
    assert 0 < text.index("**Batch 1 × 32.**") < text.index("**Batch 8 × 64.**")
    assert text.count("| L | method | step × limit [95 %] |") == 2
    # the layers alone: the bar is said to lie below the plain GEMMs only when their whole interval is above it
    assert "a step 1.036 [1.031, 1.040]× the limit; the same two GEMMs written plainly" in text
    assert "1.038 [1.025, 1.041]× — the two GEMMs alone already exceed the ≤ 1.02× bar on this machine." in text
    from scripts.bench.report import kernels_line

    straddles = {**kernels, "plain-gemms": {"ratio_to_limit": _ratio(1.03, 1.015, 1.04)}}
    assert kernels_line(straddles).endswith("the two GEMMs alone do not rule out the ≤ 1.02× bar.")
    assert "STALE" not in text and "commit `0123456`, clean tree" in text
    assert (
        "| **ASLoRA** (after its ties) | 1.000 | 1.006 [0.998, 1.013] | 0.950 [0.940, 0.970] | 1.00 | 0.208 |" in text
    )
    assert "≤ 1.02× the limit: met; ≤ PEFT LoRA: met." in text
    # depths 4 and 8: the upper end 4 µs per block allows 0.016 ms more per layer at L = 8 than at 4
    assert (
        "+1.0 µs per block of depth [-2.0, +4.0] (Theil–Sen, 95 %, 30 round × depth points): no growth detected; "
        "the interval allows at most +0.016 ms per layer from L = 4 to 8" in text
    )
    assert "(Theil–Sen, 95 %, 30 round × depth points): grows with depth (by at least 0.020 ms per layer" in text


def test_results_readme_speed_blocks_are_what_the_committed_bench_json_gives(tmp_path):
    import shutil
    from pathlib import Path

    from scripts.bench.report import main as report_main

    root = Path(__file__).resolve().parents[3]
    readme = tmp_path / "README.md"
    shutil.copy(root / "results" / "README.md", readme)
    bench = root / "results" / "bench"
    assert (
        report_main(
            [
                "--speed",
                str(bench / "minilm-l6_cpu.json"),
                "--depth",
                str(bench / "depth_cached_cpu.json"),
                str(bench / "depth_cpu.json"),
                "--kernels",
                str(bench / "kernels_cpu.json"),
                "--readme",
                str(readme),
            ]
        )
        == 0
    )
    assert readme.read_text() == (root / "results" / "README.md").read_text(), (
        "results/README.md's speed blocks were edited by hand or not regenerated: run make bench (or scripts.bench.report)"
    )
