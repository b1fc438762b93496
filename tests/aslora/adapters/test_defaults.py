"""One home per default: the library's schedule defaults are what ``train.py`` composes, and
``target_modules=None`` takes PEFT LoRA's per-architecture default, as PEFT's LoRA does."""

from __future__ import annotations

import peft
import pytest
import torch

import aslora
from aslora.adapters.layers import SharedLoRALinear
from tests.conftest import tiny_bert, tiny_llama_classifier


@pytest.mark.parametrize("model", ["minilm-l6", "mpnet-base", "roberta-base", "smollm2-135m"])
def test_the_hydra_adapter_config_composes_the_library_s_default_schedule(model):
    from hydra_glue import compose_run

    container, _ = compose_run([f"model={model}", "adapter=aslora"])
    params = dict(container["adapter"]["params"])
    composed = aslora.ASLoRAConfig(**{k: v for k, v in params.items() if k != "target_modules"})
    library = aslora.ASLoRAConfig(max_merges=params["max_merges"])  # nothing but the cap given
    assert composed.merge_start_fraction == library.merge_start_fraction == 0.1
    assert composed.merge_interval_fraction == pytest.approx(library.merge_interval_fraction)
    assert library.merge_interval_fraction == pytest.approx(0.6 / params["max_merges"])


def test_the_library_default_puts_the_last_tie_at_70_percent_for_any_cap():
    for cap in (1, 4, 7, 11):
        schedule = aslora.ASLoRAConfig(max_merges=cap).resolve_schedule(10_000)
        assert schedule.last_event_step == pytest.approx(7_000, abs=cap + 1)


def _adapted(model) -> list[str]:
    return sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, SharedLoRALinear)})


@pytest.mark.parametrize("config_cls", [aslora.ASLoRAConfig, aslora.ShareLoRAConfig, aslora.TiedLoRAConfig])
def test_target_modules_none_takes_peft_s_default_for_the_architecture(config_cls):
    bert = aslora.apply_adapter(tiny_bert(), config_cls(r=4, target_modules=None))
    assert _adapted(bert) == ["query", "value"]
    llama = peft.get_peft_model(tiny_llama_classifier(), config_cls(r=4, target_modules=None))
    assert _adapted(llama) == ["q_proj", "v_proj"]
    lora = peft.get_peft_model(tiny_llama_classifier(), peft.LoraConfig(r=4, target_modules=None))
    lora_targets = {
        n.rsplit(".", 1)[-1] for n, m in lora.named_modules() if hasattr(m, "lora_A") and n.endswith("proj")
    }
    assert lora_targets == set(_adapted(llama))  # the same modules PEFT's LoRA picks


def test_target_modules_none_on_an_unknown_architecture_names_what_to_set():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4))
    with pytest.raises(ValueError, match=r"model_type=None: name the modules to adapt"):
        aslora.apply_adapter(model, aslora.ASLoRAConfig(r=2, target_modules=None))
