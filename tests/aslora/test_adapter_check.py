"""Every file a user hands us, tried malformed (issue 23): a saved adapter's config and weights,
ours and PEFT's. Each case is refused with the file and the problem named, and the base model
is left exactly as it was — no adapter injected, nothing half-loaded."""

from __future__ import annotations

import json
import pickle

import peft
import pytest
import torch
from safetensors.torch import load_file, save_file

import aslora
from aslora.adapters.pools import find_pool
from aslora.harness.measuring.evaluation import load_trained
from tests.aslora.test_export import _merged_aslora
from tests.conftest import tiny_bert

CONFIG, WEIGHTS = "aslora_config.json", "aslora_model.safetensors"


def _edit_json(directory, change):
    meta = json.loads((directory / CONFIG).read_text())
    change(meta)
    (directory / CONFIG).write_text(json.dumps(meta))


def _edit_weights(directory, change):
    tensors = load_file(directory / WEIGHTS)
    change(tensors)
    save_file(tensors, directory / WEIGHTS)


def _first_event(meta):
    return meta["merge_history"][0]


CASES = {
    "truncated weights": (
        lambda d: (d / WEIGHTS).write_bytes((d / WEIGHTS).read_bytes()[:100]),
        "aslora_model.safetensors is not a readable safetensors file",
    ),
    "a pickle instead of safetensors": (
        lambda d: (d / WEIGHTS).write_bytes(pickle.dumps({"lora_A.global": 1})),
        "aslora_model.safetensors is not a readable safetensors file",
    ),
    "integer weights": (
        lambda d: _edit_weights(d, lambda t: t.update({"lora_A.global": t["lora_A.global"].long()})),
        r"tensors \['lora_A.global'\] are torch.int64, not floating point",
    ),
    "NaN weights": (
        lambda d: _edit_weights(d, lambda t: t["lora_A.global"].fill_(float("nan"))),
        r"tensors \['lora_A.global'\] hold NaN or Inf",
    ),
    "Inf weights": (
        lambda d: _edit_weights(d, lambda t: t[next(k for k in t if k.startswith("lora_B"))].fill_(float("inf"))),
        "hold NaN or Inf",
    ),
    "config not JSON": (lambda d: (d / CONFIG).write_text("{'r': 4"), "aslora_config.json is not valid JSON"),
    "config a list": (lambda d: (d / CONFIG).write_text("[1, 2]"), "is not an aslora adapter"),
    "unknown config field": (
        lambda d: _edit_json(d, lambda m: m["config"].update(rank_boost=3)),
        r"aslora_config.json: the config does not fit ASLoRAConfig .*rank_boost",
    ),
    "r of the wrong type": (
        lambda d: _edit_json(d, lambda m: m["config"].update(r="eight")),
        "aslora_config.json: .*r",
    ),
    "negative r": (lambda d: _edit_json(d, lambda m: m["config"].update(r=-4)), "aslora_config.json: .*r"),
    "absurd r": (
        lambda d: _edit_json(d, lambda m: m["config"].update(r=1_000_000)),
        r"the config says r=1000000, but the tensors have another rank",
    ),
    "sharing not a mapping": (lambda d: _edit_json(d, lambda m: m.update(sharing=["query_0"])), "sharing must be dict"),
    "negative mean count": (lambda d: _edit_json(d, lambda m: m.update(num_mean_updates=-1)), "num_mean_updates=-1"),
    "merge event without a B": (
        lambda d: _edit_json(d, lambda m: _first_event(m).pop("kept")),
        r"merge_history\[0\] must hold",
    ),
    "map pointing outside its bank": (
        lambda d: _edit_json(d, lambda m: m["sharing"].update(query_0="query_99")),
        "not what the saved merge history leads to",
    ),
    "history naming a B the model lacks": (
        lambda d: _edit_json(d, lambda m: _first_event(m).update(kept="query_99")),
        "names B 'query_99', which this model does not have",
    ),
    "history inconsistent with the map": (
        lambda d: _edit_json(d, lambda m: m["merge_history"].pop()),
        "not what the saved merge history leads to",
    ),
    "tensor of another shape": (
        lambda d: _edit_weights(d, lambda t: t.update({"lora_A.global": torch.zeros(4, 7)})),
        "wrong shape",
    ),
    "a tensor missing": (
        lambda d: _edit_weights(d, lambda t: t.pop(next(k for k in t if k.startswith("lora_B.")))),
        r"missing \['lora_B\.",
    ),
    "the only A missing": (
        lambda d: _edit_weights(d, lambda t: t.pop("lora_A.global")),
        r"holds no lora_A.\* or no lora_B.\* tensors",
    ),
    # issue 37: each a ValueError naming file and field, before the model is touched
    "an absurd lora_alpha": (
        lambda d: _edit_json(d, lambda m: m["config"].update(lora_alpha=1e38)),
        r"aslora_config.json: lora_alpha=1e\+38 with these weights makes ΔW .* not finite in float32",
    ),
    "no lora tensors and a huge r": (
        lambda d: (
            _edit_json(d, lambda m: m["config"].update(r=100_000)),
            save_file({"head.classifier.weight": torch.zeros(2, 32)}, d / WEIGHTS),
        ),
        r"aslora_model.safetensors: holds no lora_A.\* or no lora_B.\* tensors",
    ),
    "head_modules not names": (
        lambda d: _edit_json(d, lambda m: m.update(head_modules=[1])),
        r"aslora_config.json: head_modules must be a list of module names",
    ),
    "a tie at an infinite step": (
        lambda d: _edit_json(d, lambda m: _first_event(m).update(step=float("inf"))),
        r"aslora_config.json: merge_history\[0\] must have a whole step",
    ),
    "a mean count past int64": (
        lambda d: _edit_json(d, lambda m: m.update(num_mean_updates=10**30)),
        r"aslora_config.json: num_mean_updates=1000000000000000000000000000000 must be in",
    ),
    "format_version as text": (
        lambda d: _edit_json(d, lambda m: m.update(format_version="3")),
        r"format_version='3' is not one this version of aslora reads",
    ),
    "a format from the future": (
        lambda d: _edit_json(d, lambda m: m.update(format_version=99)),
        r"format_version=99 is not one this version of aslora reads",
    ),
    "a config nested past the parser": (
        lambda d: (d / CONFIG).write_text("[" * 100_000 + "]" * 100_000),
        r"aslora_config.json is nested too deeply",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_malformed_adapter_is_refused_and_the_base_model_is_left_as_it_was(case, tmp_path):
    aslora.save_adapter(_merged_aslora(tiny_bert, ["query", "value"]), tmp_path)
    damage, message = CASES[case]
    damage(tmp_path)
    base = tiny_bert()
    before = {k: v.clone() for k, v in base.state_dict().items()}
    grads = {k: p.requires_grad for k, p in base.named_parameters()}
    attributes = set(vars(base))
    with pytest.raises(ValueError, match=message):
        aslora.load_adapter(base, tmp_path)
    assert find_pool(base) is None and base.state_dict().keys() == before.keys()
    assert all(torch.equal(v, before[k]) for k, v in base.state_dict().items())
    assert {k: p.requires_grad for k, p in base.named_parameters()} == grads
    assert set(vars(base)) == attributes  # no attribute of the load left behind


def _peft_dir(tmp_path):
    model = peft.get_peft_model(tiny_bert(), peft.LoraConfig(r=4, target_modules=["query", "value"]))
    model.save_pretrained(str(tmp_path))
    return tmp_path


def test_a_peft_adapter_saved_as_a_pickle_is_refused(tmp_path):
    directory = _peft_dir(tmp_path)
    (directory / "adapter_model.safetensors").unlink()
    (directory / "adapter_model.bin").write_bytes(pickle.dumps({}))
    with pytest.raises(ValueError, match=r"adapter_model.safetensors does not exist .*pickle.*safe_serialization=True"):
        load_trained(tiny_bert(), directory)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: (d / "adapter_model.safetensors").write_bytes(b"\x00" * 10), "is not a readable safetensors file"),
        (
            lambda d: save_file(
                {k: torch.full_like(v, float("nan")) for k, v in load_file(d / "adapter_model.safetensors").items()},
                d / "adapter_model.safetensors",
            ),
            "hold NaN or Inf",
        ),
        (lambda d: (d / "adapter_config.json").write_text("not json"), "adapter_config.json is not valid JSON"),
    ],
)
def test_a_malformed_peft_adapter_is_refused_before_peft_loads_it(tmp_path, damage, message):
    directory = _peft_dir(tmp_path)
    damage(directory)
    with pytest.raises(ValueError, match=message):
        load_trained(tiny_bert(), directory)
