"""A Hydra callback that checks, once and in seconds, what a multirun grid needs before its first job.

Registered in ``configs/train.yaml`` (``hydra.callbacks.preflight``). Without it a grid whose every
job needs the Hub (``sweep=glue``, ``sweep=alpaca``: ``hub=true``) on a machine without Hub access
would run all of its jobs, each failing after ~46 s of retries, and Hydra would report the first
error at the end: two hours for ``make reproduce-glue``. Each single run checks the same things
itself (``aslora.harness.run``), this only makes a grid stop before it starts.
"""

from __future__ import annotations

from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class GridPreflight(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not config.get("hub", False):
            return
        from aslora.harness.hub import check_hub_reachable

        sweep = config.hydra.sweeper.get("params") or {}
        what = ", ".join(f"{k}={v}" for k, v in sweep.items()) or "this grid"
        try:
            check_hub_reachable(f"the grid ({what}) runs with hub=true and")
        except ValueError as error:
            raise SystemExit(f"stopped before the first job: {error}") from None
