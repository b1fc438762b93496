"""aslora: a reference reproduction of ASLoRA (Hu et al., arXiv 2412.10135) and its baselines.

    config = aslora.ASLoRAConfig(r=8, lora_alpha=16, target_modules=["query", "value"])
    model = aslora.apply_adapter(model, config)               # or peft.get_peft_model(model, config)
    controller = aslora.MergeController(model, total_steps)   # call controller.step(t) after each optimizer step
    counts = aslora.count_parameters(model)

The method: ``adapters`` (configs, the merge schedule, the shared pool, layers, merging), ``params`` (counting),
``export`` (save / load / PEFT LoRA export), ``integrations`` (PEFT, HF Trainer, FSDP2). Our
experiment harness (data, loop, runs, reports) lives apart, in ``aslora.harness``.
"""

from aslora import integrations
from aslora.adapters.config import (
    ASLoRAConfig,
    FullFinetuneConfig,
    SharedLoRAConfig,
    ShareLoRAConfig,
    TiedLoRAConfig,
)
from aslora.adapters.dispatch import apply_adapter
from aslora.adapters.fold import merge_into_base, remove_adapter
from aslora.adapters.merging import MergeController, MergeEvent
from aslora.adapters.pools import find_pool
from aslora.adapters.schedule import MergeSchedule
from aslora.export import export_peft_lora, init_lora_from, load_adapter, save_adapter
from aslora.integrations.peft import register as _register_with_peft
from aslora.params import ParameterCounts, count_parameters

_register_with_peft()

__all__ = [
    "ASLoRAConfig",
    "FullFinetuneConfig",
    "MergeController",
    "MergeEvent",
    "MergeSchedule",
    "ParameterCounts",
    "ShareLoRAConfig",
    "SharedLoRAConfig",
    "TiedLoRAConfig",
    "apply_adapter",
    "count_parameters",
    "export_peft_lora",
    "init_lora_from",
    "find_pool",
    "load_adapter",
    "integrations",
    "merge_into_base",
    "remove_adapter",
    "save_adapter",
]
__version__ = "0.1.0"
