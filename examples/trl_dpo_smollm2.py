"""ASLoRA in TRL's DPOTrainer: preference tuning of SmolLM2-135M-Instruct, offline, on CPU.

    python examples/trl_dpo_smollm2.py                       # ~2 min on 2 CPU cores (20 steps)
    python examples/trl_dpo_smollm2.py --tiny                # a 2-layer LLaMA built in code (the test)

Preference pairs are built offline from the chatterbot dialogue pairs: the prompt's own reply is
``chosen``, the reply to another prompt is ``rejected``. ``DPOTrainer(..., peft_config=ASLoRAConfig(...))``
wraps the model with PEFT as for a ``LoraConfig``, and computes the reference log-probabilities
with the adapter disabled (``model.disable_adapter()``: the base model is the reference, no second
copy in memory); ``ASLoRACallback`` adds the running means and the ties. The summary counts the
forwards each adapted layer made with the adapter on and off.
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from datasets import Dataset  # noqa: E402
from trl import DPOConfig, DPOTrainer  # noqa: E402

import aslora  # noqa: E402
from aslora.integrations.trainer import ASLoRACallback  # noqa: E402


def preference_pairs(n: int) -> Dataset:
    """``n`` (prompt, chosen, rejected) triples: the reply to the prompt, and the next pair's reply."""
    from aslora.harness.inputs.instruct import load_chatterbot

    pairs = load_chatterbot().sample(frac=1.0, random_state=0).iloc[: n + 1]
    replies = list(pairs.response)
    return Dataset.from_dict(
        {
            "prompt": [[{"role": "user", "content": p}] for p in pairs.prompt[:n]],
            "chosen": [[{"role": "assistant", "content": r}] for r in replies[:n]],
            "rejected": [[{"role": "assistant", "content": r}] for r in replies[1 : n + 1]],
        }
    )


def _model(tiny: bool):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from aslora.harness.inputs.models import dequantised_smollm2

    path = dequantised_smollm2()
    tokenizer = AutoTokenizer.from_pretrained(path)  # SmolLM2's, with its chat template, for both
    if not tiny:
        return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), tokenizer
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return LlamaForCausalLM(config), tokenizer


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", default="outputs/example_dpo")
    parser.add_argument("--tiny", action="store_true", help="a 4-layer LLaMA at width 16 instead of SmolLM2")
    parser.add_argument("--pairs", type=int, default=160)
    parser.add_argument("--max-steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-merges", type=int, default=13, help="ties per module type")
    parser.add_argument("--max-length", type=int, default=96)
    args = parser.parse_args(argv)

    from transformers import set_seed

    from aslora.adapters.layers import SharedLoRALinear

    set_seed(0)  # before the adapter's A is drawn
    model, tokenizer = _model(args.tiny)
    config = DPOConfig(
        output_dir=args.output_dir,
        max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size,
        learning_rate=5e-3,
        beta=0.1,
        max_length=args.max_length,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
    )
    trainer = DPOTrainer(
        model=model,
        args=config,
        train_dataset=preference_pairs(args.pairs),
        processing_class=tokenizer,
        peft_config=aslora.ASLoRAConfig(
            r=8,
            lora_alpha=16,
            target_modules=["q_proj", "v_proj"],
            task_type="CAUSAL_LM",
            max_merges=args.max_merges,
        ),
    )
    trainer.add_callback(ASLoRACallback(trainer))
    # count, on one adapted layer, the forwards with the adapter on (policy) and off (reference)
    layer = next(m for m in trainer.model.modules() if isinstance(m, SharedLoRALinear))
    passes = {"adapter_on": 0, "adapter_off": 0}
    layer.register_forward_pre_hook(
        lambda module, _: passes.__setitem__(
            key := "adapter_off" if module.disable_adapters else "adapter_on", passes[key] + 1
        )
    )
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    pool = aslora.find_pool(trainer.model)
    summary = {
        "steps": trainer.state.global_step,
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "num_ties": len(pool.merge_history),
        "adapter_params": aslora.count_parameters(trainer.model).adapter,
        **passes,
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
