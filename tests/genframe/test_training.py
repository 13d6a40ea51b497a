"""Optimiser bookkeeping shared by trainers: schedules stepped per step, state saved and restored."""

from __future__ import annotations

import torch

from genframe.context import EpochBatches
from genframe.training import Optimisers
from genframe_plugins.optim import Adam, Step


def _params():
    torch.manual_seed(0)
    return [torch.nn.Parameter(torch.randn(3))], [torch.nn.Parameter(torch.randn(2))]


def test_optimisers_step_together_and_follow_their_schedules():
    a, b = _params()
    batches = EpochBatches(40, 10, seed=0, device=torch.device("cpu"))  # 4 steps per epoch
    opts = Optimisers()
    opts.add("a", Adam(lr=0.1, schedule=Step(every_epochs=1, gamma=0.5)), a, batches, total_steps=12)
    opts.add("b", Adam(lr=0.2, schedule=Step(every_epochs=1, gamma=0.5)), b, batches, total_steps=12,
             batches_per_step=2)  # e.g. two critic batches per step: epochs pass twice as fast
    lrs = []
    for _ in range(5):
        opts.zero_grad()
        (a[0].sum() + b[0].sum()).backward()
        opts.step()
        opts.step_schedules()
        lrs.append((opts["a"].param_groups[0]["lr"], opts["b"].param_groups[0]["lr"]))
    assert [round(x, 6) for x, _ in lrs] == [0.1, 0.1, 0.1, 0.05, 0.05]
    assert [round(y, 6) for _, y in lrs] == [0.2, 0.1, 0.1, 0.05, 0.05]


def test_optimiser_state_round_trips():
    a, b = _params()
    batches = EpochBatches(40, 10, seed=0, device=torch.device("cpu"))
    first = Optimisers()
    first.add("a", Adam(lr=0.1, schedule=Step(every_epochs=1, gamma=0.5)), a, batches, total_steps=12)
    for _ in range(6):
        first.zero_grad()
        a[0].square().sum().backward()
        first.step()
        first.step_schedules()
    second = Optimisers()
    second.add("a", Adam(lr=0.1, schedule=Step(every_epochs=1, gamma=0.5)), a, batches, total_steps=12)
    second.load_state_dict(first.state_dict())
    assert second["a"].param_groups[0]["lr"] == first["a"].param_groups[0]["lr"] == 0.05
    assert torch.equal(second["a"].state[a[0]]["exp_avg"], first["a"].state[a[0]]["exp_avg"])
