"""The lines a run prints: one per epoch, one per tie."""

from __future__ import annotations

from typing import Any


def describe_epoch(record: dict[str, Any], epochs: int, metric: str, result: Any) -> str:
    """``epoch 1/2 · train loss 0.5123 · val accuracy 0.7969, f1 0.8222 · test … · best: epoch 1 (0.7969)``"""
    scores = lambda split: ", ".join(f"{k} {v:.4f}" for k, v in record[split].items())
    parts = [
        f"epoch {record['epoch']}/{epochs}",
        f"train loss {record['train_loss']:.4f}" if record["train_loss"] is not None else "train loss —",
        f"val {scores('val')}",
    ]
    if "test" in record:
        parts.append(f"test {scores('test')}")
    if "num_distinct_B" in record:
        parts.append(f"{record['num_distinct_B']} B's")
    parts.append(f"best: epoch {result.best_epoch} ({metric} {result.best_metric:.4f})")
    return " · ".join(parts)


def describe_tie(event: Any, pool: Any) -> str:
    """``tie at step 158 · query: layers 0, 1 now share one B (query_0 → query_1, distance 0.687)``"""
    layer_of = {slot.module_name: slot.layer for slot in pool.slots.values()}
    sharing = ", ".join(str(layer_of[name]) for name in event.layers_sharing)
    return (
        f"tie at step {event.step} · {event.group}: layers {sharing} now share one B "
        f"({event.retired} → {event.kept}, distance {event.distance:.4g})"
    )
