"""Parity: our B's with their layer→B map train exactly like the method as first written — one
``nn.Parameter`` per B, a tie pointing the lower layers at the upper B and dropping the retired B
from the optimizer — for AdamW, for torch's and transformers' Adafactor (factored second moments,
per matrix) and for Muon on the 2-D factors (orthogonalised updates, per matrix). Optimizers that
act on whole matrices are why every B is its own 2-D parameter: stacked into one tensor, a B
would be moved by its neighbours. The reference below is written from the paper's description
(Eq. 3 running means, Eq. 4 distances, Algorithm 1 schedule, adjacent candidates), not from our
code, and shares nothing with it but the initial values."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import aslora
from aslora.adapters.layers import SharedLoRALinear
from tests.conftest import randomise_adapter, tiny_bert

STEPS, START, INTERVAL, MAX_MERGES = 14, 3, 2, 3


class ReferenceLayer(nn.Module):
    def __init__(self, base: nn.Linear, owner: "Reference", name: str) -> None:
        super().__init__()
        self.base, self.name = base, name
        self.__dict__["owner"] = owner

    def forward(self, x):
        b = self.owner.B[self.owner.reads[self.name]]
        return self.base(x) + F.linear(F.linear(x, self.owner.A), b) * self.owner.scaling


class Reference(nn.Module):
    """One A, one nn.Parameter per B, a Python dict saying which B each layer reads."""

    def __init__(self, adapted: nn.Module) -> None:
        super().__init__()
        pool = aslora.find_pool(adapted)
        self.update_ratio = pool.config.merge_update_ratio
        self.scaling = pool.config.scaling
        self.model = copy.deepcopy(adapted)
        self.A = nn.Parameter(pool.lora_A["global"].detach().clone())
        self.B = nn.ParameterDict({name: nn.Parameter(pool.lora_B[name].detach().clone()) for name in pool.row_of_name})
        self.means = {name: torch.zeros_like(b) for name, b in self.B.items()}
        self.reads = {name: name for name in self.B}
        self.t = 0
        for module_name, module in list(self.model.named_modules()):
            if isinstance(module, SharedLoRALinear):
                parent, _, child = module_name.rpartition(".")
                setattr(
                    self.model.get_submodule(parent),
                    child,
                    ReferenceLayer(module.base_layer, self, module.slot["default"].key),
                )
        del self.model.shared_lora

    def forward(self, **batch):
        return self.model(**batch)

    @torch.no_grad()
    def after_step(self, t: int, optimizer: torch.optim.Optimizer) -> list[tuple]:
        self.t += 1
        for name, b in self.B.items():  # Eq. 3 as a sum: B̄ = (1/t) Σ B^k
            self.means[name] = self.means[name] + (b - self.means[name]) / self.t
        if not (t > START and (t - START) % INTERVAL == 0 and (t - START) // INTERVAL <= MAX_MERGES):
            return []
        ties = []
        for module_type in ("query", "value"):
            live = sorted(
                {b for n, b in self.reads.items() if n.startswith(module_type)}, key=lambda n: int(n.split("_")[1])
            )
            layers = {b: [int(n.split("_")[1]) for n, r in self.reads.items() if r == b] for b in live}
            pairs = [
                (lo, hi)
                for i, lo in enumerate(live)
                for hi in live[i + 1 :]
                if any(abs(x - y) <= 1 for x in layers[lo] for y in layers[hi])
            ]
            lower, upper = min(pairs, key=lambda p: torch.dist(self.means[p[0]].double(), self.means[p[1]].double()))
            distance = float(torch.dist(self.means[lower].double(), self.means[upper].double()))
            for n, r in self.reads.items():
                if r == lower:
                    self.reads[n] = upper
            retired = self.B[lower]
            self.B[upper].mul_(1 - self.update_ratio).add_(retired, alpha=self.update_ratio)
            for group in optimizer.param_groups:  # the old optimizer surgery
                group["params"] = [p for p in group["params"] if p is not retired]
            optimizer.state.pop(retired, None)
            ties.append((t, module_type, upper, lower, distance))
        return ties


def _optimizer(name: str, model: nn.Module) -> torch.optim.Optimizer:
    """Every trainable parameter in one optimizer (Muon: the 2-D adapter factors; AdamW the rest,
    as Muon's authors use it — chained in one object so the surgery sees one ``param_groups``)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if name == "adamw":
        return torch.optim.AdamW(params, lr=2e-2, weight_decay=0.1)
    if name == "adafactor":
        return torch.optim.Adafactor(params, lr=2e-2, weight_decay=0.1)
    if name == "hf_adafactor":
        from transformers.optimization import Adafactor

        return Adafactor(params, lr=2e-2, scale_parameter=False, relative_step=False, warmup_init=False)
    factors = {id(p) for n, p in model.named_parameters() if p.requires_grad and p.dim() == 2 and _is_factor(n)}
    return _Chained(
        torch.optim.Muon([p for p in params if id(p) in factors], lr=2e-2, weight_decay=0.1),
        torch.optim.AdamW([p for p in params if id(p) not in factors], lr=2e-2, weight_decay=0.1),
    )


def _newton_schulz_float32(grad: torch.Tensor, ns_coefficients, ns_steps: int, eps: float) -> torch.Tensor:
    """Muon's quintic Newton–Schulz orthogonalisation, X ← aX + (bG + cG²)X with G = XXᵀ after
    X = grad/‖grad‖_F (wide side first), in float32 instead of torch's bfloat16.

    Why: ours and the reference sum a shared B's gradient in different orders, so the two gradients
    differ in float32's last bits; torch rounds them to bfloat16 (8 mantissa bits) before iterating,
    and whether a last-bit difference flips a bf16 rounding depends on the CPU's kernels — on an
    AMD EPYC it does (losses 1.7e-4 apart), on an Intel Xeon it did not. In float32 the two stay
    within float32 rounding, so the test sees the surgery, not bf16's luck."""
    a, b, c = ns_coefficients
    x = grad.float()
    tall = x.size(0) > x.size(1)
    x = (x.T if tall else x) / x.norm().clamp(min=eps)
    for _ in range(ns_steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x


def _is_factor(name: str) -> bool:
    return ".lora_A." in name or ".lora_B." in name or name in ("A",) or name.startswith("B.")


class _Chained(torch.optim.Optimizer):
    """Two optimizers stepped as one; ``param_groups`` and ``state`` are both of theirs."""

    def __init__(self, *optimizers: torch.optim.Optimizer) -> None:
        self.optimizers = optimizers

    @property
    def param_groups(self):
        return [g for o in self.optimizers for g in o.param_groups]

    @property
    def state(self):
        return _ChainedState(self.optimizers)

    def step(self, closure=None):
        for o in self.optimizers:
            o.step()

    def zero_grad(self, set_to_none: bool = True):
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)


class _ChainedState:
    def __init__(self, optimizers):
        self.optimizers = optimizers

    def pop(self, key, default=None):
        for o in self.optimizers:
            o.state.pop(key, None)
        return default


def _train(model, after_step, input_ids, optimizer_name="adamw"):
    optimizer = _optimizer(optimizer_name, model)
    labels = torch.tensor([0, 1, 1])
    losses, ties = [], []
    for t in range(1, STEPS + 1):
        loss = model(input_ids=input_ids, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], 1.0)
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
        ties += after_step(t, optimizer)
    return losses, ties


