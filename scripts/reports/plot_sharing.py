"""The sharing map of a finished ASLoRA run (the paper's Figure 3) and its merge timeline.

    python -m scripts.reports.plot_sharing experiments/<run_name> [--out DIR] [--wandb-mode offline]

Writes ``sharing_map.png`` (per module type, which layers share one B at the end of training) and
``merge_timeline.png`` (distinct B's over the training steps, and each tie's running-mean distance)
into the run directory (or ``--out``); with ``--wandb-mode offline|online`` also logs them to wandb.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from aslora.harness.measuring.figures import (  # noqa: F401  (sharing_matrix is used from here too)
    describe_run,
    plot_sharing_map,
    plot_timeline,
    sharing_matrix,
)


def load(run_dir: Path) -> tuple[dict, dict]:
    from aslora.export import read_adapter_meta

    report_path = run_dir / "report.json"
    if not report_path.is_file():
        raise SystemExit(f"{report_path} not found: {run_dir} is not a finished ASLoRA run")
    # the last epoch's adapter: the map shows the sharing at the end of training, which the caption's
    # counts (the report's params.after) describe; adapter/ is the best epoch's, which can precede
    # the last tie (runs older than the best-epoch adapter saved only the last one, as adapter/)
    folder = run_dir / "adapter_last" if (run_dir / "adapter_last").is_dir() else run_dir / "adapter"
    try:
        adapter = read_adapter_meta(folder)
    except ValueError as error:
        raise SystemExit(f"{run_dir} is not a finished ASLoRA run: {error}") from None
    if adapter.get("adapter_type") != "ASLoRAConfig":
        raise SystemExit(f"{run_dir} is a {adapter.get('adapter_type')} run; the sharing map is for ASLoRA")
    return json.loads(report_path.read_text()), adapter


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--wandb-mode", default="disabled", choices=["disabled", "offline", "online"])
    args = parser.parse_args(argv)
    report, adapter = load(args.run_dir)
    out = args.out or args.run_dir
    out.mkdir(parents=True, exist_ok=True)
    paths = [plot_sharing_map(report, adapter, out), plot_timeline(report, out)]
    for path in paths:
        print(f"wrote {path}")
    if args.wandb_mode != "disabled":
        import wandb

        with wandb.init(project="aslora", name=f"{report['run_name']}-sharing", mode=args.wandb_mode) as run:
            run.log({p.stem: wandb.Image(str(p)) for p in paths})
    return 0


if __name__ == "__main__":
    sys.exit(main())
