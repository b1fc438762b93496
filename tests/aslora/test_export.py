"""Save/load round trip, folding into the base, and export to a standard PEFT adapter (items 6–7)."""

from __future__ import annotations

import copy
import json
import re

import peft
import pytest
import torch
from safetensors.torch import load_file, save_file

import aslora
from tests.conftest import MODEL_BUILDERS, randomise_adapter, tiny_bert, tiny_roberta


def _merged_aslora(build, targets, merges=2):
    model = aslora.apply_adapter(
        build(),
        aslora.ASLoRAConfig(r=4, target_modules=targets, merge_start_step=0, merge_interval_steps=1, max_merges=merges),
    )
    randomise_adapter(model)
    controller = aslora.MergeController(model, total_steps=merges)
    for t in range(1, merges + 1):
        controller.step(t)
    return model


def _trained_adapter(kind, build, targets):
    """An ASLoRA model after two ties, or a Tied-LoRA model, with non-zero factors."""
    if kind == "aslora":
        return _merged_aslora(build, targets)
    model = aslora.apply_adapter(build(), aslora.TiedLoRAConfig(r=4, target_modules=targets))
    randomise_adapter(model)
    return model


@pytest.mark.parametrize("arch", sorted(MODEL_BUILDERS))
def test_save_load_round_trips_to_identical_outputs(arch, tmp_path, input_ids):
    build, targets = MODEL_BUILDERS[arch]
    model = _merged_aslora(build, targets)
    expected = model(input_ids).logits
    aslora.save_adapter(model, tmp_path / "adapter")
    saved = load_file(tmp_path / "adapter" / "aslora_model.safetensors")
    assert sum(1 for k in saved if k.startswith("lora_A.")) == 1  # shared A stored once
    # live B's only: a retired B is not saved, so the file is as small as the count says
    assert sum(1 for k in saved if k.startswith("lora_B.")) == aslora.count_parameters(model).num_distinct_B
    assert (
        sum(v.numel() for k, v in saved.items() if k.startswith(("lora_A.", "lora_B.")))
        == aslora.count_parameters(model).adapter
    )
    loaded = aslora.load_adapter(build(), tmp_path / "adapter")
    torch.testing.assert_close(loaded(input_ids).logits, expected, rtol=0, atol=0)
    assert aslora.find_pool(loaded).sharing_map() == aslora.find_pool(model).sharing_map()
    assert aslora.find_pool(loaded).merge_history == aslora.find_pool(model).merge_history
    assert aslora.find_pool(loaded).num_mean_updates == aslora.find_pool(model).num_mean_updates
    for name in aslora.find_pool(model).live_B_names():
        torch.testing.assert_close(
            aslora.find_pool(loaded).running_mean_B[name], aslora.find_pool(model).running_mean_B[name], rtol=0, atol=0
        )
    assert aslora.count_parameters(loaded) == aslora.count_parameters(model)


def test_adapter_saved_without_training_state_still_reproduces_outputs(tmp_path, input_ids):
    model = _merged_aslora(tiny_bert, ["query", "value"])
    aslora.save_adapter(model, tmp_path, training_state=False)
    saved = load_file(tmp_path / "aslora_model.safetensors")
    assert not any(k.startswith("running_mean_B.") for k in saved)
    loaded = aslora.load_adapter(tiny_bert(), tmp_path)
    assert aslora.find_pool(loaded).num_mean_updates == 0  # its means start afresh if training continues
    torch.testing.assert_close(loaded(input_ids).logits, model(input_ids).logits, rtol=0, atol=0)


def test_tied_lora_round_trips(tmp_path, input_ids):
    model = aslora.apply_adapter(tiny_bert(), aslora.TiedLoRAConfig(r=4))
    randomise_adapter(model)
    aslora.save_adapter(model, tmp_path)
    loaded = aslora.load_adapter(tiny_bert(), tmp_path)
    torch.testing.assert_close(loaded(input_ids).logits, model(input_ids).logits, rtol=0, atol=0)


def test_loading_into_a_model_of_the_wrong_shape_fails_clearly(tmp_path):
    aslora.save_adapter(_merged_aslora(tiny_bert, ["query", "value"]), tmp_path)
    with pytest.raises(ValueError, match="wrong shape"):
        aslora.load_adapter(tiny_bert(hidden=64), tmp_path)
    with pytest.raises(ValueError, match="adapted layers it lacks"):
        aslora.load_adapter(tiny_bert(layers=6), tmp_path)


