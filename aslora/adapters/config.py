"""Typed configurations of the adapters built on the shared-pool machinery.

Every option the ASLoRA paper (Hu et al., arXiv 2412.10135) leaves ambiguous is a field here with
a documented default; the reasons cite ``docs/paper-notes.md`` (labels [P] paper, [R] third-party
re-implementation that cites the paper's equations, [I] our inference).

Field names reuse PEFT's where the concept is the same (``r``, ``lora_alpha``, ``lora_dropout``,
``target_modules``, ``modules_to_save``); new knobs are named after what they mean, with their unit.

The configs are ``peft.PeftConfig`` dataclasses (as PEFT's own ``LoraConfig`` and ``VeraConfig``
are), so ``peft.get_peft_model(model, ASLoRAConfig(...))``, ``PeftModel.from_pretrained`` and TRL's
``SFTTrainer(peft_config=...)`` take them; ``aslora.integrations.peft`` registers the tuner.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Optional, Sequence

from peft import PeftConfig

from aslora.adapters.schedule import MergeSchedule

DEFAULT_MERGE_START_FRACTION = 0.1
"""T_s as a fraction of the run when neither ``merge_start_step`` nor a fraction is given."""
DEFAULT_MERGE_SPAN_FRACTION = 0.6
"""Without ``merge_interval_steps`` or a fraction, the ties spread over this fraction of the run
after T_s: ``m = 0.6 / max_merges``, so the last tie lands at 70 % of any run whatever the cap.
The one home of the shipped schedule: ``configs/adapter/aslora.yaml`` reads both constants
(``${aslora_default:...}``) and ``tests/test_configs.py`` checks the two agree."""


def default_merge_interval_fraction(most_merges: int) -> float:
    """``m`` as a fraction of the run for a cap of ``most_merges`` ties: ``0.6 / most_merges``."""
    return DEFAULT_MERGE_SPAN_FRACTION / max(1, most_merges)


A_SHARING_CHOICES = ("global", "per_module")
PEFT_TYPE_NAMES = {
    "SharedLoRAConfig": "SHAREDLORA",
    "ShareLoRAConfig": "SHARELORA",
    "TiedLoRAConfig": "TIEDLORA",
    "ASLoRAConfig": "ASLORA",
}
"""The ``peft_type`` each config writes (PEFT's ``PeftType`` enum has no entry for them: see
``aslora.integrations.peft``)."""


class PeftTypeName(str):
    """A ``peft_type`` for a method PEFT's ``PeftType`` enum does not list. It is the string where
    PEFT keys its tables and writes ``adapter_config.json``, and it reads as a ``PeftType`` member
    elsewhere: ``.value`` (transformers' adapter API reads ``peft_type.value``) and
    ``str() == "PeftType.ASLORA"`` (PEFT's model status takes the name after the dot)."""

    @property
    def value(self) -> str:
        return str.__str__(self)

    def __str__(self) -> str:
        return f"PeftType.{self.value}"

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


MERGE_CANDIDATE_CHOICES = ("adjacent", "all")
MERGE_SCOPE_CHOICES = ("per_module", "joint")
MERGE_SELECTION_CHOICES = ("similarity", "random", "fixed")


def _require_choice(name: str, value: object, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not one of {list(choices)}")


def _normalise_targets(value: object) -> str | tuple[str, ...]:
    """PEFT semantics: a string is a regex that must match the full module name; a list of
    strings matches a module whose name equals an entry or ends with ``"." + entry``."""
    if value is None:  # PEFT's per-architecture default, resolved when the model is known (inject.resolve_targets)
        return None
    if isinstance(value, str):
        if not value:
            raise ValueError("target_modules='' matches nothing; give module names such as ['query', 'value']")
        return value
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) and v for v in value):
        return tuple(value)
    raise ValueError(f"target_modules={value!r} must be a non-empty list of module names or a regex string")


@dataclass
class SharedLoRAConfig(PeftConfig):
    """Fields common to every adapter whose low-rank factors live in one model-level pool.

    Layer ``i`` computes ``h_i = W_i x + (lora_alpha / r) · B_{g(i)} · A_{a(i)} · dropout(x)``
    (LoRA, Hu et al. 2021, Eq. 3), where the maps ``a`` and ``g`` say which shared A and which B
    each adapted layer uses. Shapes follow ``loralib``: ``A ∈ R^{r×d_in}``, ``B ∈ R^{d_out×r}``;
    A is Kaiming-uniform(a=√5), B is zero, so ``ΔW = 0`` at initialisation.
    """

    r: int = 8
    """Rank of every low-rank factor. ASLoRA paper, Appendix Table 5 (MRPC): r = 8 [R]."""

    lora_alpha: float = 16.0
    """Scaling numerator: ``ΔW = (lora_alpha / r) · B · A``. Table 5: α = 16 [R]."""

    lora_dropout: float = 0.0
    """Dropout on the adapter input. Table 5 lists none; LoRA's GLUE recipes use 0 for RoBERTa."""

    target_modules: str | Sequence[str] | None = ("query", "value")
    """Which ``nn.Linear`` modules to adapt (PEFT semantics). ASLoRA adapts W_Q and W_V on
    RoBERTa GLUE [R]; use ``["q_proj", "v_proj"]`` for Llama-family models. ``None``: PEFT LoRA's
    default for the model's architecture (``query``/``value`` for BERT and RoBERTa, ``q_proj``/
    ``v_proj`` for Llama — the paper's targets), looked up when the adapter is applied."""

    modules_to_save: Optional[list[str]] = None
    """PEFT's: modules trained and saved whole beside the adapter (the task head). Under
    ``get_peft_model`` with ``task_type="SEQ_CLS"`` PEFT sets it to the classifier; with
    ``aslora.apply_adapter`` it replaces the default heads (``classifier``, ``score``)."""

    a_sharing: Literal["global", "per_module"] = "global"
    """``global``: one A shared by every adapted module that reads the same input width — one A
    in all for RoBERTa q,v and Llama q,v (§3.1, "global sharing" [P]; the parameter arithmetic in
    paper-notes favours one A for q and v [I]). Modules with another input width get their own A
    (a shape constraint, reported by ``count_parameters(...).num_A``). ``per_module``: one A per
    module type (``query``, ``value``), the ShareLoRA convention."""

    init_weights: bool = True
    """PEFT's: ``True`` starts every B at zero, so ``ΔW = 0`` at initialisation (LoRA's init, the
    only one to train from). ``False`` draws the B's at random — ``ΔW ≠ 0`` from the start, which
    is what PEFT's generic tests use to check that saving, loading and merging keep the update."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.peft_type = PeftTypeName(PEFT_TYPE_NAMES[type(self).__name__])
        if not isinstance(self.r, int) or isinstance(self.r, bool) or self.r <= 0:
            raise ValueError(f"r={self.r!r} must be a positive integer")
        if not _is_finite_number(self.lora_alpha) or self.lora_alpha <= 0:
            raise ValueError(f"lora_alpha={self.lora_alpha!r} must be a positive number")
        if not _is_finite_number(self.lora_dropout) or not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"lora_dropout={self.lora_dropout!r} must be in [0, 1)")
        self.target_modules = _normalise_targets(self.target_modules)
        _require_choice("a_sharing", self.a_sharing, A_SHARING_CHOICES)
        if not isinstance(self.init_weights, bool):
            raise ValueError(f"init_weights={self.init_weights!r} must be True or False")

    @property
    def scaling(self) -> float:
        return self.lora_alpha / self.r


@dataclass
class ShareLoRAConfig(SharedLoRAConfig):
    """ShareLoRA (Song et al., arXiv 2406.10785): A shared across layers per module type, one B
    per layer, never merged. Equivalent to ASLoRA with ``max_merges=0`` and
    ``a_sharing="per_module"``."""

    a_sharing: Literal["global", "per_module"] = "per_module"


@dataclass
class TiedLoRAConfig(SharedLoRAConfig):
    """Tied-LoRA (Renduchintala et al., NAACL 2024), its best "vBuA" variant: one A and one B
    shared by all layers (per module type, since B's shape is the module's output width), and
    per-layer trainable scaling vectors ``u ∈ R^r`` and ``v ∈ R^{d_out}``:
    ``ΔW_i x = (α/r) · diag(v_i) · B · diag(u_i) · A · x``.

    Initialisation (ours, documented): A Kaiming, B zeros, ``u = v = 1`` — so ``ΔW = 0`` at
    init exactly as in LoRA, and B receives gradients from the first step. The default
    ``a_sharing="per_module"`` gives 43,200 parameters on RoBERTa-base q,v at r = 8, the
    "0.043M" that VB-LoRA's Table 1 quotes for Tied-LoRA [I]."""

    a_sharing: Literal["global", "per_module"] = "per_module"


@dataclass
class ASLoRAConfig(SharedLoRAConfig):
    """ASLoRA (Hu et al., arXiv 2412.10135, §3): one trainable A shared globally, one B per layer
    at first; B's whose running means are closest are tied during training.

    Running mean (Eq. 3 [R]): ``B̄_i^t = (1/t) Σ_{k≤t} B_i^k``, sampled after each optimizer step.
    Distance (Eq. 4 [R]): ``‖B̄_i − B̄_j‖_F``. Schedule (Algorithm 1 [R]): a merge event happens at
    step ``t`` when ``t > T_s`` and ``(t − T_s) mod m = 0`` — the first at ``T_s + m``. At each
    event, each merge group (a module type under ``merge_scope="per_module"``) ties at most one
    pair: the closest candidate pair, if within ``merge_distance_threshold``. The lower layer then
    uses the upper layer's B (tie, not average), until ``max_merges`` ties in that group.

    The schedule is given in optimizer steps (``merge_start_step``, ``merge_interval_steps``,
    the paper's T_s = 320 and m = 240 for 30-epoch GLUE runs) or as fractions of the run's total
    steps (``merge_start_fraction``, ``merge_interval_fraction``), so a short run still reaches
    its merges. Exactly one of each pair is set.

    Decisions the paper leaves open, and ours:
      * the tied group keeps the upper B's running mean and Adam moments; the retired B's row
        stays allocated in its bank and is read by no layer again (its gradient is zero), so the
        parameter set never changes (see ``aslora/adapters/pool.py``);
      * ``merge_update_ratio`` λ: the survivor becomes ``(1−λ)·B_upper + λ·B_lower``.
    """

    merge_start_step: int | None = None
    """T_s in optimizer steps; the paper's MRPC value is 320 (Table 5 [R], for 30-epoch runs).
    Give it or ``merge_start_fraction``; with neither, ``merge_start_fraction`` = 0.1."""

    merge_interval_steps: int | None = None
    """m in optimizer steps; the paper's MRPC value is 240 (Table 5 [R]). Give it or
    ``merge_interval_fraction``; with neither, ``merge_interval_fraction`` = 0.6 / ``max_merges``."""

    merge_start_fraction: float | None = None
    """T_s as a fraction of the run's total optimizer steps, in [0, 1)."""

    merge_interval_fraction: float | None = None
    """m as a fraction of the run's total optimizer steps, in (0, 1). The default pair (0.1, 0.6 /
    ``max_merges``) puts the last merge event at 70 % of any run (7 events: 18.6 %, 27.1 %, …): steps are the paper's
    unit, but 320 + 7 × 240 = 2,000 steps would not fit a short run, and a library default must
    work for any run length (the paper's steps are one config away:
    ``merge_start_step=320, merge_interval_steps=240``)."""

    max_merges: int | dict[str, int] = 7
    """Most ties per merge group (per module type under ``merge_scope="per_module"``), or a dict
    from group name to its own cap (``{"query": 7, "value": 5}``) — for partial targets, where
    groups differ in size and one number would be capped by the smallest. Algorithm 1 has no
    stopping rule, yet without one 12 layers collapse to one B [I]; 7 per module type leaves 5 B's
    of 12 and puts RoBERTa-base q,v at 67,584 parameters, 22.9 % of LoRA's 294,912 — under the
    paper's "< 25 %" claim [P]. 0 disables merging (ShareLoRA with global A)."""

    merge_distance_threshold: float | None = None
    """Tie the closest pair only if its distance is at most this (``None``: always tie until
    ``max_merges``). The "merge threshold" that sweeps vary."""

    merge_candidates: Literal["adjacent", "all"] = "adjacent"
    """``adjacent``: only groups of neighbouring layers may tie, as the paper's prose describes
    and as keeps sharing maps contiguous [R]; ``all``: every pair, as Algorithm 1 is written [R]."""

    merge_update_ratio: float = 0.0
    """λ in [0, 1]: the tied B is ``(1−λ)·B_upper + λ·B_lower``. 0 (default): the lower layer
    takes the upper's B exactly, as the method text says; Table 5 lists λ = 0.5 without the text
    ever using it [R]."""

    merge_scope: Literal["per_module", "joint"] = "per_module"
    """``per_module``: B's tie only within one module type (Figure 3 shows separate maps for query
    and value [R]); ``joint``: any two B's of the same shape may tie, and under ``adjacent`` a
    query and value of the same layer count as neighbours."""

    merge_selection: Literal["similarity", "random", "fixed"] = "similarity"
    """Which candidate pair ties at an event. ``similarity``: the closest running means (the
    method). Ablations: ``random``, a uniformly random candidate pair (seeded by the merge group and
    step, so every process draws the same); ``fixed``, the lowest candidate pair in layer order
    (layer 0 into 1, then into 2, …), ignoring similarity."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _require_choice("merge_selection", self.merge_selection, MERGE_SELECTION_CHOICES)
        if self.merge_start_step is None and self.merge_start_fraction is None:
            self.merge_start_fraction = DEFAULT_MERGE_START_FRACTION
        _check_schedule_pair(
            "merge_start_step",
            self.merge_start_step,
            "merge_start_fraction",
            self.merge_start_fraction,
            min_step=0,
            fraction_low_open=False,
        )
        caps = self.max_merges.values() if isinstance(self.max_merges, dict) else [self.max_merges]
        if isinstance(self.max_merges, dict) and not self.max_merges:
            raise ValueError("max_merges={} names no merge group; give an integer or {group: cap, ...}")
        if not all(_is_int(c) and c >= 0 for c in caps) or (
            isinstance(self.max_merges, dict) and not all(isinstance(k, str) for k in self.max_merges)
        ):
            raise ValueError(
                f"max_merges={self.max_merges!r} must be a non-negative integer or a dict "
                f"from merge group name to a non-negative integer"
            )
        if isinstance(self.max_merges, dict):
            self.max_merges = dict(self.max_merges)  # a plain dict (Hydra hands over its own mapping type)
        if self.merge_interval_steps is None and self.merge_interval_fraction is None:
            self.merge_interval_fraction = default_merge_interval_fraction(self.most_merges)
        _check_schedule_pair(
            "merge_interval_steps",
            self.merge_interval_steps,
            "merge_interval_fraction",
            self.merge_interval_fraction,
            min_step=1,
            fraction_low_open=True,
        )
        if self.merge_distance_threshold is not None and (
            not _is_finite_number(self.merge_distance_threshold) or self.merge_distance_threshold < 0
        ):
            raise ValueError(
                f"merge_distance_threshold={self.merge_distance_threshold!r} must be a non-negative number or None"
            )
        _require_choice("merge_candidates", self.merge_candidates, MERGE_CANDIDATE_CHOICES)
        _require_choice("merge_scope", self.merge_scope, MERGE_SCOPE_CHOICES)
        if not _is_finite_number(self.merge_update_ratio) or not 0.0 <= self.merge_update_ratio <= 1.0:
            raise ValueError(f"merge_update_ratio={self.merge_update_ratio!r} must be in [0, 1]")

    @property
    def most_merges(self) -> int:
        """The largest per-group cap: how many merge events the schedule must hold."""
        return max(self.max_merges.values()) if isinstance(self.max_merges, dict) else self.max_merges

    def merges_allowed(self, group: str) -> int:
        """The cap of one merge group. Raises ``ValueError`` for a dict that does not name it."""
        if not isinstance(self.max_merges, dict):
            return self.max_merges
        if group not in self.max_merges:
            raise ValueError(f"max_merges={self.max_merges!r} has no entry for merge group {group!r}")
        return self.max_merges[group]

    def resolve_schedule(self, total_steps: int | None) -> MergeSchedule:
        """The schedule in optimizer steps for a run of ``total_steps`` optimizer steps.

        Raises ``ValueError`` when the run is too short for the ``max_merges``-th event to fire —
        a schedule that can never complete is a configuration error, not a silent no-op.
        """
        uses_fraction = self.merge_start_fraction is not None or self.merge_interval_fraction is not None
        if self.most_merges == 0 and total_steps is None:  # no merge events: nothing to place
            return MergeSchedule(start_step=0, interval_steps=1, max_events=0)
        if uses_fraction and total_steps is None:
            raise ValueError("the merge schedule is given as fractions, so total_steps must be given")
        if total_steps is not None and (not isinstance(total_steps, int) or total_steps <= 0):
            raise ValueError(f"total_steps={total_steps!r} must be a positive integer")
        if self.merge_start_fraction is not None:
            start = math.floor(self.merge_start_fraction * total_steps)
        else:
            start = self.merge_start_step
        if self.merge_interval_fraction is not None:
            interval = max(1, math.floor(self.merge_interval_fraction * total_steps))
        else:
            interval = self.merge_interval_steps
        schedule = MergeSchedule(start_step=start, interval_steps=interval, max_events=self.most_merges)
        if total_steps is not None and self.most_merges > 0 and schedule.last_event_step > total_steps:
            fit = max(0, (total_steps - start) // interval)
            raise ValueError(
                f"merge schedule cannot complete: merge event {self.most_merges} (max_merges) would be at step "
                f"{schedule.last_event_step} = merge_start_step {start} + {self.most_merges} × merge_interval_steps "
                f"{interval}, but the run has only total_steps={total_steps}, where {fit} merge events fit. "
                f"Set max_merges={fit} or fewer"
                + (
                    ", or train longer"
                    if uses_fraction
                    else f", or give the schedule as fractions of the run (merge_start_step=None, merge_interval_steps=None, "
                    f"merge_start_fraction=0.1, merge_interval_fraction={round(0.56 / max(self.most_merges, 1), 4)})"
                )
            )
        return schedule


@dataclass
class FullFinetuneConfig:
    """Full fine-tuning: every parameter of the model trains. The reference upper bound."""


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_schedule_pair(
    step_name: str,
    step_value: object,
    fraction_name: str,
    fraction_value: object,
    *,
    min_step: int,
    fraction_low_open: bool,
) -> None:
    if (step_value is None) == (fraction_value is None):
        raise ValueError(
            f"give one of {step_name} (got {step_value!r}) and {fraction_name} (got {fraction_value!r}), not both"
        )
    if step_value is not None:
        if not isinstance(step_value, int) or isinstance(step_value, bool) or step_value < min_step:
            raise ValueError(f"{step_name}={step_value!r} must be an integer >= {min_step}")
    else:
        if not _is_finite_number(fraction_value):
            raise ValueError(f"{fraction_name}={fraction_value!r} must be a number")
        low_ok = fraction_value > 0 if fraction_low_open else fraction_value >= 0
        if not low_ok or fraction_value >= 1:
            bound = "(0, 1)" if fraction_low_open else "[0, 1)"
            raise ValueError(f"{fraction_name}={fraction_value!r} must be in {bound}")
