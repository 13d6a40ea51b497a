"""Optimisers (Adam, AdamW, RMSProp) with learning-rate schedules, and the helper that builds both for a trainer.

Each optimiser carries a ``schedule`` component: a multiplier of its learning rate as a function of
the (fractional) epoch and of the training progress in [0, 1]. Trainers build them through
``genframe.training.optimisers.Optimisers``, which steps the schedules and saves them for resume.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, ClassVar, Literal

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


@component("schedule", "cosine")
class Cosine(Schedule):
    """Cosine decay (Loshchilov & Hutter's SGDR without restarts) from the full rate to ``final`` times it.

    The multiplier is final + (1 - final) (1 + cos(pi progress)) / 2 over the stage's training;
    after a ``warmup`` the progress counts from the end of the warm-up.
    """

    final: float = param(0.0, ge=0, le=1, help="multiplier reached at the end of training")

    def factor(self, epoch: float, progress: float) -> float:
        progress = min(max(progress, 0.0), 1.0)
        return self.final + (1.0 - self.final) * 0.5 * (1.0 + math.cos(math.pi * progress))


@component("schedule", "warmup")
class Warmup(Schedule):
    """A linear warm-up from ``start`` times the rate to the full rate, then another schedule.

    Large learning rates with Adam's early, poorly estimated second moments can derail the first
    steps of transformers and diffusion models; the rate rises over ``share`` of training (or
    ``epochs``), and ``then`` runs on the rest of it, its progress counted from the warm-up's end:
    ``{type: warmup, share: 0.05, then: {type: cosine}}`` is the usual recipe.
    """

    share: float | None = param(None, gt=0, lt=1, help="part of the stage's training the warm-up lasts")
    epochs: float | None = param(None, gt=0, help="or: epochs the warm-up lasts")
    start: float = param(0.0, ge=0, le=1, help="multiplier at the first step")
    then: Schedule = param(factory=lambda: {"type": "constant"}, help="the schedule after the warm-up")

    def __attrs_post_init__(self) -> None:
        if (self.share is None) == (self.epochs is None):
            raise ValueError("give the warm-up's length as share or as epochs, one of them")

    def _length(self, epoch: float, progress: float) -> float:
        """The warm-up's share of training."""
        if self.share is not None:
            return self.share
        # epochs per unit of progress: the stage's length in epochs (known once training moved)
        total = epoch / progress if progress > 0 else math.inf
        return min(self.epochs / total, 1.0)

    def factor(self, epoch: float, progress: float) -> float:
        if progress <= 0:
            return self.start
        length = self._length(epoch, progress)
        if progress < length:
            return self.start + (1.0 - self.start) * progress / length
        rest = (progress - length) / (1.0 - length) if length < 1.0 else 1.0
        warm_epochs = self.epochs if self.epochs is not None else epoch * length / max(progress, 1e-12)
        return self.then.factor(max(epoch - warm_epochs, 0.0), rest)

    def reset(self) -> None:
        self.then.reset()

    def observe(self, logged: dict[str, float]) -> None:
        self.then.observe(logged)

    def state_dict(self) -> dict:
        return self.then.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.then.load_state_dict(state)


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


class _AdamFamily(Optimizer):
    """What adam and adamw share: the betas' check and the build (they differ in how weight decay acts)."""

    torch_optimizer: ClassVar[type[torch.optim.Optimizer]]

    def __attrs_post_init__(self) -> None:
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas must lie in [0, 1), got {list(self.betas)}")

    def build(self, params: Any) -> torch.optim.Optimizer:
        params = _materialise(params)
        options = {"fused": True} if self.fused else _device_options(self.torch_optimizer, params)
        return self.torch_optimizer(params, lr=self.lr, betas=tuple(self.betas), eps=self.eps,
                                    weight_decay=self.weight_decay, **options)


@component("optimizer", "adam")
class Adam(_AdamFamily):
    """Adam with DCGAN's beta1 = 0.5: a short momentum memory suits the moving target of a GAN."""

    lr: float = param(2e-4, gt=0, help="learning rate before the schedule's multiplier")
    betas: tuple[float, float] = param((0.5, 0.999), help="decay rates of the gradient's running mean and "
                                                          "square, each in [0, 1)")
    eps: float = param(1e-8, gt=0, help="added to the denominator for numerical stability")
    weight_decay: float = param(0.0, ge=0, help="L2 penalty added to the gradient")
    fused: bool = param(False, help="one fused kernel updates every parameter (fewer launches for host-bound "
                                    "steps; its step count lives on the device, as CUDA graphs need)")
    schedule: Schedule = _schedule_param()

    torch_optimizer = torch.optim.Adam


@component("optimizer", "adamw")
class AdamW(_AdamFamily):
    """AdamW (Loshchilov & Hutter 2019): Adam with weight decay applied to the weights, not the gradient.

    The decay then shrinks every weight at the same rate instead of being rescaled by Adam's
    per-weight step sizes; the optimiser of transformers and of modern diffusion recipes.
    """

    lr: float = param(1e-3, gt=0, help="learning rate before the schedule's multiplier")
    betas: tuple[float, float] = param((0.9, 0.999), help="decay rates of the gradient's running mean and "
                                                          "square, each in [0, 1)")
    eps: float = param(1e-8, gt=0, help="added to the denominator for numerical stability")
    weight_decay: float = param(0.01, ge=0, help="decoupled weight decay: each step multiplies the weights by "
                                                 "1 - lr * weight_decay")
    fused: bool = param(False, help="one fused kernel updates every parameter (see adam)")
    schedule: Schedule = _schedule_param()

    torch_optimizer = torch.optim.AdamW


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
    return [Constant, Step, Linear, Cosine, Warmup, Plateau, Adam, AdamW, RMSProp]
