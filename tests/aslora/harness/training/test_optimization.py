"""The optimizer's parameter groups: ``train.shared_a_lr`` gives the shared A (and only it) its own lr."""

import pytest
import torch

import aslora
from aslora.adapters.pools import find_pool
from aslora.harness.runs.train_settings import TrainSettings
from aslora.harness.training.optimization import param_groups
from tests.conftest import tiny_bert


def _settings(**kwargs) -> TrainSettings:
    return TrainSettings(lr=1e-2, epochs=1, batch_size=2, **kwargs)


def _model(config=None):
    model = aslora.apply_adapter(tiny_bert(), config or aslora.ASLoRAConfig(r=2, target_modules=["query", "value"]))
    for name, p in model.named_parameters():  # B starts at zero: give every B a gradient path to A
        if ".lora_B." in name:
            torch.nn.init.normal_(p, std=0.1)
    return model


def test_the_shared_a_gets_its_own_group_and_lr_and_a_step_moves_it_by_that_lr(input_ids):
    model = _model()
    a_params = list(find_pool(model).lora_A.values())
    groups = param_groups(model, _settings(shared_a_lr=1e-4))
    (a_group,) = [g for g in groups if any(p is a_params[0] for p in g["params"])]
    assert a_group["lr"] == 1e-4 and {id(p) for p in a_group["params"]} == {id(p) for p in a_params}
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert sorted(id(p) for g in groups for p in g["params"]) == sorted(trainable)  # each exactly once

    # plain SGD: every parameter moves by its group's lr × its gradient
    optimizer = torch.optim.SGD(groups, lr=1e-2)
    before = {id(p): p.detach().clone() for p in model.parameters() if p.requires_grad}
    model(input_ids=input_ids, labels=torch.tensor([0, 1, 1])).loss.backward()
    grads = {id(p): p.grad.detach().clone() for p in model.parameters() if p.requires_grad}
    optimizer.step()
    for p in a_params:
        assert grads[id(p)].abs().sum() > 0
        torch.testing.assert_close(p.detach(), before[id(p)] - 1e-4 * grads[id(p)])
    b = next(p for n, p in model.named_parameters() if ".lora_B." in n)
    torch.testing.assert_close(b.detach(), before[id(b)] - 1e-2 * grads[id(b)])


def test_without_shared_a_lr_the_groups_are_the_body_and_the_head():
    model = _model()
    groups = param_groups(model, _settings())
    a = find_pool(model).lora_A
    body = next(g for g in groups if "lr" not in g)
    assert all(any(p is q for q in body["params"]) for p in a.values())
    assert all(g.get("lr", 1e-2) == 1e-2 for g in groups)


def test_shared_a_lr_on_a_model_without_a_shared_a_names_the_setting():
    from peft import LoraConfig

    model = aslora.apply_adapter(tiny_bert(), LoraConfig(r=2, target_modules=["query", "value"]))
    with pytest.raises(
        ValueError, match=r"train.shared_a_lr is for adapters with a shared A .*set train.shared_a_lr=null"
    ):
        param_groups(model, _settings(shared_a_lr=1e-4))