def test_loading_with_missing_keys_fails_clearly(tmp_path):
    aslora.save_adapter(_merged_aslora(tiny_bert, ["query", "value"]), tmp_path)
    weights = load_file(tmp_path / "aslora_model.safetensors")
    dropped = next(k for k in weights if k.startswith("lora_B."))
    del weights[dropped]
    save_file(weights, tmp_path / "aslora_model.safetensors")
    with pytest.raises(ValueError, match=rf"missing \['{re.escape(dropped)}'\]"):
        aslora.load_adapter(tiny_bert(), tmp_path)


def test_loading_a_directory_without_an_adapter_fails_clearly(tmp_path):
    with pytest.raises(ValueError, match="is not a saved aslora adapter"):
        aslora.load_adapter(tiny_bert(), tmp_path)
    (tmp_path / "aslora_config.json").write_text(json.dumps({"format": "something-else"}))
    save_file({}, tmp_path / "aslora_model.safetensors")
    with pytest.raises(ValueError, match="is not an aslora adapter"):
        aslora.load_adapter(tiny_bert(), tmp_path)


def test_a_peft_directory_is_named_as_such(tmp_path):
    peft_model = aslora.apply_adapter(tiny_bert(), peft.LoraConfig(r=4, target_modules=["query", "value"]))
    peft_model.save_pretrained(str(tmp_path))
    with pytest.raises(ValueError, match="holds a PEFT adapter, not an aslora one"):
        aslora.load_adapter(tiny_bert(), tmp_path)


@pytest.mark.parametrize("version", [1, 2])
def test_older_adapter_versions_still_load(version, tmp_path, input_ids):
    """Version 1 saved one tensor per live B under PEFT's file names (as version 3 does, under
    ours); version 2 stacked each merge group's live B's, in ``live_B``'s order."""
    model = _merged_aslora(tiny_bert, ["query", "value"])
    aslora.save_adapter(model, tmp_path / "v3")
    meta = json.loads((tmp_path / "v3" / "aslora_config.json").read_text())
    weights = load_file(tmp_path / "v3" / "aslora_model.safetensors")
    old = dict(weights)
    if version == 2:
        old = {k: v for k, v in weights.items() if not k.startswith(("lora_B.", "running_mean_B."))}
        for prefix in ("lora_B", "running_mean_B"):
            for bank, names in meta["live_B"].items():
                old[f"{prefix}.{bank}"] = torch.stack([weights[f"{prefix}.{name}"] for name in names])
        meta.update(format_version=2)
        config_file, weights_file = "aslora_config.json", "aslora_model.safetensors"
    else:
        meta.update(format_version=1, config={**meta["config"], "reuse_input_projection": True})
        del meta["live_B"]
        config_file, weights_file = "adapter_config.json", "adapter_model.safetensors"
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / config_file).write_text(json.dumps(meta))
    save_file({k: v.contiguous() for k, v in old.items()}, tmp_path / "old" / weights_file)
    loaded = aslora.load_adapter(tiny_bert(), tmp_path / "old")
    torch.testing.assert_close(loaded(input_ids).logits, model(input_ids).logits, rtol=0, atol=0)
    assert aslora.find_pool(loaded).merge_history == aslora.find_pool(model).merge_history


@pytest.mark.parametrize("arch", sorted(MODEL_BUILDERS))
@pytest.mark.parametrize("kind", ["aslora", "tiedlora"])
def test_merge_into_base_gives_the_same_logits_and_no_adapter(arch, kind, input_ids):
    build, targets = MODEL_BUILDERS[arch]
    model = _trained_adapter(kind, build, targets)
    expected = model(input_ids).logits
    plain = aslora.merge_into_base(model)
    assert aslora.find_pool(plain) is None
    assert not any("lora" in name for name, _ in plain.named_parameters())
    assert (
        type(plain.get_submodule(next(n for n, _ in build().named_modules() if n.endswith(targets[0]))))
        is torch.nn.Linear
    )
    torch.testing.assert_close(plain(input_ids).logits, expected, rtol=1e-5, atol=1e-5)


def test_merge_into_base_refuses_non_finite_weights_and_changes_nothing(input_ids):
    model = _merged_aslora(tiny_bert, ["query", "value"])
    with torch.no_grad():
        pool = aslora.find_pool(model)
        pool.lora_B[pool.live_B_names()[0]].fill_(float("inf"))
    weight_before = model.bert.encoder.layer[0].attention.self.query.base_layer.weight.clone()
    with pytest.raises(ValueError, match="non-finite"):
        aslora.merge_into_base(model)
    assert aslora.find_pool(model) is not None
    torch.testing.assert_close(model.bert.encoder.layer[0].attention.self.query.base_layer.weight, weight_before)


