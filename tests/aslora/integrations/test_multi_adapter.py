"""Several ASLoRA adapters on one model, as PEFT users keep them: each its own shared A, B's,
layer→B map, running means and ties; saved, loaded side by side, switched and deleted by name."""

from __future__ import annotations

import copy
import dataclasses

import peft
import pytest
import torch

import aslora
from tests.conftest import tiny_llama_lm

STEPS = 4


def _config(max_merges: int) -> aslora.ASLoRAConfig:
    return aslora.ASLoRAConfig(
        r=4,
        target_modules=["q_proj", "v_proj"],
        merge_start_step=0,
        merge_interval_steps=1,
        max_merges=max_merges,
        merge_candidates="all",
    )


def _train(model: torch.nn.Module, input_ids: torch.Tensor, seed: int, adapter_name: str | None = None) -> None:
    """A few steps on random targets, ties on schedule (one controller per adapter)."""
    generator = torch.Generator().manual_seed(seed)
    controller = aslora.MergeController(model, total_steps=STEPS, adapter_name=adapter_name)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-2)
    for t in range(1, STEPS + 1):
        labels = torch.randint(0, 64, input_ids.shape, generator=generator)
        model(input_ids=input_ids, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        controller.step(t)


def test_two_adapters_with_their_own_ties_round_trip_switch_and_delete(tmp_path, input_ids):
    base = tiny_llama_lm()
    reference = {}
    for name, seed, ties in (("a", 1, 1), ("b", 2, 2)):
        torch.manual_seed(seed)
        model = peft.get_peft_model(copy.deepcopy(base), _config(ties))
        _train(model, input_ids, seed)
        model.eval()
        pool = aslora.find_pool(model)
        assert len(pool.merge_history) == 2 * ties
        reference[name] = (model(input_ids=input_ids).logits.detach(), pool.sharing_map(), pool.merge_history)
        model.save_pretrained(str(tmp_path / name))
    assert reference["a"][1] != reference["b"][1]  # different ties: different layer→B maps

    both = peft.PeftModel.from_pretrained(copy.deepcopy(base), str(tmp_path / "a"), adapter_name="a")
    both.load_adapter(str(tmp_path / "b"), adapter_name="b")
    both.eval()
    assert sorted(both.peft_config) == ["a", "b"]
    for name in ("b", "a", "b"):
        both.set_adapter(name)
        assert torch.equal(both(input_ids=input_ids).logits, reference[name][0]), name
        pool = aslora.find_pool(both, name)
        assert (pool.sharing_map(), pool.merge_history) == reference[name][1:]
    with both.disable_adapter():
        assert torch.equal(both(input_ids=input_ids).logits, base(input_ids=input_ids).logits)
    status = both.get_model_status()
    assert status.available_adapters == ["a", "b"] and status.active_adapters == ["b"]

    both.delete_adapter("b")
    assert both.active_adapters == ["a"] and list(aslora.integrations.peft.find_pools(both).aslora_pool) == ["a"]
    assert torch.equal(both(input_ids=input_ids).logits, reference["a"][0])
    assert not any(".aslora_pool.b." in key for key in both.state_dict())


def test_each_adapter_trains_and_ties_on_its_own(input_ids):
    torch.manual_seed(0)
    model = peft.get_peft_model(tiny_llama_lm(), _config(1))
    model.add_adapter("other", _config(2))
    with pytest.raises(ValueError, match=r"several adapters \['default', 'other'\]"):
        aslora.MergeController(model, total_steps=STEPS)
    model.set_adapter("other")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".aslora_pool.other." in n for n in trainable)  # only the active adapter trains
    default = {k: v.clone() for k, v in aslora.find_pool(model, "default").state_dict().items()}
    _train(model, input_ids, seed=3, adapter_name="other")
    assert len(aslora.find_pool(model, "other").merge_history) == 4
    for key, value in aslora.find_pool(model, "default").state_dict().items():
        assert torch.equal(value, default[key]), key  # the inactive adapter neither trained nor tied


