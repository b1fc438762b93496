"""How a score from ``results/runs.csv`` is shown on every page: its scale, digits, unit and row name.

One place for it, so the protocol tables, the lr stage, the seed-spread page and the earlier runs'
prose cannot show the same number two ways. Accuracy-like metrics are tabled ×100 with one decimal;
a held-out loss (``LOWER_IS_BETTER``) as it is, with three, since adapters differ by hundredths.
A row with runs from a tree with uncommitted changes says how many (``dirty_suffix``, ``DIRTY_NOTE``).
"""

from __future__ import annotations

from aslora.harness.measuring.display import DISPLAY_NAMES
from aslora.harness.measuring.metrics import LOWER_IS_BETTER


def row_name(adapter: str, variant: str) -> str:
    """A row's name: the adapter's display name and its size variant (``spread`` names arms by it too)."""
    return DISPLAY_NAMES.get(adapter, adapter) + (f" [{variant}]" if variant else "")


def lower_is_better(row: dict) -> bool:
    return row["main_metric"] in LOWER_IS_BETTER


def scale(row: dict) -> float:
    """A score as tabled: accuracy-like metrics ×100, a loss (``LOWER_IS_BETTER``) as it is."""
    return 1.0 if lower_is_better(row) else 100.0


def unit_label(row: dict) -> str:
    """What a score column needs said beside its metric: accuracy is shown ×100, a loss falls."""
    return " ×100" if scale(row) == 100 else " (lower is better)"


def score_digits(row: dict) -> int:
    """Accuracy ×100 to one decimal; a held-out loss (~2.2 nats a token) to three."""
    return 3 if lower_is_better(row) else 1


DIRTY_NOTE = (
    "“k dirty”: k of the row's runs came from a tree with uncommitted changes (the report's `git_dirty`): "
    "their code differs from their commit by a diff those reports did not keep (results/README reports dirty "
    "rows rerun at clean commits)."
)
"""What a table that marks dirty runs says about them, once, under or above the table."""


def is_dirty(flag: bool | str | None) -> bool:
    """A run's ``git_dirty`` — a bool in a report, ``"True"``/``"False"`` in runs.csv — as a bool."""
    return flag is True or str(flag) == "True"


def dirty_suffix(flags: list[bool | str | None]) -> str:
    """`` (3 dirty)`` after a row's seed count when 3 of its runs came from a dirty tree; else nothing."""
    count = sum(map(is_dirty, flags))
    return f" ({count} dirty)" if count else ""
