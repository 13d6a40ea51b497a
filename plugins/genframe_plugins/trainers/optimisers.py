"""Optimisers (Adam, RMSProp) with learning-rate schedules, and the helper that builds both for a trainer.

Each optimiser carries a ``schedule`` component: a multiplier of its learning rate as a function of
the (fractional) epoch and of the training progress in [0, 1]. Trainers build them through
``genframe.training.optimisers.Optimisers``, which steps the schedules and saves them for resume.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Literal

import torch

from genframe import GenframeError, Optimizer, Schedule, component, hookimpl, param

# --------------------------------------------------------------------------- schedules


@component("schedule", "constant")
class Constant(Schedule):
    """The same learning rate throughout training."""

    def factor(self, epoch: float, progress: float) -> float:
        return 1.0


@component("schedule", "step")
class Step(Schedule):
    """Staircase decay: multiply the learning rate by ``gamma`` every ``every_epochs`` epochs.

    The multiplier is gamma ** floor(epoch / every_epochs). A relative slack of 1e-9 in the floor
    keeps epochs computed as step / steps_per_epoch (0.30000000000000004, 2.9999999999999996...)
    on the intended side of a boundary. The field is ``gamma`` (as in torch's StepLR) because
    ``factor`` is the method every schedule provides.
    """

    every_epochs: float = param(gt=0, help="epochs between two decays")
    gamma: float = param(0.5, gt=0, help="multiplier applied at each decay")

    def factor(self, epoch: float, progress: float) -> float:
        return self.gamma ** math.floor(epoch / self.every_epochs + 1e-9)


@component("schedule", "linear")
class Linear(Schedule):
    """Linear decay from the full learning rate at the start to ``final`` times it at the end."""

    final: float = param(0.0, ge=0, help="multiplier reached at the end of training")

    def factor(self, epoch: float, progress: float) -> float:
        return 1.0 + (self.final - 1.0) * min(max(progress, 0.0), 1.0)


@component("schedule", "plateau")
class Plateau(Schedule):
    """Multiply the learning rate by ``gamma`` whenever a logged value stops improving.

    BEGAN halves its learning rate when its convergence measure stalls; this is that rule for any
    value the stage logs. At every logging point the interval's mean of ``monitor`` is compared
    with the best so far: an improvement (lower by more than ``threshold`` times the best, or
    higher in ``mode: max``) resets the count, and after ``patience`` logging intervals without
    one the multiplier is multiplied by ``gamma``, down to ``min_factor``. The schedule sets the
    learning rate after every step, so a new multiplier applies from the step after next.
    """

    monitor: str = param(help="a value the stage logs, e.g. convergence (BEGAN), loss, generator")
    mode: Literal["min", "max"] = param("min", help="whether lower or higher values are better")
    gamma: float = param(0.5, gt=0, lt=1, help="multiplier applied at each stall")
    patience: int = param(10, ge=1, help="logging intervals without improvement that make a stall")
    threshold: float = param(1e-3, ge=0, help="relative improvement over the best value that counts")
    min_factor: float = param(0.0, ge=0, help="the multiplier never goes below this")

    def __attrs_post_init__(self) -> None:
        self.reset()

    def factor(self, epoch: float, progress: float) -> float:
        return self._factor

    def reset(self) -> None:
        self._factor, self._best, self._stalled = 1.0, None, 0

    def observe(self, logged: dict[str, float]) -> None:
        if self.monitor not in logged:
            raise GenframeError(f"plateau schedule: monitor {self.monitor!r} is not logged by this stage; "
                                f"it logs {', '.join(sorted(logged))}")
        value = logged[self.monitor]
        sign = 1.0 if self.mode == "min" else -1.0
        if self._best is None or sign * value < sign * self._best - self.threshold * abs(self._best):
            self._best, self._stalled = value, 0
            return
        self._stalled += 1
        if self._stalled >= self.patience:
            self._factor = max(self.min_factor, self._factor * self.gamma)
            self._stalled = 0

    def state_dict(self) -> dict:
        return {"factor": self._factor, "best": self._best, "stalled": self._stalled}

    def load_state_dict(self, state: dict) -> None:
        self._factor, self._best, self._stalled = state["factor"], state["best"], state["stalled"]


# --------------------------------------------------------------------------- optimisers


def _schedule_param() -> Any:
    return param(factory=lambda: {"type": "constant"}, help="learning-rate multiplier over training")


def _device_options(optimizer_cls: type[torch.optim.Optimizer], params: list) -> dict[str, bool]:
    """``foreach`` and ``capturable`` when every parameter is on CUDA and the class accepts them.

    foreach updates all tensors with a few fused kernels instead of a loop of small ones;
    capturable keeps the step count on the device, so an optimiser step never reads a host value
    and can be captured in a CUDA graph. Both are refused or useless for CPU tensors, and the
    signature check keeps this working across torch versions.
    """
    tensors = [t for p in params for t in (p["params"] if isinstance(p, dict) else [p])]
    if not tensors or any(t.device.type != "cuda" for t in tensors):
        return {}
    accepted = inspect.signature(optimizer_cls).parameters
    return {name: True for name in ("foreach", "capturable") if name in accepted}


def _materialise(params: Any) -> list:
    """``params`` (tensors, or param-group dicts) as a list that can be inspected and then used."""
    out = []
    for p in params:
        if isinstance(p, dict):
            group = p["params"]
            p = {**p, "params": [group] if isinstance(group, torch.Tensor) else list(group)}
        out.append(p)
    return out


@component("optimizer", "adam")
class Adam(Optimizer):
    """Adam with DCGAN's beta1 = 0.5: a short momentum memory suits the moving target of a GAN."""

    lr: float = param(2e-4, gt=0, help="learning rate before the schedule's multiplier")
    betas: tuple[float, float] = param((0.5, 0.999), help="decay rates of the gradient's running mean and "
                                                          "square, each in [0, 1)")
    eps: float = param(1e-8, gt=0, help="added to the denominator for numerical stability")
    weight_decay: float = param(0.0, ge=0, help="L2 penalty added to the gradient")
    fused: bool = param(False, help="one fused kernel updates every parameter (fewer launches for host-bound "
                                    "steps; its step count lives on the device, as CUDA graphs need)")
    schedule: Schedule = _schedule_param()

    def __attrs_post_init__(self) -> None:
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas must lie in [0, 1), got {list(self.betas)}")

    def build(self, params: Any) -> torch.optim.Optimizer:
        params = _materialise(params)
        options = {"fused": True} if self.fused else _device_options(torch.optim.Adam, params)
        return torch.optim.Adam(params, lr=self.lr, betas=tuple(self.betas), eps=self.eps,
                                weight_decay=self.weight_decay, **options)


@component("optimizer", "rmsprop")
class RMSProp(Optimizer):
    """RMSProp without momentum, as WGAN prescribes: momentum-based updates made its critic unstable."""

    lr: float = param(5e-5, gt=0, help="learning rate before the schedule's multiplier")
    alpha: float = param(0.99, ge=0, lt=1, help="decay rate of the running mean of squared gradients")
    eps: float = param(1e-8, gt=0, help="added to the denominator for numerical stability")
    weight_decay: float = param(0.0, ge=0, help="L2 penalty added to the gradient")
    schedule: Schedule = _schedule_param()

    def build(self, params: Any) -> torch.optim.Optimizer:
        params = _materialise(params)
        return torch.optim.RMSprop(params, lr=self.lr, alpha=self.alpha, eps=self.eps,
                                   weight_decay=self.weight_decay, **_device_options(torch.optim.RMSprop, params))


@hookimpl
def genframe_components():
    return [Constant, Step, Linear, Plateau, Adam, RMSProp]
