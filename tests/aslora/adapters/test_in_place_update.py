"""The adapted layer's in-place accumulation (``SharedLoRALinear._forward_in_place``): the same
numbers as the general path, and the general path wherever writing into the base output could be
seen (a hook on the base layer, autocast, a base layer that is not a plain ``nn.Linear``)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import aslora
from aslora.adapters.layers import SharedLoRALinear
from tests.conftest import randomise_adapter, tie_lowest_upward, tiny_bert


def _adapted(config: object, ties: int = 0) -> nn.Module:
    model = aslora.apply_adapter(tiny_bert(), config)
    randomise_adapter(model)
    if ties:
        tie_lowest_upward(model, ties)
    return model


def _layers(model: nn.Module) -> list[SharedLoRALinear]:
    return [m for m in model.modules() if isinstance(m, SharedLoRALinear)]


def _force_general_path(model: nn.Module) -> None:
    """A forward hook that returns nothing on every base layer: the output is unchanged, but the
    layer may no longer write into it (a hook may keep it), so it takes the general path."""
    for layer in _layers(model):
        layer.base_layer.register_forward_hook(lambda module, args, output: None)


def _grads(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


CONFIGS = {
    "aslora tied": (lambda: aslora.ASLoRAConfig(r=4, lora_alpha=8, target_modules=["query", "value"]), 2),
    "tied-lora": (lambda: aslora.TiedLoRAConfig(r=4, lora_alpha=8, target_modules=["query", "value"]), 0),
    "sharelora dropout": (
        lambda: aslora.ShareLoRAConfig(r=4, lora_alpha=8, lora_dropout=0.1, target_modules=["query", "value"]),
        0,
    ),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_in_place_matches_the_general_path_in_outputs_and_gradients(name, input_ids):
    make, ties = CONFIGS[name]
    fast = _adapted(make(), ties)
    general = copy.deepcopy(fast)
    _force_general_path(general)
    x = torch.randn(2, 5, 32)
    assert all(layer._adds_in_place(x) for layer in _layers(fast))
    assert not any(layer._adds_in_place(x) for layer in _layers(general))
    outputs = []
    for model in (fast, general):
        torch.manual_seed(3)  # the same dropout masks: one draw of the same shape in the same order
        out = model(input_ids).logits
        out.square().sum().backward()
        outputs.append(out)
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-5, atol=1e-6)
    g_fast, g_general = _grads(fast), _grads(general)
    assert g_fast.keys() == g_general.keys() and any("lora_B" in k for k in g_fast)
    for key in g_fast:
        torch.testing.assert_close(g_fast[key], g_general[key], rtol=1e-4, atol=1e-6, msg=key)


def test_a_hook_on_the_base_layer_sees_the_frozen_projection_alone():
    model = _adapted(aslora.ASLoRAConfig(r=4, lora_alpha=8, target_modules=["query", "value"]))
    layer = _layers(model)[0]
    kept = []
    layer.base_layer.register_forward_hook(lambda module, args, output: kept.append((args[0], output)))
    x = torch.randn(2, 5, 32)
    y = layer(x)
    (seen_x, seen_out) = kept[0]
    assert seen_x.shape == x.shape  # the hook sees the input as the model gave it, not flattened
    torch.testing.assert_close(seen_out, layer.base_layer(x))  # W x, with no update written into it
    assert not torch.allclose(y, seen_out)  # and the layer's output does carry the update


def test_under_autocast_the_update_is_added_out_of_place(input_ids):
    """In-place ops are not autocast: a bf16 W x meets an fp32 B, so the layer keeps to the general
    path there, and a bf16 autocast forward and backward match the fp32 one to bf16 precision."""
    model = _adapted(aslora.ASLoRAConfig(r=4, lora_alpha=8, target_modules=["query", "value"]), 1)
    reference = model(input_ids).logits
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not any(layer._adds_in_place(torch.zeros(2, 5, 32)) for layer in _layers(model))
        out = model(input_ids).logits
    out.float().square().sum().backward()
    torch.testing.assert_close(out.float(), reference, rtol=0.05, atol=0.05)
    assert all(p.grad is not None for p in aslora.find_pool(model).lora_A.values())


def test_a_base_layer_that_is_not_a_plain_linear_keeps_the_general_path():
    class Logged(nn.Linear):  # a subclass, as bitsandbytes' quantised linears are
        pass

    model = _adapted(aslora.ASLoRAConfig(r=4, lora_alpha=8, target_modules=["query", "value"]))
    layer = _layers(model)[0]
    plain = layer.base_layer
    logged = Logged(plain.in_features, plain.out_features)
    logged.load_state_dict(plain.state_dict())
    x = torch.randn(2, 5, 32)
    expected = layer(x)
    layer.base_layer = logged
    assert not layer._adds_in_place(x)
    torch.testing.assert_close(layer(x), expected)


def _graph_nodes(tensor: torch.Tensor) -> set[str]:
    seen, todo, names = set(), [tensor.grad_fn], set()
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        todo.extend(next_node for next_node, _ in node.next_functions)
    return names


def test_the_update_is_written_into_the_base_output_itself_not_a_view_of_it():
    """``addmm_`` on a view of ``W x`` would make autograd route the base layer's gradient through
    CopySlices (a zero-filled tokens × out buffer and a copy per call): it must act on the tensor."""
    for name in sorted(CONFIGS):
        make, ties = CONFIGS[name]
        layer = _layers(_adapted(make(), ties))[0]
        x = torch.randn(2, 5, 32, requires_grad=True)
        nodes = _graph_nodes(layer(x))
        assert "AddmmBackward0" in nodes, (name, nodes)  # the in-place addmm_ on W x
        assert "CopySlices" not in nodes and "AsStridedBackward0" not in nodes, (name, nodes)
