"""Parameter accounting, the ground the paper's "< 25 % of LoRA's parameters" claim stands on.

Conventions (every GLUE PEFT paper's): ``adapter`` counts the trainable adapter parameters and
excludes the task head, which every method trains identically; shared tensors count once.
Closed forms for the common cases live here too, so tests and tables can check counts against
arithmetic rather than against themselves.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import nn

from aslora.adapters.dispatch import head_module_names, is_head_parameter
from aslora.adapters.pools import find_pools


@dataclass(frozen=True)
class ParameterCounts:
    total: int
    """Every parameter of the model, shared tensors once."""
    trainable: int
    """Parameters with ``requires_grad``, shared tensors once."""
    adapter: int
    """Trainable parameters outside the task head: what the papers report."""
    head: int
    """Trainable parameters of the task head."""
    stored: int
    """Numbers a saved adapter holds: adapter + head + frozen tensors it cannot do without
    (VeRA's random projections when PEFT's ``save_projection`` is on)."""
    num_A: int | None = None
    """Distinct A matrices (shared-pool adapters only)."""
    num_distinct_B: int | None = None
    """Distinct B matrices left (shared-pool adapters only; drops by one per ASLoRA tie)."""

    def as_dict(self) -> dict[str, int | None]:
        return asdict(self)


def count_parameters(model: nn.Module) -> ParameterCounts:
    """Count ``model``'s parameters by role. Works on meta-device models (no data is read).

    For ASLoRA the counts are of the adapter as it is now: the live B's only (``num_distinct_B``
    of them in all), so the count drops by one B per tie. With several adapters, each counts."""
    heads = head_module_names(model)
    container = find_pools(model)
    pools = list(container.aslora_pool.values()) if container is not None else []
    live: dict[int, int] = {}  # a retired B counts 0: it is allocated, but no layer reads it
    for pool in pools:
        live.update(pool.live_numel())
    total = trainable = head = 0
    for name, parameter in model.named_parameters():  # named_parameters de-duplicates shared tensors
        n = live.get(id(parameter), parameter.numel())
        total += n
        if not parameter.requires_grad:
            continue
        trainable += n
        if is_head_parameter(name, heads):
            head += n
    adapter = trainable - head
    return ParameterCounts(
        total=total,
        trainable=trainable,
        adapter=adapter,
        head=head,
        stored=trainable + _frozen_stored_tensors(model),
        num_A=sum(len(pool.lora_A) for pool in pools) if pools else None,
        num_distinct_B=sum(pool.num_distinct_B for pool in pools) if pools else None,
    )


def _frozen_stored_tensors(model: nn.Module) -> int:
    """VeRA's frozen shared projections, counted once, when PEFT saves them with the adapter."""
    peft_config = getattr(model, "peft_config", None)
    if not peft_config:
        return 0
    config = next(iter(peft_config.values()))
    if type(config).__name__ != "VeraConfig" or not config.save_projection:
        return 0
    seen: dict[int, int] = {}
    for name, buffer in model.named_buffers(remove_duplicate=True):
        if ".vera_A." in f".{name}." or ".vera_B." in f".{name}.":
            seen[id(buffer)] = buffer.numel()
    return sum(seen.values())


# ---------------------------------------------------------------------------------------------
# closed forms: a list of (in_features, out_features) per adapted module, in forward order
def lora_parameter_count(shapes: list[tuple[int, int]], r: int) -> int:
    """LoRA: ``Σ_i r·(d_in_i + d_out_i)``."""
    return sum(r * (d_in + d_out) for d_in, d_out in shapes)


def vera_parameter_count(shapes: list[tuple[int, int]], r: int) -> int:
    """VeRA: per layer a scaling vector ``d ∈ R^r`` and ``b ∈ R^{d_out}``: ``Σ_i (r + d_out_i)``."""
    return sum(r + d_out for _, d_out in shapes)


def shared_lora_parameter_count(r: int, a_in_features: list[int], b_out_features: list[int]) -> int:
    """ASLoRA / ShareLoRA: ``r · (Σ_A d_in + Σ_B d_out)`` over the distinct A's and the B's left.

    RoBERTa-base q,v, r = 8, one global A: before merges ``8·(768 + 24·768) = 153,600``; after
    7 ties per module type (10 B's left) ``8·(768 + 10·768) = 67,584``.
    """
    return r * (sum(a_in_features) + sum(b_out_features))


def tied_lora_parameter_count(
    r: int, a_in_features: list[int], b_out_features: list[int], shapes: list[tuple[int, int]]
) -> int:
    """Tied-LoRA (vBuA): the shared A's and B's plus per-layer ``u ∈ R^r`` and ``v ∈ R^{d_out}``."""
    return shared_lora_parameter_count(r, a_in_features, b_out_features) + sum(r + d_out for _, d_out in shapes)


def fraction_of(counts: ParameterCounts, reference: int) -> float:
    """``counts.adapter / reference``, e.g. against LoRA's count for the same targets."""
    if reference <= 0:
        raise ValueError(f"reference parameter count {reference} must be positive")
    return counts.adapter / reference
