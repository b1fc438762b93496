"""Exact parameter counts from closed-form formulas on full-size architectures (item 5).

Models are built on the meta device: the real shapes, no weights, milliseconds.
"""

from __future__ import annotations

import peft
import pytest
import torch
from transformers import AutoModelForSequenceClassification, LlamaConfig, RobertaConfig

import aslora
from aslora.params import (
    lora_parameter_count,
    shared_lora_parameter_count,
    tied_lora_parameter_count,
    vera_parameter_count,
)
from tests.conftest import tie_lowest_upward

ARCHS = {
    # name: (config, targets, layers, d_in, d_out of q, d_out of v)
    "roberta-base": (RobertaConfig(num_labels=2), ["query", "value"], 12, 768, 768, 768),
    "roberta-large": (
        RobertaConfig(
            hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096, num_labels=2
        ),
        ["query", "value"],
        24,
        1024,
        1024,
        1024,
    ),
    "llama-2-7b": (
        LlamaConfig(
            hidden_size=4096,
            intermediate_size=11008,
            num_hidden_layers=32,
            num_attention_heads=32,
            vocab_size=32000,
            pad_token_id=0,
            num_labels=2,
        ),
        ["q_proj", "v_proj"],
        32,
        4096,
        4096,
        4096,
    ),
    # grouped-query attention: v is narrower than q (SmolLM2-135M shapes, 30 layers)
    "smollm2-135m": (
        LlamaConfig(
            hidden_size=576,
            intermediate_size=1536,
            num_hidden_layers=30,
            num_attention_heads=9,
            num_key_value_heads=3,
            vocab_size=49152,
            pad_token_id=0,
            num_labels=2,
        ),
        ["q_proj", "v_proj"],
        30,
        576,
        576,
        192,
    ),
}


def _meta_model(arch):
    config = ARCHS[arch][0]
    with torch.device("meta"):
        return AutoModelForSequenceClassification.from_config(config)


def _shapes(arch):
    _, _, layers, d_in, d_q, d_v = ARCHS[arch]
    return [(d_in, d_q), (d_in, d_v)] * layers


def test_roberta_base_counts_match_the_paper_notes():
    r = 8
    lora = aslora.count_parameters(
        aslora.apply_adapter(
            _meta_model("roberta-base"), peft.LoraConfig(r=r, lora_alpha=16, target_modules=["query", "value"])
        )
    )
    assert lora.adapter == 294_912 == 2 * 12 * 2 * 768 * r
    vera = aslora.count_parameters(
        aslora.apply_adapter(_meta_model("roberta-base"), peft.VeraConfig(r=1024, target_modules=["query", "value"]))
    )
    assert vera.adapter == 43_008 == 24 * (1024 + 768)
    model = aslora.apply_adapter(_meta_model("roberta-base"), aslora.ASLoRAConfig(r=r))
    before = aslora.count_parameters(model)
    assert before.adapter == 153_600 == 768 * r + 24 * 768 * r
    assert before.head == 768 * 768 + 768 + 768 * 2 + 2  # RoBERTa's dense + out_proj head, excluded
    tie_lowest_upward(model, 7)
    after = aslora.count_parameters(model)
    assert after.num_distinct_B == 10
    assert after.adapter == 67_584 == 768 * r + 10 * 768 * r
    assert after.adapter / lora.adapter < 0.25  # the paper's claim
    per_module = aslora.apply_adapter(_meta_model("roberta-base"), aslora.ASLoRAConfig(r=r, a_sharing="per_module"))
    tie_lowest_upward(per_module, 7)
    assert aslora.count_parameters(per_module).adapter == 73_728  # exactly 25.0 %: per-module A misses the claim


@pytest.mark.parametrize("arch", sorted(ARCHS))
@pytest.mark.parametrize("r", [4, 8, 16])
def test_counts_equal_closed_forms(arch, r):
    shapes = _shapes(arch)
    targets = ARCHS[arch][1]
    layers = ARCHS[arch][2]
    d_in = ARCHS[arch][3]
    b_widths = [d_out for _, d_out in shapes]
    lora = aslora.count_parameters(
        aslora.apply_adapter(_meta_model(arch), peft.LoraConfig(r=r, lora_alpha=2 * r, target_modules=targets))
    )
    assert lora.adapter == lora_parameter_count(shapes, r)
    aslora_model = aslora.apply_adapter(_meta_model(arch), aslora.ASLoRAConfig(r=r, target_modules=targets))
    assert aslora.count_parameters(aslora_model).adapter == shared_lora_parameter_count(r, [d_in], b_widths)
    tie_lowest_upward(aslora_model, layers // 2)
    left = [d for d in b_widths[:2]] * (layers - layers // 2)  # each type keeps layers − merges B's
    assert aslora.count_parameters(aslora_model).adapter == shared_lora_parameter_count(r, [d_in], left)
    share = aslora.count_parameters(
        aslora.apply_adapter(_meta_model(arch), aslora.ShareLoRAConfig(r=r, target_modules=targets))
    )
    assert share.adapter == shared_lora_parameter_count(r, [d_in, d_in], b_widths)
    tied = aslora.count_parameters(
        aslora.apply_adapter(_meta_model(arch), aslora.TiedLoRAConfig(r=r, target_modules=targets))
    )
    assert tied.adapter == tied_lora_parameter_count(r, [d_in, d_in], b_widths[:2], shapes)


def test_vera_closed_form_on_llama():
    counts = aslora.count_parameters(
        aslora.apply_adapter(_meta_model("llama-2-7b"), peft.VeraConfig(r=256, target_modules=["q_proj", "v_proj"]))
    )
    assert counts.adapter == vera_parameter_count(_shapes("llama-2-7b"), 256) == 64 * (256 + 4096)
    # stored: VeRA's frozen projections are saved once with the adapter
    assert counts.stored == counts.trainable + 256 * 4096 + 4096 * 256


def test_tied_lora_matches_the_published_0_043M_on_roberta_base():
    tied = aslora.count_parameters(aslora.apply_adapter(_meta_model("roberta-base"), aslora.TiedLoRAConfig(r=8)))
    assert tied.adapter == 43_200


def test_full_finetuning_counts_everything_but_the_head_as_adapter():
    model = aslora.apply_adapter(_meta_model("roberta-base"), aslora.FullFinetuneConfig())
    counts = aslora.count_parameters(model)
    assert counts.trainable == counts.total
    assert counts.adapter == counts.total - counts.head
