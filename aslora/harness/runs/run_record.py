"""A run's own record in its one home, ``experiments/<run>/``: the resolved config, the overrides that
made it, and its log — written by the run itself, only once the configuration has passed validation.

Hydra would write the same three things (``.hydra/config.yaml``, ``overrides.yaml``, ``train.log``)
into a second tree (``outputs/<date>/<time>_<run>/``), and it writes them *before* the task function
runs, so a run refused for bad input would leave a directory behind. ``configs/train.yaml`` turns
Hydra's outputs off (``hydra.output_subdir: null``, ``hydra.run.dir: .``, console-only job logging);
:class:`RunRecord` holds the log in memory from the run's first line and writes it, with the config
and overrides, when :meth:`RunRecord.keep` is called after validation. A run refused before that
writes nothing anywhere; a run that fails later keeps its log up to the failure.
"""

from __future__ import annotations

import logging
import logging.handlers
from pathlib import Path
from typing import Any, Sequence

import yaml

from aslora.harness.runs.run_dir import check_no_links, write_text_atomic

CONFIG_FILE, OVERRIDES_FILE, LOG_FILE = "config.yaml", "overrides.yaml", "train.log"
# Hydra's own job-log format, so train.log reads as the console did
LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"


class RunRecord:
    """Context manager: buffer the root logger's records until :meth:`keep`, then append them, and
    everything after, to ``<run_dir>/train.log``; drop the buffer if the run never gets that far."""

    def __init__(self) -> None:
        # no target and a flush level above CRITICAL: the buffer only grows until keep() gives it a file
        self._buffer = logging.handlers.MemoryHandler(capacity=1 << 20, flushLevel=logging.CRITICAL + 1)
        self._file: logging.FileHandler | None = None

    def __enter__(self) -> RunRecord:
        logging.getLogger().addHandler(self._buffer)
        return self

    def keep(self, run_dir: Path, container: dict[str, Any], overrides: Sequence[str]) -> None:
        """Write ``config.yaml`` (the resolved config), ``overrides.yaml`` (the command-line overrides,
        as Hydra saved them) and the log so far into ``run_dir``; log there from now on. A resumed run
        appends to its log."""
        check_no_links(run_dir)  # checked before loading too; again here, right before the first write
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(run_dir / CONFIG_FILE, yaml.safe_dump(container, sort_keys=False))
        write_text_atomic(run_dir / OVERRIDES_FILE, yaml.safe_dump(list(overrides)))
        self._file = logging.FileHandler(run_dir / LOG_FILE, mode="a", encoding="utf-8")
        self._file.setFormatter(logging.Formatter(LOG_FORMAT))
        self._buffer.setTarget(self._file)
        self._buffer.flush()
        root = logging.getLogger()
        root.removeHandler(self._buffer)
        root.addHandler(self._file)

    def __exit__(self, *exc: object) -> None:
        root = logging.getLogger()
        root.removeHandler(self._buffer)
        self._buffer.buffer.clear()  # never kept: the run was refused before it had a home
        if self._file is not None:
            root.removeHandler(self._file)
            self._file.close()
