"""Plumbing every trainer needs: optimisers with learning-rate schedules, saved and restored as one.

``Optimisers`` is the one owner of optimiser and schedule state: the torch optimisers, the
multipliers their schedules apply (and the schedules' own state, a plateau's patience), and the
factor a rollback has scaled the learning rates by. Kept in the core so that third-party trainers
get schedules, rollback and exact resume for free.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import torch
from torch.optim.lr_scheduler import LambdaLR

from genframe.training.batches import EpochBatches
from genframe.ops.distributed import average_gradients_hook
from genframe.errors import GenframeError
from genframe.components.roles import Optimizer, Schedule


def build_optimizer(optimizer: Optimizer, params: Any,
                    epoch_progress: Callable[[int], tuple[float, float]]) -> tuple[torch.optim.Optimizer, LambdaLR]:
    """The torch optimiser of ``optimizer`` for ``params`` and a ``LambdaLR`` applying its schedule.

    ``epoch_progress(step)`` gives the (fractional) epoch and the progress in [0, 1] at a step;
    the scheduler advances once per ``scheduler.step()``, called after every optimiser step.
    An optimiser without a ``schedule`` field keeps a constant learning rate. Under ``torchrun``
    every step first averages the gradients over processes (see :mod:`genframe.ops.distributed`).
    """
    schedule = optimizer.schedule
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
        self._schedules: dict[int, Schedule] = {}  # by identity: two optimisers may share one spec
        self._scale = 1.0

    def add(self, key: str, spec: Optimizer, params: Any, batches: EpochBatches,
            total_steps: int) -> torch.optim.Optimizer:
        """Build ``spec`` for ``params``; its schedule starts afresh and sees epochs of ``batches``
        (``batches.per_step`` of them per training step) and the stage's progress."""
        def when(step: int) -> tuple[float, float]:
            return batches.epoch_of(step * batches.per_step), step / max(1, total_steps)

        schedule = spec.schedule
        if isinstance(schedule, Schedule) and id(schedule) not in self._schedules:
            schedule.reset()
            self._schedules[id(schedule)] = schedule
        self._pairs[key] = build_optimizer(spec, params, when)
        if self._scale != 1.0:
            self._scale_pair(*self._pairs[key], self._scale)
        return self._pairs[key][0]

    @property
    def schedules(self) -> list[Schedule]:
        """The schedules of these optimisers, each once, in the order they were added."""
        return list(self._schedules.values())

    @property
    def learning_rate_scale(self) -> float:
        """What :meth:`scale` has multiplied the learning rates by so far (1.0 until a rollback)."""
        return self._scale

    def observe(self, logged: dict[str, float]) -> None:
        """Show the schedules the mean losses of a logging interval (a plateau schedule follows one)."""
        for schedule in self._schedules.values():
            schedule.observe(logged)

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
        """Advance every schedule by one training step (the engine does, after every ``train_step``).

        A learning rate held in a tensor (a captured step reads it from there) is updated in place.
        """
        for opt, scheduler in self._pairs.values():
            held = [group["lr"] for group in opt.param_groups]
            scheduler.step()
            for group, lr in zip(opt.param_groups, held):
                if isinstance(lr, torch.Tensor) and group["lr"] is not lr:  # a torch that assigns a float
                    lr.fill_(group["lr"])
                    group["lr"] = lr

    @torch.no_grad()
    def restart(self) -> None:
        """Forget what every optimiser has accumulated (moments, step counts), as a newly built one holds
        it; learning rates and schedules go on. In place, so a captured step keeps reading the same state."""
        for opt in self:
            for state in opt.state.values():
                for key, value in state.items():
                    if isinstance(value, torch.Tensor):
                        value.zero_()
                    elif isinstance(value, (int, float)):
                        state[key] = type(value)(0)

    def make_capturable(self, device: torch.device) -> None:
        """Let every optimiser step run inside a CUDA graph: ``capturable`` updates, whose step counts
        live on the device, and learning rates in device tensors that schedules update in place."""
        for key, (opt, _) in self._pairs.items():
            for group in opt.param_groups:
                if "capturable" not in group:
                    raise GenframeError(f"cuda_graphs: the {key} optimiser ({type(opt).__name__}) cannot run "
                                        "inside a CUDA graph; use adam or rmsprop, or set cuda_graphs: false")
                group.setdefault("eager_capturable", group["capturable"])
                group["capturable"] = True
                if not isinstance(group["lr"], torch.Tensor):
                    group["lr"] = torch.tensor(float(group["lr"]), dtype=torch.float32, device=device)
                for param in group["params"]:
                    state = opt.state.get(param, {})
                    if isinstance(state.get("step"), torch.Tensor):
                        state["step"] = state["step"].to(device=param.device, dtype=torch.float32)

    def scale(self, factor: float) -> None:
        """Multiply every learning rate now and in every later step of the schedules."""
        for opt, scheduler in self._pairs.values():
            self._scale_pair(opt, scheduler, factor)
        self._scale *= factor

    @staticmethod
    def _scale_pair(opt: torch.optim.Optimizer, scheduler: LambdaLR, factor: float) -> None:
        scheduler.base_lrs = [lr * factor for lr in scheduler.base_lrs]
        for group in opt.param_groups:
            group["lr"] *= factor

    def state_dict(self) -> dict:
        return {"optimisers": {k: {"optimizer": _portable(o), "scheduler": s.state_dict()}
                               for k, (o, s) in self._pairs.items()},
                "schedules": [schedule.state_dict() for schedule in self._schedules.values()],
                "scale": self._scale}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned (before any :meth:`make_capturable`).

        The saved learning rates already carry the saved scale; a checkpoint of genframe 0.1, which
        held only the optimisers, restores them and leaves schedules and scale as they are."""
        saved = state["optimisers"] if "scale" in state else state
        for key, (opt, sched) in self._pairs.items():
            opt.load_state_dict(saved[key]["optimizer"])
            sched.load_state_dict(saved[key]["scheduler"])
        if "scale" in state:
            for schedule, schedule_state in zip(self._schedules.values(), state["schedules"]):
                schedule.load_state_dict(schedule_state)
            self._scale = state["scale"]


def _portable(opt: torch.optim.Optimizer) -> dict:
    """``opt``'s state dict as an eager optimiser would hold it, so that a run checkpointed with
    ``cuda_graphs`` holds what one without them would: plain learning rates, the spec's ``capturable``,
    and step counts on the host where an eager optimiser keeps them."""
    saved = opt.state_dict()
    if not any("eager_capturable" in group for group in saved["param_groups"]):
        return saved
    state = dict(saved["state"])
    for group in saved["param_groups"]:
        group["capturable"] = group.pop("eager_capturable")
        group["lr"] = float(group["lr"])
        if group["capturable"] or group.get("fused"):
            continue  # these keep their step counts on the device
        for pid in group["params"]:
            if isinstance(state.get(pid, {}).get("step"), torch.Tensor):
                state[pid] = {**state[pid], "step": state[pid]["step"].cpu()}
    return {"state": state, "param_groups": saved["param_groups"]}
