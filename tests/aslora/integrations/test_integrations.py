"""ASLoRA in the stacks researchers use (issue 12): PEFT's get_peft_model / save / load / merge,
and the HF Trainer callback (Algorithm 1's t under gradient accumulation, impossible schedules,
checkpoints of a model adapted without PEFT)."""

from __future__ import annotations

import json

import peft
import pytest
import torch
from safetensors.torch import load_file
from transformers import Trainer, TrainingArguments

import aslora
from aslora.integrations.trainer import ASLoRACallback
from tests.conftest import MODEL_BUILDERS, VOCAB

FAST = dict(merge_start_step=1, merge_interval_steps=1, max_merges=2)


def _train(model, input_ids, steps, total_steps=10):
    controller = aslora.MergeController(model, total_steps=total_steps)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for t in range(1, steps + 1):
        model(input_ids=input_ids, labels=torch.tensor([0, 1, 1])).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        controller.step(t)


@pytest.mark.parametrize("arch", ["bert", "llama"])
def test_peft_get_train_save_load_merge_round_trip(arch, input_ids, tmp_path, capsys):
    build, targets = MODEL_BUILDERS[arch]
    model = peft.get_peft_model(build(), aslora.ASLoRAConfig(r=4, target_modules=targets, task_type="SEQ_CLS", **FAST))
    assert isinstance(model, peft.PeftModel)
    _train(model, input_ids, steps=4)
    pool = aslora.find_pool(model)
    assert len(pool.merge_history) == 4  # 2 ties per module type happened
    counts = aslora.count_parameters(model)
    assert counts.head > 0 and counts.adapter == 4 * 32 + counts.num_distinct_B * 4 * (32 if arch == "bert" else 24)

    # print_trainable_parameters counts live parameters: retired B rows are not part of the adapter
    assert model.get_nb_trainable_parameters()[0] == counts.trainable
    model.print_trainable_parameters()
    assert f"trainable params: {counts.trainable:,}" in capsys.readouterr().out

    model.eval()
    expected = model(input_ids=input_ids).logits
    model.save_pretrained(str(tmp_path))
    assert json.loads((tmp_path / "adapter_config.json").read_text())["peft_type"] == "ASLORA"
    saved = load_file(tmp_path / "adapter_model.safetensors")
    in_file = sum(v.numel() for k, v in saved.items() if ".lora_A." in k or ".lora_B." in k)
    assert in_file == counts.adapter  # live rows only: the file is as small as the count

    loaded = peft.PeftModel.from_pretrained(build(), str(tmp_path)).eval()
    assert torch.equal(loaded(input_ids=input_ids).logits, expected)
    loaded_pool = aslora.find_pool(loaded)
    assert loaded_pool.sharing_map() == pool.sharing_map() and loaded_pool.merge_history == pool.merge_history
    for name in pool.live_B_names():
        assert torch.equal(loaded_pool.running_mean_B[name], pool.running_mean_B[name])
    assert aslora.count_parameters(loaded).trainable == 0  # PEFT loads for inference unless told otherwise
    trainable = peft.PeftModel.from_pretrained(build(), str(tmp_path), is_trainable=True)
    assert aslora.count_parameters(trainable) == counts

    with loaded.disable_adapter():
        torch.testing.assert_close(loaded(input_ids=input_ids).logits, build()(input_ids=input_ids).logits)
    merged = loaded.merge_and_unload()
    assert type(merged) is type(build()) and aslora.find_pool(merged) is None
    torch.testing.assert_close(merged(input_ids=input_ids).logits, expected, rtol=1e-5, atol=1e-5)


def test_peft_saved_adapter_is_not_mistaken_for_ours_and_ours_not_for_peft(input_ids, tmp_path):
    build, targets = MODEL_BUILDERS["bert"]
    ours = aslora.apply_adapter(build(), aslora.ASLoRAConfig(r=4, **FAST))
    aslora.save_adapter(ours, tmp_path / "ours")
    meta = json.loads((tmp_path / "ours" / "aslora_config.json").read_text())
    assert meta["format"] == "aslora-adapter" and not (tmp_path / "ours" / "adapter_config.json").exists()
    with pytest.raises(ValueError, match="Can't find 'adapter_config.json'|not found|does not appear"):
        peft.PeftModel.from_pretrained(build(), str(tmp_path / "ours"))


def _dataset(n=16):
    generator = torch.Generator().manual_seed(0)
    return [{"input_ids": torch.randint(2, VOCAB, (9,), generator=generator), "labels": i % 2} for i in range(n)]


def _trainer(model, tmp_path, max_steps, gradient_accumulation_steps=1, **kwargs):
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=max_steps,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=gradient_accumulation_steps,
        learning_rate=1e-3,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        logging_strategy="no",
        **({"save_strategy": "no"} | kwargs),
    )
    trainer = Trainer(model=model, args=args, train_dataset=_dataset())
    callback = ASLoRACallback(trainer)
    trainer.add_callback(callback)
    return trainer, callback


