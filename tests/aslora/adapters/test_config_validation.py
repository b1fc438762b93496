"""Bad configs raise a ValueError naming the offending value, before training (item 8)."""

from __future__ import annotations

import pytest

import aslora
from tests.conftest import tiny_bert


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"r": 0}, r"r=0 must be a positive integer"),
        ({"r": -3}, r"r=-3 must be a positive integer"),
        ({"r": 2.5}, r"r=2.5 must be a positive integer"),
        ({"lora_alpha": 0}, r"lora_alpha=0 must be a positive number"),
        ({"lora_alpha": float("nan")}, r"lora_alpha=nan"),
        ({"lora_dropout": 1.0}, r"lora_dropout=1.0 must be in \[0, 1\)"),
        ({"a_sharing": "layerwise"}, r"a_sharing='layerwise' is not one of \['global', 'per_module'\]"),
        ({"target_modules": []}, r"target_modules=\[\] must be a non-empty list"),
        ({"target_modules": ""}, r"target_modules='' matches nothing"),
        ({"merge_candidates": "nearest"}, r"merge_candidates='nearest' is not one of"),
        ({"merge_scope": "global"}, r"merge_scope='global' is not one of"),
        ({"merge_update_ratio": 1.5}, r"merge_update_ratio=1.5 must be in \[0, 1\]"),
        ({"max_merges": -1}, r"max_merges=-1 must be a non-negative integer"),
        ({"merge_interval_steps": 0}, r"merge_interval_steps=0 must be an integer >= 1"),
        ({"merge_start_step": -5}, r"merge_start_step=-5 must be an integer >= 0"),
        ({"merge_distance_threshold": -0.1}, r"merge_distance_threshold=-0.1 must be a non-negative"),
        (
            {"merge_start_step": 320, "merge_start_fraction": 0.1},
            r"give one of merge_start_step \(got 320\) and merge_start_fraction \(got 0.1\), not both",
        ),
        ({"max_merges": {"query": -1}}, r"max_merges=\{'query': -1\} must be a non-negative integer or a dict"),
        (
            {"merge_interval_steps": None, "merge_interval_fraction": 0.0},
            r"merge_interval_fraction=0.0 must be in \(0, 1\)",
        ),
        ({"merge_start_step": None, "merge_start_fraction": "0.1"}, r"merge_start_fraction='0.1' must be a number"),
    ],
)
def test_bad_aslora_config_raises_naming_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        aslora.ASLoRAConfig(**kwargs)


def test_library_defaults_fit_any_run_length_and_steps_are_one_field_away():
    """A short run with library defaults completes its schedule; giving the paper's steps needs no
    nulling of the fraction fields; an impossible schedule says what to set."""
    default = aslora.ASLoRAConfig()
    for total in (10, 30, 500, 100_000):
        schedule = default.resolve_schedule(total)
        assert schedule.max_events == 7 and schedule.last_event_step <= total
    # T_s = 10 % = 100 steps, m = 60 % / 7 ties → 85 steps: events at 185, 270, …, 695 (70 % less rounding)
    assert (
        default.resolve_schedule(1000).first_event_step == 185 and default.resolve_schedule(1000).last_event_step == 695
    )
    paper = aslora.ASLoRAConfig(merge_start_step=320, merge_interval_steps=240)
    assert paper.merge_start_fraction is None and paper.resolve_schedule(2000).last_event_step == 2000
    with pytest.raises(ValueError, match=r"only total_steps=1000, where 2 merge events fit. Set max_merges=2 or fewer"):
        paper.resolve_schedule(1000)


def test_target_modules_matching_nothing_raises_and_lists_what_exists():
    with pytest.raises(ValueError, match=r"target_modules=\('q_proj',\) matches no module .* 'query'"):
        aslora.apply_adapter(tiny_bert(), aslora.ASLoRAConfig(target_modules=["q_proj"]))


def test_target_that_is_not_linear_raises():
    with pytest.raises(ValueError, match=r"'bert.embeddings.LayerNorm' is a LayerNorm, not nn.Linear"):
        aslora.apply_adapter(tiny_bert(), aslora.ASLoRAConfig(target_modules=r"bert\.embeddings\.LayerNorm"))


def test_regex_target_modules_use_full_match():
    model = aslora.apply_adapter(tiny_bert(), aslora.ASLoRAConfig(r=2, target_modules=r".*layer\.[01]\..*\.query"))
    assert sorted(aslora.find_pool(model).slots) == ["query_0", "query_1"]


def test_unknown_config_type_raises():
    with pytest.raises(ValueError, match="unknown adapter config dict"):
        aslora.apply_adapter(tiny_bert(), {"r": 8})


def test_a_failed_injection_leaves_the_model_untouched():
    model = tiny_bert()
    names_before = [n for n, _ in model.named_modules()]
    with pytest.raises(ValueError):
        aslora.apply_adapter(model, aslora.ASLoRAConfig(target_modules=["nope"]))
    assert [n for n, _ in model.named_modules()] == names_before
    assert all(p.requires_grad for p in model.parameters())
