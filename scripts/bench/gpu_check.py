"""The prepared GPU check (`make gpu-check`): everything that needs a CUDA device, in one command.

    python -m scripts.bench.gpu_check                 # on a GPU machine: results/bench/gpu_check_<gpu>.json + .log
    python -m scripts.bench.gpu_check --dry-run       # the same phases on the CPU at toy sizes (CI runs this)

Phases, each in its own process with its own time limit, so a slow one costs only itself:

1. ``pytest -m gpu`` — ASLoRA on CUDA against the CPU run, bf16 autocast (``tests/test_gpu.py``);
2. ``scripts.bench.speed`` at RoBERTa-base shapes in bf16, eager and ``torch.compile``d, and at
   RoBERTa-large shapes eager: step time against PEFT LoRA and the frozen-base limit, and peak
   memory (``torch.cuda.max_memory_allocated``) against PEFT LoRA — random weights from configs;
3. ``scripts.bench.depth`` at LLaMA-2-7B's q/v projection shapes (width 4096), 8–32 layers, bf16:
   whether ASLoRA's overhead per adapted layer grows with depth.

A lent GPU machine has PyTorch and no network: what it lacks travels as wheels in ``.whl/`` (the
Makefile's ``gpu-wheels`` target fetches them here; the command installs them there first). The
default run's real weights (88 MB) are over what may travel (64 MiB), so no training step of the
default run is part of the check; the benchmarks' steps are full training steps of the same code.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from hydra_glue import ROOT

PHASES = {
    "gpu-tests": (["-m", "pytest", "-q", "-m", "gpu", "tests/test_gpu.py", "-p", "no:cacheprovider"], 120),
    "bench-roberta-base": (
        ["-m", "scripts.bench.speed", "--model", "roberta-base", "--dtype", "bfloat16", "--compile", "--repeats", "6",
         "--methods", "limit,peft-lora,aslora"],
        300,
    ),
    "bench-roberta-large": (
        ["-m", "scripts.bench.speed", "--model", "roberta-large", "--dtype", "bfloat16", "--repeats", "6",
         "--methods", "limit,peft-lora,aslora"],
        150,
    ),
    "bench-depth-llama-2-7b-shapes": (
        ["-m", "scripts.bench.depth", "--width", "4096", "--depths", "8,16,32", "--dtype", "bfloat16",
         "--batch-size", "4", "--seq-len", "256", "--repeats", "6"],
        150,
    ),
}  # fmt: skip
DRY = {  # the same code paths at sizes a CPU runs in seconds
    "gpu-tests": ["-m", "pytest", "-q", "-m", "gpu", "tests/test_gpu.py", "-p", "no:cacheprovider"],
    "bench-roberta-base": ["-m", "scripts.bench.speed", "--model", "minilm-l6", "--batch-size", "2", "--seq-len", "8",
                           "--repeats", "1", "--warmup", "1", "--methods", "limit,peft-lora,aslora"],
    "bench-roberta-large": None,
    "bench-depth-llama-2-7b-shapes": ["-m", "scripts.bench.depth", "--width", "64", "--depths", "2,4",
                                      "--batch-size", "2", "--seq-len", "8", "--repeats", "1"],
}  # fmt: skip


def run_phase(name: str, args: list[str], limit: int, out_dir: Path, log) -> dict:
    """One phase in a subprocess; its JSON (``--out``) read back, its output appended to the log."""
    out = out_dir / f"{name}.json"
    command = [sys.executable, *args, *([] if "pytest" in args else ["--out", str(out)])]
    started = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=limit)
        status, output = ("ok" if done.returncode == 0 else f"exit {done.returncode}"), done.stdout + done.stderr
    except subprocess.TimeoutExpired as error:
        status, output = f"timed out after {limit} s", (error.stdout or b"").decode(errors="replace")
    seconds = time.perf_counter() - started
    log.write(f"\n===== {name}: {status} in {seconds:.0f} s\n$ {' '.join(command)}\n{output}\n")
    log.flush()
    print(f"{name}: {status} ({seconds:.0f} s)", flush=True)
    result = {"command": " ".join(["python", *args]), "status": status, "seconds": round(seconds, 1)}
    if "pytest" in args:
        result["summary"] = output.strip().splitlines()[-1] if output.strip() else ""
    elif out.is_file():
        result["report"] = json.loads(out.read_text())
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="every phase on the CPU at toy sizes")
    parser.add_argument("--out", type=Path, default=None, help="the JSON (default results/bench/gpu_check_<gpu>.json)")
    args = parser.parse_args(argv)
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here: `make gpu-check` is for a GPU machine (--dry-run runs it on the CPU)")
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() and not args.dry_run else "cpu (dry run)"
    slug = "".join(c if c.isalnum() else "-" for c in device.lower()).strip("-")[:40]
    out = args.out or ROOT / "results" / "bench" / f"gpu_check_{slug}.json"
    work = out.parent / f".{out.stem}.parts"
    work.mkdir(parents=True, exist_ok=True)
    report = {
        "command": " ".join(["python -m scripts.bench.gpu_check", *(argv if argv is not None else sys.argv[1:])]),
        "device": device,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "phases": {},
    }
    with open(out.with_suffix(".log"), "w") as log:
        for name, (phase_args, limit) in PHASES.items():
            phase = DRY[name] if args.dry_run else phase_args
            if phase is None:
                continue
            report["phases"][name] = run_phase(name, phase, limit if not args.dry_run else 300, work, log)
    out.write_text(json.dumps(report, indent=1) + "\n")
    for part in work.glob("*.json"):
        part.unlink()
    work.rmdir()
    print(f"wrote {out} and {out.with_suffix('.log').name}")
    return 0 if all(p["status"] == "ok" for p in report["phases"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