def _first_merge(tmp_path, start, interval, gradient_accumulation_steps):
    build, targets = MODEL_BUILDERS["bert"]
    model = peft.get_peft_model(
        build(layers=2, hidden=8),
        aslora.ASLoRAConfig(
            r=2, task_type="SEQ_CLS", merge_start_step=start, merge_interval_steps=interval, max_merges=1
        ),
    )
    forwards = []
    model.register_forward_hook(lambda *a: forwards.append(1))
    trainer, callback = _trainer(model, tmp_path, start + interval, gradient_accumulation_steps)
    trainer.train()
    first = start + interval
    assert len(forwards) == first * gradient_accumulation_steps  # t counts optimizer steps, not micro-batches
    assert [(e.step, e.group) for e in callback.events] == [(first, "query"), (first, "value")]
    logged = [{k: v for k, v in h.items() if k != "epoch"} for h in trainer.state.log_history if "aslora/num_B" in h]
    assert logged == [
        {
            "aslora/num_B": 2.0,
            "aslora/merge_distance/query": callback.events[0].distance,
            "aslora/merge_distance/value": callback.events[1].distance,
            "step": first,
        }
    ]


@pytest.mark.parametrize("gradient_accumulation_steps", [1, 2])
def test_callback_first_merge_lands_at_start_plus_interval_in_optimizer_steps(gradient_accumulation_steps, tmp_path):
    _first_merge(tmp_path, start=32, interval=24, gradient_accumulation_steps=gradient_accumulation_steps)


@pytest.mark.slow
@pytest.mark.parametrize("gradient_accumulation_steps", [1, 2])
def test_callback_first_merge_at_step_560_with_the_mrpc_recipe(gradient_accumulation_steps, tmp_path):
    """MRPC's recipe (T_s = 320, m = 240): the first tie at optimizer step 560 (1,120 micro-batches at 2)."""
    _first_merge(tmp_path, start=320, interval=240, gradient_accumulation_steps=gradient_accumulation_steps)


def test_callback_refuses_an_impossible_schedule_before_the_first_step(tmp_path):
    build, _ = MODEL_BUILDERS["bert"]
    model = aslora.apply_adapter(
        build(layers=2), aslora.ASLoRAConfig(r=2, merge_start_step=320, merge_interval_steps=240, max_merges=1)
    )
    trainer, _ = _trainer(model, tmp_path, 100)
    with pytest.raises(ValueError, match=r"total_steps=100, where 0 merge events fit. Set max_merges=0"):
        trainer.train()
    assert trainer.state.global_step == 0