def test_merge_adapter_is_exact_and_a_tie_while_merged_is_refused(input_ids):
    torch.manual_seed(0)  # random B's (init_weights=False): ΔW ≠ 0 before any tie
    model = peft.get_peft_model(tiny_llama_lm(), dataclasses.replace(_config(1), init_weights=False)).eval()
    expected = model(input_ids=input_ids).logits.detach()
    weight = model.base_model.model.model.layers[0].self_attn.q_proj.base_layer.weight.clone()
    model.merge_adapter()
    assert not torch.equal(model.base_model.model.model.layers[0].self_attn.q_proj.base_layer.weight, weight)
    torch.testing.assert_close(model(input_ids=input_ids).logits, expected, rtol=1e-5, atol=1e-5)
    controller = aslora.MergeController(model, total_steps=2 * STEPS)
    with pytest.raises(ValueError, match="merged into the base weights"):
        controller.step(1)  # the first merge event
    model.unmerge_adapter()
    torch.testing.assert_close(
        model.base_model.model.model.layers[0].self_attn.q_proj.base_layer.weight, weight, rtol=0, atol=1e-6
    )
    torch.testing.assert_close(model(input_ids=input_ids).logits, expected, rtol=1e-5, atol=1e-6)  # W ± ΔW rounds


def test_export_peft_lora_of_one_of_two_adapters_gives_its_logits_in_peft(tmp_path, input_ids):
    """Our exact LoRA export (PEFT's convert_to_lora approximates by SVD and refuses our layers)."""
    base = tiny_llama_lm()
    torch.manual_seed(0)
    model = peft.get_peft_model(copy.deepcopy(base), dataclasses.replace(_config(1), init_weights=False))
    model.add_adapter("other", dataclasses.replace(_config(2), init_weights=False))
    model.set_adapter("other")
    _train(model, input_ids, seed=4, adapter_name="other")
    model.eval()
    expected = model(input_ids=input_ids).logits
    aslora.export_peft_lora(model, tmp_path, adapter_name="other")
    lora = peft.PeftModel.from_pretrained(copy.deepcopy(base), str(tmp_path)).eval()
    assert isinstance(lora.peft_config["default"], peft.LoraConfig)
    torch.testing.assert_close(lora(input_ids=input_ids).logits, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(TypeError, match="do not support LoRA conversion"):
        peft.convert_to_lora(model, rank=4, adapter_name="other")


def test_the_trainer_callback_runs_every_training_adapter_with_its_own_ties():
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from aslora.integrations.trainer import ASLoRACallback

    model = peft.get_peft_model(tiny_llama_lm(), _config(1), adapter_name="a")
    model.add_adapter("b", _config(2))
    model.add_adapter("frozen", _config(1))
    model.base_model.set_adapter(["a", "b"])  # both train; "frozen" does not
    callback, state = ASLoRACallback(), TrainerState(max_steps=STEPS)
    args, control = TrainingArguments(output_dir="unused", report_to=[]), TrainerControl()
    callback.on_train_begin(args, state, control, model=model)
    assert sorted(callback.controllers) == ["a", "b"]
    for t in range(1, STEPS + 1):
        state.global_step = t
        callback.on_step_end(args, state, control)
    ties = {name: len(aslora.find_pool(model, name).merge_history) for name in ("a", "b", "frozen")}
    assert ties == {"a": 2, "b": 4, "frozen": 0}  # 1 and 2 per module type; the frozen adapter never ties
    logged = {k for entry in state.log_history for k in entry}
    assert {"aslora/a/num_B", "aslora/b/num_B"} <= logged
    with pytest.raises(ValueError, match=r"adapters \['nope'\] are not ASLoRA adapters"):
        ASLoRACallback(adapter_names=["nope"]).on_train_begin(args, state, control, model=model)
