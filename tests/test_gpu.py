"""On a CUDA device: ASLoRA's layers, ties and bf16 autocast match the CPU run (skipped without a GPU)."""

from __future__ import annotations

import copy

import pytest
import torch

import aslora
from tests.conftest import randomise_adapter, tiny_bert

pytestmark = pytest.mark.gpu


def _adapted():
    torch.manual_seed(0)
    model = aslora.apply_adapter(
        tiny_bert(),
        aslora.ASLoRAConfig(
            r=4, target_modules=["query", "value"], merge_start_step=0, merge_interval_steps=1, max_merges=2
        ),
    )
    randomise_adapter(model)
    return model.eval()


def test_forward_backward_and_ties_on_cuda_match_cpu(input_ids):
    cpu = _adapted()
    gpu = copy.deepcopy(cpu).cuda()
    for model, ids in ((cpu, input_ids), (gpu, input_ids.cuda())):
        model.train()
        model(input_ids=ids).logits.sum().backward()
        controller = aslora.MergeController(model, total_steps=2)
        for t in (1, 2):
            controller.step(t)
    assert aslora.find_pool(gpu).sharing_map() == aslora.find_pool(cpu).sharing_map()
    for (name, a), (_, b) in zip(cpu.named_parameters(), gpu.named_parameters(), strict=True):
        if a.grad is not None:
            torch.testing.assert_close(b.grad.cpu(), a.grad, rtol=1e-4, atol=1e-5, msg=name)
    with torch.no_grad():
        torch.testing.assert_close(
            gpu.eval()(input_ids=input_ids.cuda()).logits.cpu(),
            cpu.eval()(input_ids=input_ids).logits,
            rtol=1e-4,
            atol=1e-5,
        )


def test_bf16_autocast_keeps_the_adapter_s_update_and_trains_it_in_fp32(input_ids):
    """Under bf16 autocast each adapted layer adds the fp32 update ``(α/r)·B·A·x`` (to bf16's
    precision), and the adapter's gradients arrive in fp32 and finite. (A check of parameter dtypes
    alone could not fail: autocast never changes a parameter's dtype.)"""
    from aslora.adapters.layers import SharedLoRALinear

    model = _adapted().cuda()
    layer = next(m for m in model.modules() if isinstance(m, SharedLoRALinear))
    x = torch.randn(3, 9, layer.in_features, device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    with torch.no_grad():
        update_fp32 = layer(x) - layer.base_layer(x)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            update_bf16 = layer(x).float() - layer.base_layer(x).float()
    assert update_fp32.abs().max() > 0.1  # there is an update to keep
    torch.testing.assert_close(update_bf16, update_fp32, rtol=0.03, atol=0.03)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        model(input_ids=input_ids.cuda()).logits.float().sum().backward()
    grads = {name: p.grad for name, p in aslora.find_pool(model).named_parameters() if p.grad is not None}
    assert grads and all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads.values())
    assert any(g.abs().sum() > 0 for name, g in grads.items() if "lora_A" in name)
