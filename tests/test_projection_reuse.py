"""The optimised path (x·Aᵀ once per input, issue 6) equals the plain per-module path."""

from __future__ import annotations

import copy
import dataclasses
from unittest import mock

import pytest
import torch

import aslora
from aslora.adapters import pool as pool_module
from conftest import MODEL_BUILDERS, randomise_adapter


def _pair(arch, config_cls=aslora.ASLoRAConfig, **kwargs):
    build, targets = MODEL_BUILDERS[arch]
    fast = aslora.apply_adapter(build(), config_cls(r=4, target_modules=targets, **kwargs))
    randomise_adapter(fast)
    plain = copy.deepcopy(fast)
    plain.aslora_pool.config = dataclasses.replace(plain.aslora_pool.config, reuse_input_projection=False)
    return fast, plain


@pytest.mark.parametrize("arch", sorted(MODEL_BUILDERS))
@pytest.mark.parametrize("config_cls", [aslora.ASLoRAConfig, aslora.TiedLoRAConfig], ids=["aslora", "tiedlora"])
def test_reuse_gives_the_same_outputs_and_gradients(arch, config_cls, input_ids):
    fast, plain = _pair(arch, config_cls, a_sharing="global")
    fast.train(), plain.train()
    out_fast, out_plain = _forward(fast, input_ids), _forward(plain, input_ids)
    torch.testing.assert_close(out_fast, out_plain, rtol=1e-6, atol=1e-6)
    out_fast.square().sum().backward()
    out_plain.square().sum().backward()
    grads_plain = {n: p.grad for n, p in plain.named_parameters() if p.requires_grad}
    for name, p in fast.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(p.grad, grads_plain[name], rtol=1e-5, atol=1e-6, msg=name)


def _forward(model, input_ids):
    torch.manual_seed(0)  # the base model's own dropout draws the same masks in both models
    return model(input_ids).logits


def _count_projections(model, input_ids):
    """How many times ``x·Aᵀ`` is computed (F.linear calls whose weight is a shared A)."""
    a_matrices = set(map(id, model.aslora_pool.lora_A.values()))
    with mock.patch.object(pool_module.F, "linear", wraps=pool_module.F.linear) as linear:
        model(input_ids)
    return sum(1 for call in linear.call_args_list if id(call.args[1]) in a_matrices)


def test_reuse_halves_the_A_projections_for_q_and_v(input_ids):
    fast, plain = _pair("bert")
    layers = fast.config.num_hidden_layers
    assert _count_projections(plain, input_ids) == 2 * layers
    assert _count_projections(fast, input_ids) == layers


def test_no_stale_product_after_an_optimizer_step(input_ids):
    fast, plain = _pair("bert")
    for model in (fast, plain):
        model.train()
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
        _forward(model, input_ids).square().sum().backward()
        optimizer.step()  # changes A in place
    torch.testing.assert_close(_forward(fast, input_ids), _forward(plain, input_ids), rtol=1e-6, atol=1e-6)
    with torch.no_grad():  # grad mode is part of the key, too
        torch.testing.assert_close(_forward(fast, input_ids), _forward(plain, input_ids), rtol=1e-6, atol=1e-6)


def test_dropout_in_training_disables_reuse(input_ids):
    fast, _ = _pair("bert", lora_dropout=0.1)
    fast.train()
    assert _count_projections(fast, input_ids) == 2 * fast.config.num_hidden_layers
    fast.eval()  # dropout is the identity in eval mode, so the product is shared again
    assert _count_projections(fast, input_ids) == fast.config.num_hidden_layers


def test_model_can_be_copied_and_pickled_after_a_forward(input_ids, tmp_path):
    fast, _ = _pair("bert")
    fast.train()
    expected = _forward(fast, input_ids)  # leaves a graph node in the cache
    clone = copy.deepcopy(fast)
    torch.save(fast, tmp_path / "model.pt")
    reloaded = torch.load(tmp_path / "model.pt", weights_only=False)
    for model in (clone, reloaded):
        torch.testing.assert_close(_forward(model, input_ids), expected, rtol=0, atol=0)