def test_merge_into_base_is_exact_in_fp32_for_bf16_base(input_ids):
    model = aslora.apply_adapter(tiny_bert().to(torch.bfloat16), aslora.ASLoRAConfig(r=4, max_merges=0))
    assert aslora.find_pool(model).lora_A["global"].dtype == torch.float32  # adapters stay fp32
    randomise_adapter(model)
    layer = model.bert.encoder.layer[0].attention.self.query
    expected = (layer.base_layer.weight.float() + layer.delta_weight()).to(torch.bfloat16)
    aslora.merge_into_base(model)
    assert torch.equal(model.bert.encoder.layer[0].attention.self.query.weight, expected)


@pytest.mark.parametrize("arch", sorted(MODEL_BUILDERS))
@pytest.mark.parametrize("kind", ["aslora", "tiedlora"])
def test_export_peft_lora_loads_in_peft_to_the_same_logits(arch, kind, tmp_path, input_ids):
    build, targets = MODEL_BUILDERS[arch]
    model = _trained_adapter(kind, build, targets)
    expected = model(input_ids).logits
    aslora.export_peft_lora(model, tmp_path)
    served = peft.PeftModel.from_pretrained(build(), str(tmp_path)).eval()
    torch.testing.assert_close(served(input_ids).logits, expected, rtol=1e-5, atol=1e-5)
    # a standard LoRA adapter: one A and one B per adapted layer
    weights = load_file(tmp_path / "adapter_model.safetensors")
    layers = 2 * model.config.num_hidden_layers
    assert sum(k.endswith("lora_A.weight") for k in weights) == layers
    assert sum(k.endswith("lora_B.weight") for k in weights) == layers


def test_merge_into_base_unwraps_peft_models(input_ids):
    base = tiny_roberta()
    model = aslora.apply_adapter(copy.deepcopy(base), peft.LoraConfig(r=4, target_modules=["query", "value"]))
    randomise_adapter(model)
    expected = model(input_ids).logits
    plain = aslora.merge_into_base(model)
    assert not isinstance(plain, peft.PeftModel)
    torch.testing.assert_close(plain(input_ids).logits, expected, rtol=1e-5, atol=1e-5)


def _roberta_with_labels(num_labels):
    model = tiny_roberta()
    model.config.num_labels = num_labels
    model.classifier.out_proj = torch.nn.Linear(model.config.hidden_size, num_labels)
    return model


def test_lora_initialised_from_another_task_takes_its_matrices_and_keeps_its_own_head(tmp_path):
    """The LoRA paper's MNLI initialisation: an MNLI-like (3-class) LoRA seeds a 1-output (STS-B-like) run."""
    lora = peft.LoraConfig(r=4, target_modules=["query", "value"])
    source = aslora.apply_adapter(_roberta_with_labels(3), copy.deepcopy(lora))
    randomise_adapter(source, seed=3)
    source.save_pretrained(str(tmp_path / "mnli"))
    target = aslora.apply_adapter(_roberta_with_labels(1), copy.deepcopy(lora))
    head_before = {k: v.clone() for k, v in target.named_parameters() if "classifier" in k}
    assert aslora.init_lora_from(target, tmp_path / "mnli") == 2 * 2 * 4  # A and B, q and v, 4 layers
    source_lora = {k: v for k, v in source.named_parameters() if ".lora_" in k}
    target_lora = dict((k, v) for k, v in target.named_parameters() if ".lora_" in k)
    assert source_lora.keys() == target_lora.keys()
    for name, value in source_lora.items():
        assert torch.equal(target_lora[name], value), name
    for name, value in target.named_parameters():
        if "classifier" in name:
            assert torch.equal(value, head_before[name]), name


def test_lora_init_refuses_what_does_not_fit(tmp_path):
    source = aslora.apply_adapter(tiny_roberta(), peft.LoraConfig(r=4, target_modules=["query", "value"]))
    source.save_pretrained(str(tmp_path / "r4"))
    other_rank = aslora.apply_adapter(tiny_roberta(), peft.LoraConfig(r=8, target_modules=["query", "value"]))
    with pytest.raises(ValueError, match="wrong shape"):
        aslora.init_lora_from(other_rank, tmp_path / "r4")
    other_targets = aslora.apply_adapter(tiny_roberta(), peft.LoraConfig(r=4, target_modules=["query"]))
    with pytest.raises(ValueError, match="unexpected"):
        aslora.init_lora_from(other_targets, tmp_path / "r4")
    with pytest.raises(ValueError, match="no PEFT adapter there"):
        aslora.init_lora_from(other_targets, tmp_path / "nowhere")
    ours = aslora.apply_adapter(tiny_roberta(), aslora.ASLoRAConfig(r=4, target_modules=["query", "value"]))
    with pytest.raises(ValueError, match="adapter=lora"):
        aslora.init_lora_from(ours, tmp_path / "r4")
