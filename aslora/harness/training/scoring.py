"""Scoring a model on a held-out split: the loop's per-epoch evaluation and ``evaluate.py`` use the
same two functions on the same loaders (``batching.evaluation_loader``), so they agree exactly."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from aslora.harness.inputs.data import TaskData
from aslora.harness.inputs.instruct import IGNORE_INDEX
from aslora.harness.measuring.metrics import compute_metrics


@torch.no_grad()
def evaluate(
    model: nn.Module, loader: Any, data: TaskData, accelerator: Any, keep: list | None = None
) -> dict[str, float]:
    """The task's metrics (and, for classification, the mean cross-entropy) on ``loader``'s split.
    ``keep``: a list that receives the predicted class ids, in the loader's order (classification)."""
    if data.spec.kind == "causal_lm":
        return evaluate_causal_lm(model, loader, accelerator)
    model.eval()
    predictions, labels, nll = [], [], torch.zeros((), dtype=torch.float64)
    for batch in loader:
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        logits, batch_labels = accelerator.gather_for_metrics((logits, batch["labels"]))
        predictions.append(logits.squeeze(-1) if data.spec.is_regression else logits.argmax(-1))
        labels.append(batch_labels)
        if not data.spec.is_regression:
            nll += torch.nn.functional.cross_entropy(logits.float(), batch_labels, reduction="sum").double().cpu()
    p = torch.cat(predictions).float().cpu().numpy()
    y = torch.cat(labels).float().cpu().numpy()
    if data.spec.is_regression:
        return compute_metrics(data.spec.metrics, p, y)
    scores = compute_metrics(data.spec.metrics, p.astype(np.int64), y.astype(np.int64))
    if keep is not None:
        keep.extend(int(c) for c in p.astype(np.int64))
    # the mean cross-entropy: where accuracy plateaus, a rising held-out loss is what shows overfitting
    scores["loss"] = float(nll / max(len(y), 1))
    return scores


@torch.no_grad()
def evaluate_causal_lm(model: nn.Module, loader: Any, accelerator: Any) -> dict[str, float]:
    """Held-out token loss ``L = Σ −log p(y_t | y_<t) / N`` over the response tokens of every example
    (the prompt is masked), and perplexity ``exp(L)``. Summed over tokens, not averaged per batch,
    so the number does not depend on the batch size or on how examples fall into batches."""
    model.eval()
    nll, tokens = torch.zeros((), dtype=torch.float64), torch.zeros((), dtype=torch.float64)
    for batch in loader:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        labels = batch["labels"][:, 1:]
        mask = labels != IGNORE_INDEX
        losses = torch.nn.functional.cross_entropy(
            logits[:, :-1].flatten(0, 1).float(), labels.flatten().clamp(min=0), reduction="none"
        ).view_as(labels)
        per_example = torch.stack([(losses * mask).sum(1).double(), mask.sum(1).double()], dim=1)
        # per example, so accelerate can drop the duplicates it pads the last batch with under DDP
        per_example = accelerator.gather_for_metrics(per_example).cpu()
        nll += per_example[:, 0].sum()
        tokens += per_example[:, 1].sum()
    loss = float(nll / tokens.clamp(min=1))
    return {"loss": loss, "perplexity": math.exp(min(loss, 700.0))}
