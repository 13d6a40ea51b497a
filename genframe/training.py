"""Plumbing every trainer needs: optimisers with learning-rate schedules, saved and restored as one.

Kept in the core so that third-party trainers get schedules and exact resume for free.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import torch
from torch.optim.lr_scheduler import LambdaLR

from .context import EpochBatches
from .distributed import average_gradients_hook
from .roles import Optimizer, Schedule


def build_optimizer(optimizer: Optimizer, params: Any,
                    epoch_progress: Callable[[int], tuple[float, float]]) -> tuple[torch.optim.Optimizer, LambdaLR]:
    """The torch optimiser of ``optimizer`` for ``params`` and a ``LambdaLR`` applying its schedule.

    ``epoch_progress(step)`` gives the (fractional) epoch and the progress in [0, 1] at a step;
    the scheduler advances once per ``scheduler.step()``, called after every optimiser step.
    An optimiser without a ``schedule`` field keeps a constant learning rate. Under ``torchrun``
    every step first averages the gradients over processes (see :mod:`genframe.distributed`).
    """
    schedule = getattr(optimizer, "schedule", None)
    if schedule is not None and not isinstance(schedule, Schedule):
        raise TypeError(f"{type(optimizer).__name__}.schedule is {schedule!r}, not a schedule component: "
                        "build the spec, or pass a schedule component")
    torch_optimizer = optimizer.build(params)
    torch_optimizer.register_step_pre_hook(average_gradients_hook)  # a no-op in a single process
    if schedule is None:
        return torch_optimizer, LambdaLR(torch_optimizer, lambda step: 1.0)
    return torch_optimizer, LambdaLR(torch_optimizer, lambda step: schedule.factor(*epoch_progress(step)))


class Optimisers:
    """A trainer's named optimisers and their schedules: stepped together, checkpointed together."""

    def __init__(self) -> None:
        self._pairs: dict[str, tuple[torch.optim.Optimizer, LambdaLR]] = {}

    def add(self, key: str, spec: Optimizer, params: Any, batches: EpochBatches, total_steps: int,
            batches_per_step: int = 1) -> torch.optim.Optimizer:
        """Build ``spec`` for ``params``; its schedule sees epochs of ``batches`` and the stage's progress."""
        def when(step: int) -> tuple[float, float]:
            return batches.epoch_of(step * batches_per_step), step / max(1, total_steps)

        self._pairs[key] = build_optimizer(spec, params, when)
        return self._pairs[key][0]

    def __getitem__(self, key: str) -> torch.optim.Optimizer:
        return self._pairs[key][0]

    def __iter__(self) -> Iterator[torch.optim.Optimizer]:
        return (opt for opt, _ in self._pairs.values())

    def zero_grad(self) -> None:
        for opt in self:
            opt.zero_grad(set_to_none=True)

    def step(self) -> None:
        for opt in self:
            opt.step()

    def step_schedules(self) -> None:
        """Advance every schedule by one training step (call once per ``train_step``)."""
        for _, scheduler in self._pairs.values():
            scheduler.step()

    def scale(self, factor: float) -> None:
        """Multiply every learning rate now and in every later step of the schedules."""
        for opt, scheduler in self._pairs.values():
            scheduler.base_lrs = [lr * factor for lr in scheduler.base_lrs]
            for group in opt.param_groups:
                group["lr"] *= factor

    def state_dict(self) -> dict:
        return {k: {"optimizer": o.state_dict(), "scheduler": s.state_dict()} for k, (o, s) in self._pairs.items()}

    def load_state_dict(self, state: dict) -> None:
        for key, (opt, sched) in self._pairs.items():
            opt.load_state_dict(state[key]["optimizer"])
            sched.load_state_dict(state[key]["scheduler"])
