"""Optimizers and learning-rate schedules."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from bioim2im.builtins import optim
from bioim2im.errors import UserError
from bioim2im.plugin.registry import ComponentRegistry, Registrar


def _registry() -> ComponentRegistry:
    registry = ComponentRegistry()
    optim.bioim2im_register_optimizers(Registrar(registry, "optimizer", "bioim2im", "test"))
    optim.bioim2im_register_schedulers(Registrar(registry, "scheduler", "bioim2im", "test"))
    return registry


REGISTRY = _registry()


def make_optimizer(lr: float = 1.0) -> torch.optim.Optimizer:
    return REGISTRY.get("optimizer", "sgd").build(
        {"lr": lr, "momentum": 0.0}, parameters=[torch.nn.Parameter(torch.zeros(1))]
    )


def learning_rates(name: str, params: dict[str, Any], total_steps: int, steps: int) -> list[float]:
    """The learning rate of each optimizer step, the scheduler stepped after each."""
    optimizer = make_optimizer()
    scheduler = REGISTRY.get("scheduler", name).build(
        params, optimizer=optimizer, total_steps=total_steps
    )
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


@pytest.mark.parametrize(("kind", "name"), [(c.kind, c.name) for c in REGISTRY])
def test_parameters_are_typed(kind: str, name: str) -> None:
    fields = REGISTRY.get(kind, name).params.model_fields
    assert all(field.annotation is not Any for field in fields.values())


@pytest.mark.parametrize("name", REGISTRY.names("optimizer"))
def test_optimizer_minimizes(name: str) -> None:
    weight = torch.nn.Parameter(torch.tensor([3.0, -2.0]))
    optimizer = REGISTRY.get("optimizer", name).build({"lr": 0.1}, parameters=[weight])
    for _ in range(50):
        optimizer.zero_grad()
        weight.square().sum().backward()
        optimizer.step()
    assert weight.square().sum().item() < 13.0 / 4


def test_optimizer_parameters_reach_torch() -> None:
    optimizer = REGISTRY.get("optimizer", "adamw").build(
        {"lr": 0.01, "betas": [0.8, 0.9], "weight_decay": 0.1},
        parameters=[torch.nn.Parameter(torch.zeros(1))],
    )
    group = optimizer.param_groups[0]
    assert (group["lr"], group["betas"], group["weight_decay"]) == (0.01, (0.8, 0.9), 0.1)


def test_nesterov_needs_momentum() -> None:
    with pytest.raises(UserError, match="momentum"):
        REGISTRY.get("optimizer", "sgd").build(
            {"nesterov": True, "momentum": 0.0}, parameters=[torch.nn.Parameter(torch.zeros(1))]
        )


def test_cosine_warms_up_then_decays_to_the_minimum() -> None:
    rates = learning_rates("cosine", {"warmup_steps": 3, "min_lr_ratio": 0.1}, 13, 15)
    assert rates[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert rates[8] == pytest.approx(0.1 + 0.9 * 0.5)  # half-way through the decay
    assert rates[12] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.9)))
    assert rates[13:] == pytest.approx([0.1, 0.1])  # stays at the minimum past total_steps
    assert rates[3:13] == sorted(rates[3:13], reverse=True)


def test_poly_decays_as_nnunet() -> None:
    rates = learning_rates("poly", {"power": 0.9}, 10, 10)
    assert rates == pytest.approx([(1 - step / 10) ** 0.9 for step in range(10)])


def test_constant_after_warmup() -> None:
    assert learning_rates("constant", {"warmup_steps": 1}, 5, 4) == pytest.approx([0.5, 1, 1, 1])


def test_step_multiplies_by_gamma() -> None:
    rates = learning_rates("step", {"step_size": 2, "gamma": 0.5}, 10, 6)
    assert rates == pytest.approx([1, 1, 0.5, 0.5, 0.25, 0.25])


def test_plateau_reduces_after_patience() -> None:
    optimizer = make_optimizer()
    scheduler = REGISTRY.get("scheduler", "plateau").build(
        {"patience": 1, "factor": 0.5}, optimizer=optimizer, total_steps=100
    )
    rates = []
    for metric in [1.0, 1.0, 1.0, 0.5, 0.5, 0.5]:
        scheduler.step(metric)
        rates.append(optimizer.param_groups[0]["lr"])
    assert rates == [1.0, 1.0, 0.5, 0.5, 0.5, 0.25]


def test_warmup_must_end_before_training() -> None:
    with pytest.raises(UserError, match="warmup_steps"):
        learning_rates("cosine", {"warmup_steps": 10}, 10, 1)


def test_schedule_resumes_from_its_state_dict() -> None:
    optimizer = make_optimizer()
    build = REGISTRY.get("scheduler", "cosine").build
    scheduler = build({"warmup_steps": 2}, optimizer=optimizer, total_steps=10)
    for _ in range(5):
        optimizer.step()
        scheduler.step()
    resumed_optimizer = make_optimizer()
    resumed = build({"warmup_steps": 2}, optimizer=resumed_optimizer, total_steps=10)
    resumed_optimizer.load_state_dict(optimizer.state_dict())
    resumed.load_state_dict(scheduler.state_dict())
    optimizer.step()
    scheduler.step()
    resumed_optimizer.step()
    resumed.step()
    assert resumed_optimizer.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]
    assert resumed.get_last_lr() == scheduler.get_last_lr()


def test_radam_decays_weights_decoupled_when_asked() -> None:
    def trained(decoupled: bool) -> float:
        weight = torch.nn.Parameter(torch.ones(1))
        optimizer = REGISTRY.get("optimizer", "radam").build(
            {"lr": 0.1, "weight_decay": 0.5, "decoupled_weight_decay": decoupled},
            parameters=[weight],
        )
        assert optimizer.param_groups[0]["decoupled_weight_decay"] is decoupled
        for _ in range(3):
            weight.grad = torch.ones(1)
            optimizer.step()
        return float(weight.detach()[0])

    # Decoupled, the weight shrinks by lr * weight_decay of itself each step; coupled, the decay
    # goes through the moment estimates: after the first step they part.
    assert trained(True) != pytest.approx(trained(False), abs=1e-6)
