"""The small-data verdict as a figure: one row per comparison of the plan, in the plan's order.

Each row shows the confirmatory mean paired difference (A − B, in the plan's unit) at the primary
score rule with its 95 % t-interval and the word the plan assigns, over the shaded equivalence
margin (±``margin``, declared before the runs), and beneath it the same comparison on the
exploratory seeds 1–5 (hollow, grey) that suggested the plan. A comparison with no runs yet is
named as such; below ``MIN_INTERVAL_N`` seeds the mean is drawn without an interval, as the tables
print it. Written by ``python -m scripts.reports.smalldata_verdict`` from the outcomes it computed,
so the figure and ``verdict.md`` cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from scripts.reports.smalldata_outcomes import RULES, Outcome, planned_pairs, untested
from scripts.reports.stats import MIN_INTERVAL_N

WORD_COLOURS = {
    "worse": "#c0392b",
    "worse, within the margin": "#e67e22",
    "better": "#1e8449",
    "better, within the margin": "#58d68d",
    "equivalent": "#2e86c1",
    "inconclusive": "#7f8c8d",
}
EXPLORATORY_RULE = "best"
"""The exploratory runs scored test only at their best validation epoch: their rows use that rule."""


@dataclass(frozen=True)
class Row:
    family: str
    arms: tuple[str, str]
    """(A, B) as the plan names them."""
    confirmatory: Outcome | None
    """At the plan's primary rule (tested or not); ``None`` where the outcomes hold no such comparison."""
    exploratory: Outcome | None
    """Seeds 1–5 at :data:`EXPLORATORY_RULE`, where those runs pair; else ``None``."""

    @property
    def label(self) -> str:
        return " − ".join(self.arms)

    @property
    def paired(self) -> int:
        """Seeds run in both arms (at the primary rule)."""
        return self.confirmatory.n if self.confirmatory is not None else 0

    @property
    def tested(self) -> bool:
        """Enough seeds pair for a mean and a word (two or more)."""
        return self.confirmatory is not None and self.confirmatory.mean is not None


def forest_rows(plan: dict, outcomes: list[Outcome], exploratory: list[Outcome]) -> list[Row]:
    """One row per comparison of the plan's families, in the plan's order."""

    def find(pool: list[Outcome], rule: str, arms: tuple[str, str]) -> Outcome | None:
        return next((o for o in pool if o.rule == rule and (o.a, o.b) == arms), None)

    rows = []
    for family in plan["families"]:
        for c in family["comparisons"]:
            arms = (c["a"], c["b"])
            explored = find(exploratory, EXPLORATORY_RULE, arms)
            rows.append(
                Row(
                    family["name"],
                    arms,
                    find(outcomes, plan["primary_rule"], arms),
                    explored if explored is not None and explored.mean is not None else None,
                )
            )
    return rows


def plot(plan: dict, rows: list[Row], status: str, path: Path) -> None:
    """Draw ``rows`` (from :func:`forest_rows`) to ``path``; ``status`` heads the figure (e.g. PARTIAL)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    margin = plan["margin"]
    fig, ax = plt.subplots(figsize=(11, 0.7 * len(rows) + 2.2))
    band = ax.axvspan(-margin, margin, color="#2e86c1", alpha=0.10, lw=0, label=f"equivalence margin ±{margin:g}")
    ax.axvline(0, color="black", lw=0.8)
    ends = [margin, -margin]
    bare_mean = False  # some mean drawn without its interval (n < MIN_INTERVAL_N): the legend says what that is
    for i, row in enumerate(rows):
        y = -i
        o = row.confirmatory
        if not row.tested:
            ax.text(0, y, untested(row.paired), ha="center", va="center", fontsize=8, color="#7f8c8d", style="italic")
        else:
            colour = WORD_COLOURS.get(o.word or "", "#7f8c8d")
            if o.n >= MIN_INTERVAL_N:
                ax.plot([o.low, o.high], [y, y], color=colour, lw=2.4, solid_capstyle="butt")
                ends += [o.low, o.high]
            else:
                bare_mean = True
            ax.plot(o.mean, y, "o", color=colour, ms=7)
            ends.append(o.mean)
        e = row.exploratory
        if e is not None:
            ye = y - 0.28
            if e.n >= MIN_INTERVAL_N:
                ax.plot([e.low, e.high], [ye, ye], color="#95a5a6", lw=1.2)
                ends += [e.low, e.high]
            else:
                bare_mean = True
            ax.plot(e.mean, ye, "o", mfc="white", mec="#95a5a6", ms=5)
    span = max(abs(v) for v in ends) * 1.08
    ax.set_xlim(-span, span)
    for i, row in enumerate(rows):
        word = f"n = {row.paired} of {planned_pairs(plan, *row.arms)}"
        if row.tested:
            word += f" · {row.confirmatory.word}"
        ax.text(span * 1.02, -i, word, va="center", fontsize=8.5, weight="bold" if row.tested else "normal")
    ax.set_yticks([-i for i in range(len(rows))])
    ax.set_yticklabels([f"{row.label.replace(' − ', chr(10) + '− ')}  [{row.family}]" for row in rows], fontsize=8)
    ax.set_ylim(-len(rows) + 0.4, 0.6)
    ax.set_xlabel(
        f"A − B, {plan['unit']}: mean paired difference over seeds, 95 % t-interval (left of 0: A scores lower)"
    )
    ax.grid(axis="x", alpha=0.3)
    handles = [
        plt.Line2D(
            [], [], color="black", marker="o", lw=2.4, label=f"seeds {_seeds(plan)}, {RULES[plan['primary_rule']]}"
        ),
        plt.Line2D(
            [],
            [],
            color="#95a5a6",
            marker="o",
            mfc="white",
            lw=1.2,
            label="seeds 1–5 (exploratory), best validation epoch",
        ),
        band,
    ]
    if bare_mean:
        handles.insert(  # what a bare mean is, where one is drawn
            1,
            plt.Line2D(
                [], [], color="#7f8c8d", marker="o", lw=0, label=f"mean only: fewer than {MIN_INTERVAL_N} paired seeds"
            ),
        )
    ax.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.1),
        ncol=min(3, len(handles)),
        fontsize=7.5,
        frameon=False,
    )
    ax.set_title(
        f"Preregistered plan {plan['plan']} ({status})\nwords at α = {plan['alpha']}, Holm within each family; "
        "right: seeds paired (of those planned) and the plan's word",
        fontsize=9.5,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _seeds(plan: dict) -> str:
    """The confirmatory seed ranges, e.g. ``6–25 / 6–15``."""
    ranges = dict.fromkeys(f"{first}–{last}" for first, last in plan["seeds"].values())
    return " / ".join(ranges)
