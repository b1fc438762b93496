"""The merge state survives dtype casts exactly, and a retired B stops: its value and running mean
never change after its tie, whatever the optimizer, so a saved adapter reloads to the live state."""

from __future__ import annotations

import pytest
import torch

import aslora
from aslora.adapters.pools import find_pool
from tests.conftest import tiny_bert

CASTS = {
    "to(bfloat16)": lambda m: m.to(torch.bfloat16),
    "half()": lambda m: m.half(),
    "bfloat16()": lambda m: m.bfloat16(),
    "double()": lambda m: m.double(),
    "to(float64)": lambda m: m.to(dtype=torch.float64),
}


def _model(**overrides):
    config = aslora.ASLoRAConfig(r=4, merge_start_step=2, merge_interval_steps=2, max_merges=2, **overrides)
    return aslora.apply_adapter(tiny_bert(), config)


@pytest.mark.parametrize("cast", CASTS, ids=list(CASTS))
def test_a_cast_leaves_the_merge_state_in_its_own_dtypes(cast):
    model = _model()
    pool = find_pool(model)
    CASTS[cast](model)
    factor_dtype = pool.lora_A[next(iter(pool.lora_A.keys()))].dtype
    assert factor_dtype != torch.float32  # the factors cast, as PEFT LoRA's do
    assert all(m.dtype == torch.float32 for m in pool.running_mean_B.values())
    assert pool.merge_log.dtype == torch.float64
    assert pool.b_map.dtype == pool.num_merges.dtype == pool.num_mean_updates.dtype == torch.long
    controller = aslora.MergeController(model, total_steps=10)
    for t in range(1, 5):  # the means update (lerp_ of a float32 mean toward a cast B), ties happen
        for b in pool.lora_B.values():
            b.data.add_(torch.randn_like(b) * 0.1)
        controller.step(t)
    assert [e["step"] for e in pool.merge_history] == [4, 4]


@pytest.mark.parametrize("cast", ["to(bfloat16)", "half()"])
def test_a_tie_past_step_65504_is_recorded_exactly_and_saves(cast, tmp_path):
    model = _model()
    CASTS[cast](model)
    pool = find_pool(model)
    step = 1_281 if cast == "to(bfloat16)" else 70_001  # bf16 rounds 1,281 to 1,280; fp16 has no 70,001
    pool.tie(bank="query", lower=0, upper=1, update_ratio=0.0, step=step, distance=0.5)
    assert pool.merge_history[0]["step"] == step
    aslora.save_adapter(model, tmp_path / "adapter")
    loaded = aslora.load_adapter(tiny_bert(), tmp_path / "adapter")
    assert find_pool(loaded).merge_history[0]["step"] == step


def test_a_cast_during_training_keeps_the_means_it_had():
    model = _model()
    pool = find_pool(model)
    controller = aslora.MergeController(model, total_steps=10)
    for b in pool.lora_B.values():
        b.data.add_(torch.randn_like(b) * 1e-3)  # an update bf16 could not hold on top of a mean
    controller.step(1)
    before = {k: v.clone() for k, v in pool.running_mean_B.items()}
    model.to(torch.bfloat16)
    assert all(torch.equal(before[k], v) for k, v in pool.running_mean_B.items())


def _train(model, optimizer_name: str, steps: int, input_ids) -> dict[str, list[torch.Tensor]]:
    """Train with ``optimizer_name``; record every B and running mean after each step."""
    from transformers.optimization import Adafactor

    torch.manual_seed(0)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = {
        "adamw": lambda: torch.optim.AdamW(params, lr=1e-2, weight_decay=0.1),
        "adafactor": lambda: Adafactor(params, lr=1e-2, relative_step=False, scale_parameter=False, weight_decay=0.1),
        "muon": lambda: torch.optim.Muon([p for p in params if p.dim() == 2], lr=1e-2, weight_decay=0.1),
    }[optimizer_name]()
    controller = aslora.MergeController(model, total_steps=steps)
    pool = find_pool(model)
    history = []
    labels = torch.tensor([0, 1, 1])
    for t in range(1, steps + 1):
        model(input_ids, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        controller.step(t)
        history.append(
            {
                name: (pool.lora_B[name].detach().clone(), pool.running_mean_B[name].clone())
                for name in pool.lora_B.keys()
            }
        )
    return history


@pytest.mark.parametrize("optimizer_name", ["adamw", "adafactor", "muon"])
def test_a_retired_b_stops_at_its_tie_whatever_the_optimizer(optimizer_name, input_ids):
    if optimizer_name == "muon" and not hasattr(torch.optim, "Muon"):
        pytest.skip("this torch has no torch.optim.Muon")
    model = _model()
    history = _train(model, optimizer_name, 8, input_ids)
    pool = find_pool(model)
    retired = pool.retired_B_names()
    assert len(retired) == 4  # two ties per group
    for name in retired:
        tie_step = next(e["step"] for e in pool.merge_history if e["retired"] == name)
        after = [h[name] for h in history[tie_step - 1 :]]
        assert all(torch.count_nonzero(b) == 0 and torch.count_nonzero(m) == 0 for b, m in after), name
    live = pool.live_B_names()
    assert all(torch.count_nonzero(history[-1][name][0]) > 0 for name in live)  # the live ones trained


def test_a_peft_save_and_load_gives_the_live_run_s_full_state_dict(input_ids, tmp_path):
    import peft

    config = aslora.ASLoRAConfig(
        r=4, merge_start_step=2, merge_interval_steps=2, max_merges=2, target_modules=["query", "value"]
    )
    torch.manual_seed(0)
    model = peft.get_peft_model(tiny_bert(), config)
    _train(model, "adamw", 6, input_ids)
    model.save_pretrained(tmp_path / "peft")
    torch.manual_seed(0)
    loaded = peft.PeftModel.from_pretrained(tiny_bert(), tmp_path / "peft")
    live = {k: v for k, v in model.state_dict().items() if "aslora_pool" in k}
    again = {k: v for k, v in loaded.state_dict().items() if "aslora_pool" in k}
    assert live.keys() == again.keys()
    different = [k for k in live if not torch.equal(live[k].cpu(), again[k].cpu())]
    assert different == []
