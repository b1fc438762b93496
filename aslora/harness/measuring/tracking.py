"""Where a run's numbers go besides ``report.json``: wandb and a CSV file, each a config choice.

wandb is wrapped so that ``finish()`` always runs (a multirun's jobs never share a run). Mode
``disabled`` (default) writes nothing; ``offline`` writes ``<run dir>/wandb/offline-run-*`` to
sync later; ``online`` needs an API key. Jobs of one sweep share a wandb ``group`` (the sweep's
name), so the wandb UI shows a grid together. At the end of an ASLoRA run the merge history goes
to wandb as a table and the sharing map as an image.

``metrics_csv: true`` (default) appends every logged value to ``<run dir>/metrics.csv`` as
``step,key,value`` rows — the logger Hydra-template users expect when wandb is off; one row per
key, so two merge groups tying at one step are two rows, never one overwriting the other.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from aslora.harness.runs.settings import WandbSettings

METRICS_CSV = "metrics.csv"


class Tracker:
    def __init__(
        self,
        settings: WandbSettings,
        run_name: str,
        config: dict[str, Any],
        *,
        run_dir: Path | None = None,
        group: str | None = None,
        metrics_csv: bool = False,
        resume: bool = False,
    ) -> None:
        self.settings, self.run_name, self.config = settings, run_name, config
        self.run_dir, self.group, self.metrics_csv = run_dir, group, metrics_csv and run_dir is not None
        self.resume = resume
        self.run = None
        self._csv = None

    def _open_csv(self, first_step: int) -> None:
        """Open ``metrics.csv`` at the first value logged, not before: a run refused before it logs
        anything (a resume whose checkpoint does not fit) leaves the file as it was. A fresh run
        starts it empty; a resumed one keeps the rows of the steps before ``first_step`` — the steps
        its checkpoint holds — and drops the killed run's later rows, which it logs again, so the
        file ends as the uninterrupted run's would. Never written through a symbolic link."""
        path = self.run_dir / METRICS_CSV
        if path.is_symlink():
            raise ValueError(f"{path} is a symbolic link: a run never writes through one (remove it)")
        kept: list[list[str]] = []
        if self.resume and path.is_file():
            with open(path, newline="") as f:
                rows = list(csv.reader(f))
            kept = [
                row for row in rows[1:] if len(row) == 3 and _step(row[0]) is not None and _step(row[0]) < first_step
            ]
        tmp = path.with_name(f".{METRICS_CSV}.tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["step", "key", "value"])
            writer.writerows(kept)
        tmp.replace(path)
        self._csv = open(path, "a", newline="")

    def __enter__(self) -> "Tracker":
        if self.metrics_csv:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.settings.mode != "disabled":
            import wandb

            directory = None
            if self.run_dir is not None:  # wandb's files next to the run's report, not in the working directory
                directory = str(self.run_dir)
                self.run_dir.mkdir(parents=True, exist_ok=True)
            self.run = wandb.init(
                project=self.settings.project,
                entity=self.settings.entity,
                name=self.run_name,
                config=self.config,
                tags=list(self.settings.tags),
                mode=self.settings.mode,
                group=self.group,
                dir=directory,
                reinit="finish_previous",
            )
        return self

    def log(self, metrics: dict[str, float], step: int) -> None:
        if self.metrics_csv and self._csv is None:
            self._open_csv(step)
        if self._csv is not None:
            writer = csv.writer(self._csv)
            for key, value in metrics.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    writer.writerow([step, key, value])
            self._csv.flush()
        if self.run is not None:
            self.run.log(metrics, step=step)

    def summary(self, values: dict[str, Any]) -> None:
        if self.run is not None:
            self.run.summary.update(values)

    def merge_table(self, history: list[dict[str, Any]]) -> None:
        """The ties of an ASLoRA run as one wandb table (step, group, kept, retired, distance, layers)."""
        if self.run is None or not history:
            return
        import wandb

        columns = ["step", "group", "kept", "retired", "distance", "layers_sharing"]
        rows = [
            [e["step"], e["group"], e["kept"], e["retired"], e["distance"], ", ".join(e["layers_sharing"])]
            for e in history
        ]
        self.run.log({"aslora/merges": wandb.Table(columns=columns, data=rows)})

    def images(self, paths: list[Path]) -> None:
        if self.run is None:
            return
        import wandb

        self.run.log({f"aslora/{p.stem}": wandb.Image(str(p)) for p in paths})

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._csv is not None:
            self._csv.close()
            self._csv = None
        if self.run is not None:
            self.run.finish(exit_code=1 if exc_type else 0)
            self.run = None


def _step(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None
