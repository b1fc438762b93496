"""Shared A is one tensor, ΔW = 0 at init, and parity with PEFT's LoRA (issue 2, items 1–3)."""

from __future__ import annotations

import copy

import peft
import pytest
import torch

import aslora
from aslora.adapters.layers import SharedLoRALinear
from tests.conftest import MODEL_BUILDERS, randomise_adapter, tiny_bert, tiny_llama_classifier


def _adapted_layers(model):
    return [m for m in model.modules() if isinstance(m, SharedLoRALinear)]


POOL = "shared_lora.aslora_pool.default"
"""Where apply_adapter's one adapter keeps its tensors in the model's state dict."""


@pytest.mark.parametrize("arch", sorted(MODEL_BUILDERS))
def test_global_A_is_one_tensor_used_by_every_layer_and_stored_once(arch):
    build, targets = MODEL_BUILDERS[arch]
    model = aslora.apply_adapter(build(), aslora.ASLoRAConfig(r=4, target_modules=targets))
    layers = _adapted_layers(model)
    assert len(layers) == 2 * model.config.num_hidden_layers
    first_a = layers[0].factors()[0]
    for layer in layers:
        assert layer.factors()[0] is first_a
    a_keys = [k for k in model.state_dict() if ".lora_A." in k]
    assert a_keys == [f"{POOL}.lora_A.global"]
    b_shapes = {k: v.shape for k, v in model.state_dict().items() if ".lora_B." in k}
    # one 2-D B per layer before any merge, named after it, as LoRA's are (d_out, r)
    assert sorted(b_shapes) == sorted(f"{POOL}.lora_B.{layer.slot['default'].key}" for layer in layers)
    assert all(shape == (layer.out_features, 4) for layer, shape in zip(layers, b_shapes.values(), strict=True))
    assert sum(1 for n, _ in model.named_parameters() if "lora_A" in n) == 1


def test_per_module_sharing_gives_one_A_per_module_type():
    model = aslora.apply_adapter(tiny_bert(), aslora.ShareLoRAConfig(r=4))
    assert sorted(aslora.find_pool(model).lora_A.keys()) == ["query", "value"]
    counts = aslora.count_parameters(model)
    assert counts.num_A == 2 and counts.num_distinct_B == 8


@pytest.mark.parametrize("arch", sorted(MODEL_BUILDERS))
@pytest.mark.parametrize(
    "config",
    [aslora.ASLoRAConfig(r=4), aslora.ShareLoRAConfig(r=4), aslora.TiedLoRAConfig(r=4)],
    ids=["aslora", "sharelora", "tiedlora"],
)
def test_delta_w_is_zero_at_init(arch, config, input_ids):
    build, targets = MODEL_BUILDERS[arch]
    base = build()
    expected = base(input_ids).logits
    config = type(config)(r=4, target_modules=targets)
    model = aslora.apply_adapter(copy.deepcopy(base), config)
    torch.testing.assert_close(model(input_ids).logits, expected, rtol=0, atol=0)


def test_base_frozen_adapter_and_head_trainable():
    model = aslora.apply_adapter(tiny_bert(), aslora.ASLoRAConfig(r=4))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n in trainable if n.startswith((f"{POOL}.", "classifier."))}
    assert "classifier.weight" in trainable and f"{POOL}.lora_A.global" in trainable
    assert not model.bert.encoder.layer[0].attention.self.query.base_layer.weight.requires_grad


@pytest.mark.parametrize("arch", ["bert", "llama"])
def test_matches_peft_lora_with_same_factors(arch, input_ids):
    """Outputs and gradients equal PEFT's LoRA given the same A (copied per layer), B and scaling."""
    build, targets = MODEL_BUILDERS[arch]
    base = build()
    ours = aslora.apply_adapter(copy.deepcopy(base), aslora.ShareLoRAConfig(r=4, lora_alpha=8, target_modules=targets))
    randomise_adapter(ours)
    theirs = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(r=4, lora_alpha=8, target_modules=targets))
    pool = aslora.find_pool(ours)
    with torch.no_grad():
        for name, module in theirs.base_model.model.named_modules():
            if isinstance(module, peft.tuners.lora.LoraLayer):
                layer = ours.get_submodule(name)
                a, b = layer.factors()
                module.lora_A["default"].weight.copy_(a)
                module.lora_B["default"].weight.copy_(b)
    out_ours, out_theirs = ours(input_ids).logits, theirs(input_ids).logits
    torch.testing.assert_close(out_ours, out_theirs, rtol=1e-5, atol=1e-6)
    out_ours.square().sum().backward()
    out_theirs.square().sum().backward()
    peft_layers = {
        n: m for n, m in theirs.base_model.model.named_modules() if isinstance(m, peft.tuners.lora.LoraLayer)
    }
    for module_type in pool.lora_A.keys():
        grad_sum = sum(m.lora_A["default"].weight.grad for n, m in peft_layers.items() if n.endswith(module_type))
        # a shared A receives the sum of the gradients PEFT's per-layer copies receive
        torch.testing.assert_close(pool.lora_A[module_type].grad, grad_sum, rtol=1e-4, atol=1e-6)
    for name, m in peft_layers.items():
        layer = ours.get_submodule(name)
        slot = layer.slot["default"]
        torch.testing.assert_close(pool.lora_B[slot.key].grad, m.lora_B["default"].weight.grad, rtol=1e-4, atol=1e-6)


def test_global_A_spans_q_and_v_of_different_output_widths():
    """Llama GQA: q is 32→32, v is 32→16; both read width 32, so one A serves both."""
    model = aslora.apply_adapter(tiny_llama_classifier(), aslora.ASLoRAConfig(r=4, target_modules=["q_proj", "v_proj"]))
    pool = aslora.find_pool(model)
    assert list(pool.lora_A.keys()) == ["global"]
    assert {k: tuple(b.shape) for k, b in pool.lora_B.items()} == {
        **{f"q_proj_{d}": (32, 4) for d in range(3)},
        **{f"v_proj_{d}": (16, 4) for d in range(3)},
    }


def test_tied_lora_shares_A_and_B_with_per_layer_vectors(input_ids):
    model = aslora.apply_adapter(tiny_bert(), aslora.TiedLoRAConfig(r=4))
    pool = aslora.find_pool(model)
    assert {k: tuple(b.shape) for k, b in pool.lora_B.items()} == {"query": (32, 4), "value": (32, 4)}
    assert len(pool.lora_u) == len(pool.lora_v) == 8
    randomise_adapter(model)
    model(input_ids).logits.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in pool.lora_u.values())


def test_adapting_twice_is_refused():
    model = aslora.apply_adapter(tiny_bert(), aslora.ASLoRAConfig(r=4))
    with pytest.raises(ValueError, match="already has an adapter named 'default'"):
        aslora.apply_adapter(model, aslora.ASLoRAConfig(r=4))