@pytest.mark.parametrize("shape", [(16, 4), (4, 16)])
def test_the_float32_newton_schulz_is_torchs_up_to_bfloat16_rounding(shape):
    """The stand-in above computes what torch's Muon does, to bf16's precision (unit roundoff 2⁻⁸)."""
    from torch.optim import _muon

    grad = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    coefficients = (_muon.DEFAULT_A, _muon.DEFAULT_B, _muon.DEFAULT_C)
    ours = _newton_schulz_float32(grad, coefficients, _muon.DEFAULT_NS_STEPS, _muon.EPS)
    theirs = _muon._zeropower_via_newtonschulz(grad, coefficients, _muon.DEFAULT_NS_STEPS, _muon.EPS).float()
    assert ours.shape == theirs.shape == grad.shape
    torch.testing.assert_close(ours, theirs, rtol=0, atol=3e-2)
    assert not torch.allclose(ours, grad / grad.norm(), atol=3e-2)  # it did orthogonalise


@pytest.mark.parametrize(
    "update_ratio, optimizer_name",
    [(0.0, "adamw"), (0.5, "adamw"), (0.0, "adafactor"), (0.0, "hf_adafactor"), (0.5, "muon")],
)
def test_B_parameters_train_like_one_parameter_per_B_with_optimizer_surgery(
    update_ratio, optimizer_name, input_ids, monkeypatch
):
    if optimizer_name == "muon":  # torch 2.13's Muon calls this module function; raises if it is renamed
        monkeypatch.setattr(torch.optim._muon, "_zeropower_via_newtonschulz", _newton_schulz_float32)
    ours = aslora.apply_adapter(
        tiny_bert(layers=4),
        aslora.ASLoRAConfig(
            r=4,
            merge_start_step=START,
            merge_interval_steps=INTERVAL,
            max_merges=MAX_MERGES,
            merge_update_ratio=update_ratio,
        ),
    )
    randomise_adapter(ours, seed=5)
    for module in ours.modules():  # dropout off: two models must see the same function
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    reference = Reference(ours)
    ours.train(), reference.train()
    controller = aslora.MergeController(ours, total_steps=STEPS)

    our_losses, our_ties = _train(
        ours,
        lambda t, optimizer: [(e.step, e.group, e.kept, e.retired, e.distance) for e in controller.step(t)],
        input_ids,
        optimizer_name,
    )
    ref_losses, ref_ties = _train(reference, reference.after_step, input_ids, optimizer_name)

    assert len(our_ties) == len(ref_ties) == 2 * MAX_MERGES
    assert [t[:4] for t in our_ties] == [t[:4] for t in ref_ties]  # same pairs at the same steps
    for ours_tie, ref_tie in zip(our_ties, ref_ties, strict=True):
        assert ours_tie[4] == pytest.approx(ref_tie[4], rel=1e-5, abs=1e-7)
    torch.testing.assert_close(torch.tensor(our_losses), torch.tensor(ref_losses), rtol=1e-5, atol=1e-6)
    pool = aslora.find_pool(ours)
    assert pool.sharing_map() == reference.reads
    for name in pool.live_B_names():
        torch.testing.assert_close(pool.lora_B[name], reference.B[name], rtol=1e-5, atol=1e-6, msg=name)
    torch.testing.assert_close(pool.lora_A["global"], reference.A, rtol=1e-5, atol=1e-6)
