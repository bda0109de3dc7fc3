"""Built-in optimizers and learning-rate schedules (plain torch objects, checkpointable).

Schedules are stepped once per optimizer step, so ``total_steps`` and ``warmup_steps`` count
optimizer steps; ``plateau`` is stepped by the engine with the monitored validation metric.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Annotated, Any, Literal

from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt

from bioim2im.errors import UserError
from bioim2im.plugin.hookspecs import hookimpl
from bioim2im.plugin.registry import Registrar

Betas = tuple[Annotated[float, Field(ge=0.0, lt=1.0)], Annotated[float, Field(ge=0.0, lt=1.0)]]
Ratio = Annotated[float, Field(ge=0.0, le=1.0)]


def adam(
    *,
    parameters: Iterable[Any],
    lr: PositiveFloat = 1e-3,
    betas: Betas = (0.9, 0.999),
    weight_decay: NonNegativeFloat = 0.0,
) -> Any:
    """Adam; weight_decay is an L2 penalty added to the gradient.

    Args:
        lr: Learning rate (the schedule scales it).
        betas: Decay rates of the running averages of the gradient and of its square.
        weight_decay: L2 penalty on the weights, added to the gradient.
    """
    import torch

    return torch.optim.Adam(parameters, lr=lr, betas=betas, weight_decay=weight_decay)


def adamw(
    *,
    parameters: Iterable[Any],
    lr: PositiveFloat = 1e-3,
    betas: Betas = (0.9, 0.999),
    weight_decay: NonNegativeFloat = 1e-2,
) -> Any:
    """AdamW: Adam with decoupled weight decay.

    Args:
        lr: Learning rate (the schedule scales it).
        betas: Decay rates of the running averages of the gradient and of its square.
        weight_decay: Share of each weight removed at each step (times lr), apart from the
            gradient.
    """
    import torch

    return torch.optim.AdamW(parameters, lr=lr, betas=betas, weight_decay=weight_decay)


def radam(
    *,
    parameters: Iterable[Any],
    lr: PositiveFloat = 1e-3,
    betas: Betas = (0.9, 0.999),
    weight_decay: NonNegativeFloat = 0.0,
    decoupled_weight_decay: bool = False,
) -> Any:
    """RAdam: Adam with a rectified warm-up of the adaptive learning rate.

    Args:
        lr: Learning rate (the schedule scales it).
        betas: Decay rates of the running averages of the gradient and of its square.
        weight_decay: L2 penalty on the weights, added to the gradient (or, decoupled, taken
            off the weights directly).
        decoupled_weight_decay: Decay the weights directly, as AdamW does, instead of adding
            the penalty to the gradient.
    """
    import torch

    return torch.optim.RAdam(
        parameters,
        lr=lr,
        betas=betas,
        weight_decay=weight_decay,
        decoupled_weight_decay=decoupled_weight_decay,
    )


def sgd(
    *,
    parameters: Iterable[Any],
    lr: PositiveFloat = 1e-2,
    momentum: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.9,
    nesterov: bool = False,
    weight_decay: NonNegativeFloat = 0.0,
) -> Any:
    """Stochastic gradient descent with (Nesterov) momentum.

    Args:
        lr: Learning rate (the schedule scales it).
        momentum: Share of the previous update carried into the next.
        nesterov: Nesterov's momentum (the gradient taken after the momentum step).
        weight_decay: L2 penalty on the weights, added to the gradient.
    """
    import torch

    return torch.optim.SGD(
        parameters, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay
    )


def _check_sgd(*, momentum: float, nesterov: bool, **_: Any) -> None:
    if nesterov and momentum == 0:
        raise ValueError("nesterov = true needs a momentum above 0")


@hookimpl
def bioim2im_register_optimizers(registry: Registrar) -> None:
    for factory in (adam, adamw, radam):
        registry.add(factory.__name__, factory)
    registry.add("sgd", sgd, check=_check_sgd)


def _warmed_up(
    decay: Callable[[float], float], warmup_steps: int, total_steps: int
) -> Callable[[int], float]:
    """LR factor at a step: linear warm-up to 1 over warmup_steps, then ``decay(progress)``.

    The warm-up starts above 0 so no step is wasted; ``progress`` runs from 0 after the warm-up
    to 1 at ``total_steps`` (and stays there if training runs longer).
    """
    if warmup_steps >= total_steps:
        raise UserError(
            f"warmup_steps ({warmup_steps}) must be below the total steps ({total_steps})"
        )

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        return decay(min(1.0, (step - warmup_steps) / (total_steps - warmup_steps)))

    return factor


def _lambda_schedule(optimizer: Any, factor: Callable[[int], float]) -> Any:
    import torch

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def constant(*, optimizer: Any, total_steps: int, warmup_steps: NonNegativeInt = 0) -> Any:
    """Constant learning rate, after an optional linear warm-up.

    Args:
        warmup_steps: Optimizer steps over which the learning rate rises linearly from near
            0 to lr.
    """
    return _lambda_schedule(optimizer, _warmed_up(lambda progress: 1.0, warmup_steps, total_steps))


def cosine(
    *,
    optimizer: Any,
    total_steps: int,
    warmup_steps: NonNegativeInt = 0,
    min_lr_ratio: Ratio = 0.0,
) -> Any:
    """Linear warm-up, then cosine decay reaching min_lr_ratio x lr at total_steps.

    Args:
        warmup_steps: Optimizer steps over which the learning rate rises linearly from near
            0 to lr.
        min_lr_ratio: The learning rate at the end, as a fraction of lr.
    """

    def decay(progress: float) -> float:
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return _lambda_schedule(optimizer, _warmed_up(decay, warmup_steps, total_steps))


def poly(
    *,
    optimizer: Any,
    total_steps: int,
    warmup_steps: NonNegativeInt = 0,
    power: PositiveFloat = 0.9,
) -> Any:
    """Linear warm-up, then polynomial decay (1 - progress)^power, as nnU-Net.

    Args:
        warmup_steps: Optimizer steps over which the learning rate rises linearly from near
            0 to lr.
        power: Exponent of the decay; 1 is linear, smaller decays later.
    """
    return _lambda_schedule(
        optimizer, _warmed_up(lambda progress: (1 - progress) ** power, warmup_steps, total_steps)
    )


def step(*, optimizer: Any, step_size: PositiveInt, gamma: PositiveFloat = 0.1) -> Any:
    """Multiply the learning rate by gamma every step_size steps.

    Args:
        step_size: Optimizer steps between two decreases.
        gamma: Factor applied at each decrease.
    """
    import torch

    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=gamma)


def plateau(
    *,
    optimizer: Any,
    mode: Literal["min", "max"] = "min",
    factor: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.1,
    patience: NonNegativeInt = 10,
    min_lr: NonNegativeFloat = 0.0,
) -> Any:
    """Multiply the learning rate by factor when the validation metric stops improving.

    The metric is train.checkpoint_metric, at each validation.

    Args:
        mode: "min" if a lower metric is better, "max" if a higher one is.
        factor: Factor applied to the learning rate at each decrease.
        patience: Validations without improvement before a decrease.
        min_lr: The learning rate never goes below this.
    """
    import torch

    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode=mode, factor=factor, patience=patience, min_lr=min_lr
    )


@hookimpl
def bioim2im_register_schedulers(registry: Registrar) -> None:
    for factory in (constant, cosine, poly, step, plateau):
        registry.add(factory.__name__, factory)