def test_a_model_adapted_without_peft_checkpoints_and_resumes_in_a_trainer(tmp_path, input_ids):
    """The whole model is checkpointed (no PEFT wrapper to make it adapter-sized), but the state
    dict has fixed keys and tensors only, so saving works and resuming restores the ties."""
    build, _ = MODEL_BUILDERS["bert"]
    model = aslora.apply_adapter(build(), aslora.ASLoRAConfig(r=2, max_merges=2))
    trainer, callback = _trainer(model, tmp_path, 8, save_strategy="steps", save_steps=2)
    trainer.train()
    assert [e.step for e in callback.events] == [2, 2, 4, 4] and (tmp_path / "checkpoint-8").is_dir()
    model.save_pretrained(str(tmp_path / "saved"))  # used to fail on the pool's extra-state dict
    again = aslora.apply_adapter(build(), aslora.ASLoRAConfig(r=2, max_merges=2))
    # resume from step 2 (after the first ties, before the last) and train the 6 steps left: it ends
    # where the uninterrupted run ended — the same ties at the same steps, the same weights
    resumed, resumed_callback = _trainer(again, tmp_path / "resumed", 8)
    resumed.train(resume_from_checkpoint=str(tmp_path / "checkpoint-2"))
    assert resumed.state.global_step == 8 and [e.step for e in resumed_callback.events] == [4, 4]
    assert aslora.find_pool(again).sharing_map() == aslora.find_pool(model).sharing_map()
    assert aslora.find_pool(again).merge_history == aslora.find_pool(model).merge_history
    live = dict(model.named_parameters())
    for name, value in again.named_parameters():
        torch.testing.assert_close(value, live[name], rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("how", ["load_adapter", "from_pretrained"])
def test_transformers_adapter_api_is_refused_before_anything_loads(how, tmp_path):
    """transformers injects adapters with ``peft.inject_adapter_in_model``, which PEFT refuses for
    tuners with shared state; the base model must come out untouched."""
    from transformers import AutoModelForCausalLM

    from tests.conftest import tiny_llama_lm

    adapted = peft.get_peft_model(tiny_llama_lm(), aslora.ASLoRAConfig(r=4, target_modules=["q_proj", "v_proj"]))
    adapted.save_pretrained(str(tmp_path / "adapter"))
    base = tiny_llama_lm()
    base.save_pretrained(str(tmp_path / "base"))
    before = {k: v.clone() for k, v in base.state_dict().items()}
    on_disk = {p.name: p.read_bytes() for p in (tmp_path / "base").iterdir()}
    with pytest.raises(ValueError, match=r"ASLORA because it uses shared state.*get_peft_model"):
        if how == "load_adapter":
            base.load_adapter(str(tmp_path / "adapter"))
        else:  # an adapter directory whose config names the base model
            config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
            config["base_model_name_or_path"] = str(tmp_path / "base")
            (tmp_path / "adapter" / "adapter_config.json").write_text(json.dumps(config))
            AutoModelForCausalLM.from_pretrained(str(tmp_path / "adapter"))
    # load_adapter adapts the model it is called on: that model comes out untouched. from_pretrained
    # builds its own from the files: those come out untouched, and the base loads clean from them
    assert {p.name: p.read_bytes() for p in (tmp_path / "base").iterdir()} == on_disk
    if how == "from_pretrained":
        base = AutoModelForCausalLM.from_pretrained(str(tmp_path / "base"))
    assert aslora.find_pool(base) is None and base.state_dict().keys() == before.keys()
    assert all(torch.equal(v, before[k]) for k, v in base.state_dict().items())


@pytest.mark.parametrize("task_type", [None, "SEQ_CLS", "CAUSAL_LM", "FEATURE_EXTRACTION"])
def test_disable_adapter_gives_the_base_model_on_every_task_type(task_type, input_ids):
    from transformers import LlamaForCausalLM, LlamaForSequenceClassification, LlamaModel

    from tests.conftest import randomise_adapter, tiny_llama_config

    cls = {"SEQ_CLS": LlamaForSequenceClassification, "FEATURE_EXTRACTION": LlamaModel}.get(task_type, LlamaForCausalLM)
    torch.manual_seed(0)
    base = cls(tiny_llama_config()).eval()
    out = lambda m: m(input_ids=input_ids)[0]
    expected = out(base)
    model = peft.get_peft_model(
        base, aslora.ASLoRAConfig(r=4, target_modules=["q_proj", "v_proj"], task_type=task_type)
    ).eval()
    randomise_adapter(model)
    adapted = out(model)
    assert not torch.allclose(adapted, expected)
    with model.disable_adapter():
        assert torch.equal(out(model), expected)
        assert model.get_model_status().enabled is False
    assert torch.equal(out(model), adapted) and model.get_model_status().enabled is True


@pytest.mark.parametrize("method", ["aslora", "sharelora", "tiedlora"])
def test_unload_safe_merge_and_layer_status_on_our_tuners(method, input_ids):
    """What docs/integrations.md claims beyond PEFT's suite: ``unload`` gives back the base model
    (weights untouched, no adapter layer left), ``merge_adapter(safe_merge=True)`` refuses an adapter
    whose ΔW is not finite and leaves the base weights as they were, and ``get_layer_status`` lists
    every adapted layer with the adapter's name."""
    build, targets = MODEL_BUILDERS["bert"]
    config_class = {
        "aslora": aslora.ASLoRAConfig,
        "sharelora": aslora.ShareLoRAConfig,
        "tiedlora": aslora.TiedLoRAConfig,
    }
    base = build()
    before = {k: v.clone() for k, v in base.state_dict().items()}
    model = peft.get_peft_model(base, config_class[method](r=4, target_modules=targets, task_type="SEQ_CLS"))
    with torch.no_grad():  # B starts at zero: make ΔW non-zero, so merging changes the weights
        for name, parameter in model.named_parameters():
            if "lora_B" in name or "lora_b" in name.lower():
                parameter.normal_()

    status = [s for s in model.get_layer_status() if "classifier" not in s.name]  # the head: modules_to_save
    expected = sorted(n for n, m in build().named_modules() if n.rsplit(".", 1)[-1] in targets)
    # every adapted layer, and the pools' container (a tuner module too: it holds the shared state)
    assert sorted(s.name.removeprefix("model.") for s in status) == sorted([*expected, "shared_lora"])
    assert all(s.enabled and s.active_adapters == ["default"] == s.available_adapters for s in status)
    # the layers own no parameters (the pool does), so PEFT's per-layer requires_grad is empty;
    # get_model_status reports it for the whole adapter
    assert model.get_model_status().requires_grad == {"default": True}

    pool = aslora.find_pool(model)
    poisoned = next(n for n, p in model.named_parameters() if ("lora_B" in n) and p.requires_grad)
    with torch.no_grad():
        dict(model.named_parameters())[poisoned].fill_(float("nan"))
    weights = {k: v.clone() for k, v in model.state_dict().items() if "base_layer.weight" in k}
    with pytest.raises(ValueError, match="NaNs detected"):
        model.merge_adapter(safe_merge=True)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in weights.items())
    assert pool is not None and not any(s.merged_adapters for s in model.get_layer_status())

    unloaded = model.unload()
    assert aslora.find_pool(unloaded) is None
    assert not any(isinstance(m, peft.tuners.tuners_utils.BaseTunerLayer) for m in unloaded.modules())
    assert unloaded.state_dict().keys() == before.keys()
    assert all(torch.equal(v, before[k]) for k, v in unloaded.state_dict().items())
