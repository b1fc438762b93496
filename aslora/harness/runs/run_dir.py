"""A run directory's writes follow no link and land whole.

A run directory may sit on a cluster's shared disk, and may have been handed over by someone else.
The run writes and deletes only inside ``experiments/<run>/`` — its config, log, metrics, report,
adapters, checkpoints — so a symbolic link anywhere in there would make a write or a ``rmtree`` land
wherever the link points. We refuse such a directory before the run writes anything
(:func:`check_no_links`), and write each file to a temporary file beside it and rename it into place
(:func:`write_text_atomic`): a rename replaces a link itself, never its target, and a reader never
sees half a file. ``experiments_dir`` itself may be a link (a scratch disk mounted under the
project): it is the run's own directory and what lies under it that must hold real files.

Strings read from files a run did not write (paths, keys) are shown with ``repr`` in messages, so a
newline or a terminal escape in one cannot forge a log line.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def links_in(run_dir: Path) -> list[Path]:
    """Every symbolic link at or under ``run_dir`` (the walk follows none)."""
    if run_dir.is_symlink():
        return [run_dir]
    if not run_dir.is_dir():
        return []
    found = []
    for root, dirs, files in os.walk(run_dir, followlinks=False):
        for name in [*dirs, *files]:
            path = Path(root) / name
            if path.is_symlink():
                found.append(path)
    return sorted(found)


def check_no_links(run_dir: Path) -> None:
    """Refuse a run directory that holds a symbolic link, naming each (before anything is written).

    Raises:
        ValueError: naming the links and what to do.
    """
    links = links_in(run_dir)
    if links:
        shown = ", ".join(repr(str(p)) for p in links[:10]) + (
            f" and {len(links) - 10} more" if len(links) > 10 else ""
        )
        raise ValueError(
            f"run directory {str(run_dir)!r} holds symbolic links ({shown}): a run writes and deletes files "
            f"in its directory, and would follow them outside it. Replace them with the files themselves, or "
            f"run under another run_name (or experiments_dir)"
        )


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder, then rename it: the
    rename replaces a link at ``path`` rather than writing through it, and readers see old or new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
