"""Tiny random-initialised models built in code: no assets, millisecond steps."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

import pytest
import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    LlamaConfig,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
    RobertaConfig,
    RobertaForSequenceClassification,
)

import aslora

VOCAB = 97


def tiny_bert(layers: int = 4, hidden: int = 32) -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=2 * hidden,
        vocab_size=VOCAB,
        num_labels=2,
    )
    return BertForSequenceClassification(config).eval()


def tiny_roberta(layers: int = 4) -> RobertaForSequenceClassification:
    torch.manual_seed(0)
    config = RobertaConfig(
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=64,
        vocab_size=VOCAB,
        num_labels=3,
        max_position_embeddings=64,
        pad_token_id=1,
    )
    return RobertaForSequenceClassification(config).eval()


def tiny_llama_config(layers: int = 3) -> LlamaConfig:
    # q is 32→32 and v is 32→16 (grouped-query attention), like SmolLM2's 576→576 / 576→192
    return LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=VOCAB,
        pad_token_id=0,
        num_labels=2,
    )


def tiny_llama_classifier(layers: int = 3) -> LlamaForSequenceClassification:
    torch.manual_seed(0)
    return LlamaForSequenceClassification(tiny_llama_config(layers)).eval()


def tiny_llama_lm(layers: int = 3) -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(tiny_llama_config(layers)).eval()


MODEL_BUILDERS = {
    "bert": (tiny_bert, ["query", "value"]),
    "roberta": (tiny_roberta, ["query", "value"]),
    "llama": (tiny_llama_classifier, ["q_proj", "v_proj"]),
}


@pytest.fixture
def input_ids() -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.randint(2, VOCAB, (3, 9), generator=generator)


def randomise_adapter(model: torch.nn.Module, seed: int = 0) -> None:
    """Give every B a non-zero value, so ΔW ≠ 0 and comparisons are not trivially equal."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad and ("lora_" in name):
                p.copy_(torch.randn(p.shape, generator=generator) * 0.3)


def B_of(pool, name: str) -> torch.Tensor:
    """The B named ``name`` (``"query_2"``), its data, which can be written."""
    return pool.lora_B[name].data


def tie_lowest_upward(model: torch.nn.Module, merges_per_group) -> None:
    """Tie each merge group's lowest B's upward, ``merges_per_group`` times (an int, or a callable
    of the group name), through the pool's own tie. A meta-device pool (counting tests) is given
    real storage first; the base model stays on the meta device."""
    pool = aslora.find_pool(model)
    if pool.b_map.is_meta:
        pool.to_empty(device="cpu")
        pool.restore({key: key for key in pool.slots}, merge_history=[], num_mean_updates=0)
    for bank in pool.bank_names:
        merges = merges_per_group(bank) if callable(merges_per_group) else merges_per_group
        for row in range(merges):
            pool.tie(bank=bank, lower=row, upper=row + 1, update_ratio=0.0, step=0, distance=0.0)


def pytest_collection_modifyitems(config, items):
    """``@pytest.mark.gpu`` tests skip, with the reason, where no CUDA device is present."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


ROOT = Path(__file__).resolve().parent.parent
SMOKE_GRID = ["-m", "debug=smoke", "adapter=aslora", "adapter.params.max_merges=1,2"]
"""A two-job grid of the smoke run (16 steps each): one and two ties per module type."""


def run_cli(args: list[str], cwd: Path, script: str = "train.py", **env: str) -> subprocess.CompletedProcess:
    """``python <script> <args>`` as a user runs it, offline, from ``cwd``."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "PYTHONPATH": str(ROOT), **env}
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="session")
def sequential_smoke_grid(tmp_path_factory) -> Path:
    """:data:`SMOKE_GRID` run by Hydra's basic launcher, one job after the other; returns its
    experiments directory (the reference the parallel launchers are compared with)."""
    root = tmp_path_factory.mktemp("sequential_grid")
    result = run_cli([*SMOKE_GRID, f"experiments_dir={root / 'sweep'}"], root)
    assert result.returncode == 0, result.stderr[-2000:]
    return root / "sweep"
