"""Benchmark: every adapter against PEFT's LoRA, measured side by side in ONE process.

    python -m scripts.bench.speed                                     # MiniLM-L6 (real weights), batch 32 × 128, CPU
    python -m scripts.bench.speed --model roberta-base --device cuda  # random weights from the config

For each method: the time of a training step (forward + backward + AdamW step) after warm-up,
training memory and adapter bytes in a saved checkpoint (head excluded), as ratios to PEFT LoRA at
the same rank and targets and (the step) to the limit. The ``limit`` row is what no adapter can beat: the frozen
base's forward and its input-gradient backward through every layer (the embeddings' output
requires grad), with only the task head training. ``--compile`` adds ``torch.compile``d rows
(``+compile``) of the limit, PEFT LoRA and ASLoRA, timed after compilation.

Each round times one step of every method, in an order shuffled each round, each beside one step of
its limit (the two in random order): on a shared machine step times drift by tens of per cent within
a minute, and two adjacent steps share the drift. A ratio to the limit is the median over rounds of
``t_method,k / t_limit,k`` (the adjacent pair), a ratio to LoRA that of the two methods' ratios to
their limits, each with its distribution-free 95 % interval and n (``scripts.reports.stats.median_interval``: step
times have a heavy right tail, which an interval of the mean would follow). For ASLoRA it also
times the running-mean update and one merge event, as fractions of a step, and the fold-into-base
inference speed. ``scripts/bench/report.py`` turns the JSON into results/README.md's table.

Memory: on CUDA, ``torch.cuda.max_memory_allocated`` of a step; on CPU (no allocator statistics),
the bytes a step must hold — tensors saved for backward (each storage once), gradients and
optimizer state. Writes ``results/bench/<device>.json`` with the hardware, versions and command.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

import aslora
from aslora.harness.runs.report import environment
from scripts.bench.timing import (
    BENCH_OUTPUTS,
    MIN_ROUNDS,
    format_ratio,
    paired_times,
    round_ratio,
    round_summary,
    timed,
    write_report,
)
from scripts.bench.trainees import COMPILED, LIMIT, Trainee, build_base, merges_for, method_configs, random_batch


def training_memory_bytes(trainee: Trainee, batch: dict[str, torch.Tensor], device: str) -> int:
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        trainee.step(batch)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated()
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = trainee.model(**batch).loss
    loss.backward()
    grads = sum(p.grad.numel() * p.grad.element_size() for p in trainee.model.parameters() if p.grad is not None)
    trainee.optimizer.step()
    trainee.optimizer.zero_grad(set_to_none=True)
    state = sum(
        t.numel() * t.element_size() for s in trainee.optimizer.state.values() for t in s.values() if torch.is_tensor(t)
    )
    return sum(storages.values()) + grads + state


def adapter_checkpoint_bytes(trainee: Trainee) -> int:
    """Bytes of adapter tensors in the saved checkpoint, task head excluded (PEFT LoRA/VeRA via
    ``save_pretrained``, ours via ``save_adapter(training_state=False)``)."""
    from safetensors.torch import load_file

    with tempfile.TemporaryDirectory() as tmp:
        if aslora.find_pool(trainee.model) is not None:
            aslora.save_adapter(trainee.model, tmp, training_state=False)
            weights = aslora.export.WEIGHTS_FILE
        elif hasattr(trainee.model, "save_pretrained") and hasattr(trainee.model, "peft_config"):
            trainee.model.save_pretrained(tmp)
            weights = aslora.export.PEFT_WEIGHTS_FILE
        else:
            return sum(p.numel() * p.element_size() for p in trainee.model.parameters() if p.requires_grad)
        tensors = load_file(str(Path(tmp) / weights))
    return sum(
        t.numel() * t.element_size()
        for k, t in tensors.items()
        if not k.startswith("head.") and ".classifier." not in f".{k}" and ".score." not in f".{k}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm-l6")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument(
        "--repeats", type=int, default=15, help=f"rounds (≥ {MIN_ROUNDS} for a 95 %% interval of each ratio)"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--methods", default="all", help="comma-separated subset, or all")
    parser.add_argument("--out", default=None, help="JSON path (default results/bench/<device>.json)")
    parser.add_argument("--compile", action="store_true", help="add torch.compile'd rows of limit, peft-lora, aslora")
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "bfloat16"],
        help="the base model's dtype (adapters stay fp32, as in training)",
    )
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    base, targets, vocab = build_base(args.model)
    base = base.to(getattr(torch, args.dtype))
    merges = merges_for(base.config.num_hidden_layers)
    configs = method_configs(targets, args.rank, merges)
    names = list(configs) if args.methods == "all" else args.methods.split(",")
    unknown = sorted(set(names) - set(configs))
    if unknown:
        raise SystemExit(f"unknown --methods {unknown}; choose from {sorted(configs)}")
    for required in (LIMIT, "peft-lora"):  # the references every ratio is taken against
        if required not in names:
            names.insert(0, required)
    if args.compile:
        names += [name + COMPILED for name in (LIMIT, "peft-lora", "aslora") if name in names]
    batch = random_batch(args.batch_size, args.seq_len, vocab, args.device)

    trainees = {
        name: Trainee(name, base, configs[name.removesuffix(COMPILED)](), args.device, compile=name.endswith(COMPILED))
        for name in names
    }
    for trainee in trainees.values():  # ASLoRA reaches its steady state (all merges done) during warm-up
        for _ in range(max(args.warmup, merges + 1 if trainee.controller else 0)):
            trainee.step(batch)

    def limit_of(name: str) -> str:  # the limit of the same kind (eager or compiled)
        return LIMIT + COMPILED if name.endswith(COMPILED) else LIMIT

    times, limits = paired_times(trainees, limit_of, batch, args.repeats, args.device)

    rows: dict[str, dict[str, Any]] = {}
    for name, trainee in trainees.items():
        counts = aslora.count_parameters(trainee.model)
        rows[name] = {
            "step_seconds": statistics.median(times[name]),
            "step_seconds_all": times[name],
            "limit_seconds_all": limits[name],
            "memory_bytes": training_memory_bytes(trainee, batch, args.device),
            "adapter_bytes": adapter_checkpoint_bytes(trainee),
            "adapter_params": counts.adapter,
            "num_distinct_B": counts.num_distinct_B,
        }
    for name, row in rows.items():
        # against the reference of the same kind (eager or compiled)
        kind = COMPILED if name.endswith(COMPILED) else ""
        reference = rows["peft-lora" + kind]
        for key in ("memory_bytes", "adapter_bytes"):
            row[f"{key}_ratio"] = row[key] / reference[key]
        row["step_ratio_to_limit"] = round_ratio(times[name], limits[name])
        # × LoRA: the two steps' ratios to their adjacent limits, divided (each free of the drift)
        lora = "peft-lora" + kind
        row["step_ratio_to_lora"] = round_summary(
            [
                (t / lim) / (t_lora / lim_lora)
                for t, lim, t_lora, lim_lora in zip(times[name], limits[name], times[lora], limits[lora], strict=True)
            ]
        )

    extras = aslora_overheads(trainees.get("aslora"), base, configs, batch, args, rows)
    report = {
        "command": " ".join(["python -m scripts.bench.speed", *(argv if argv is not None else sys.argv[1:])]),
        "model": args.model,
        "dtype": args.dtype,
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        "rank": args.rank,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "device": args.device,
        "methods": rows,
        "aslora": extras,
        "environment": environment(outputs=BENCH_OUTPUTS),
    }
    print_table(report)
    write_report(report, args.out, "")
    return 0


def aslora_overheads(trainee: Trainee | None, base, configs, batch, args, rows) -> dict[str, Any]:
    if trainee is None:
        return {}
    step = rows["aslora"]["step_seconds"]
    pool = trainee.controller.pool
    mean_update = statistics.median(timed(pool.update_running_means, args.device) for _ in range(50))
    fresh = Trainee("aslora", base, configs["aslora"](), args.device)  # all B's untied: the costliest search
    fresh.step(batch)
    merge_event = timed(lambda: fresh.controller.step(fresh.steps + 1), args.device)
    # inference: the base model vs the same model after the adapter is folded in
    with torch.no_grad():
        plain = copy.deepcopy(base).to(args.device).eval()
        folded = aslora.merge_into_base(copy.deepcopy(trainee.model)).eval()
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        for model in (plain, folded):
            model(**inputs)
        base_times, folded_times = [], []
        for _ in range(args.repeats):
            base_times.append(timed(lambda: plain(**inputs), args.device))
            folded_times.append(timed(lambda: folded(**inputs), args.device))
    return {
        "running_mean_update_seconds": mean_update,
        "running_mean_update_fraction_of_step": mean_update / step,
        "merge_event_seconds": merge_event,
        "merge_event_fraction_of_step": merge_event / step,
        "folded_inference_ratio_to_base": statistics.median(folded_times) / statistics.median(base_times),
    }


def print_table(report: dict[str, Any]) -> None:
    print(
        f"\n{report['model']}, batch {report['batch_size']} × {report['seq_len']}, r = {report['rank']}, "
        f"{report['environment']['device']}; {report['repeats']} rounds, one step of each method per round in shuffled order, each beside a step of its limit"
    )
    print(
        f"{'method':<19}{'step s':>8}{'step × LoRA [95 %]':>22}{'step × limit [95 %]':>22}{'memory MB':>11}"
        f"{'× LoRA':>8}{'adapter KB':>12}{'× LoRA':>8}"
    )
    for name, row in report["methods"].items():
        print(
            f"{name:<19}{row['step_seconds']:>8.3f}{format_ratio(row['step_ratio_to_lora']):>22}"
            f"{format_ratio(row['step_ratio_to_limit']):>22}"
            f"{row['memory_bytes'] / 2**20:>11.1f}{row['memory_bytes_ratio']:>8.2f}"
            f"{row['adapter_bytes'] / 2**10:>12.1f}{row['adapter_bytes_ratio']:>8.3f}"
        )
    print(
        "step ratios: medians over rounds of a step over the adjacent limit step (× LoRA: of two such ratios), [order-statistic 95 % interval]"
    )
    extras = report["aslora"]
    if extras:
        print(
            f"ASLoRA running-mean update: {100 * extras['running_mean_update_fraction_of_step']:.3f} % of a step; "
            f"one merge event: {100 * extras['merge_event_fraction_of_step']:.2f} % of a step; "
            f"folded inference: {extras['folded_inference_ratio_to_base']:.2f}× the base model"
        )


if __name__ == "__main__":
    sys.exit(main())
