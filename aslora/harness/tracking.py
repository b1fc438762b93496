"""wandb, wrapped so that ``finish()`` always runs (a multirun's jobs never share a run).

Mode ``disabled`` (default) writes nothing; ``offline`` writes ``./wandb/offline-run-*`` to sync
later; ``online`` needs an API key. The local ``report.json`` is written in every mode.
"""

from __future__ import annotations

from typing import Any

from aslora.harness.settings import WandbSettings


class Tracker:
    def __init__(self, settings: WandbSettings, run_name: str, config: dict[str, Any]) -> None:
        self.settings, self.run_name, self.config = settings, run_name, config
        self.run = None

    def __enter__(self) -> "Tracker":
        if self.settings.mode != "disabled":
            import wandb

            self.run = wandb.init(project=self.settings.project, entity=self.settings.entity, name=self.run_name,
                                  config=self.config, tags=list(self.settings.tags), mode=self.settings.mode,
                                  reinit="finish_previous")
        return self

    def log(self, metrics: dict[str, float], step: int) -> None:
        if self.run is not None:
            self.run.log(metrics, step=step)

    def summary(self, values: dict[str, Any]) -> None:
        if self.run is not None:
            self.run.summary.update(values)

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.run is not None:
            self.run.finish(exit_code=1 if exc_type else 0)
            self.run = None
