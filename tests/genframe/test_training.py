"""Optimiser bookkeeping shared by trainers: schedules stepped per step, state saved and restored."""

from __future__ import annotations

import pytest
import torch

from genframe.training.batches import EpochBatches
from genframe.training.optimisers import Optimisers
from genframe_plugins.trainers.optimisers import Adam, Constant, Plateau, RMSProp, Step


def _params():
    torch.manual_seed(0)
    return [torch.nn.Parameter(torch.randn(3))], [torch.nn.Parameter(torch.randn(2))]


def test_optimisers_step_together_and_follow_their_schedules():
    a, b = _params()
    batches = EpochBatches(40, 10, seed=0, device=torch.device("cpu"))  # 4 steps per epoch
    opts = Optimisers()
    opts.add("a", Adam(lr=0.1, schedule=Step(every_epochs=1, gamma=0.5)), a, batches, total_steps=12)
    critic_batches = EpochBatches(40, 10, seed=0, device=torch.device("cpu"), per_step=2)
    opts.add("b", Adam(lr=0.2, schedule=Step(every_epochs=1, gamma=0.5)), b, critic_batches,
             total_steps=12)  # e.g. two critic batches per step: epochs pass twice as fast
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


@pytest.mark.parametrize("spec", [Adam(lr=0.1, schedule=Step(every_epochs=1, gamma=0.5)),
                                  Adam(lr=0.1, weight_decay=0.01, fused=True, schedule=Constant()),
                                  RMSProp(lr=0.05, schedule=Step(every_epochs=1, gamma=0.5))],
                         ids=["adam", "adam-fused", "rmsprop"])
def test_capturable_optimisers_follow_plain_ones_and_save_the_same_state(spec, monkeypatch):
    from genframe.training import graphs

    batches = EpochBatches(40, 10, seed=0, device=torch.device("cpu"))  # 4 steps per epoch: the rate halves

    def trained(capturable: bool) -> tuple[Optimisers, torch.nn.Parameter]:
        torch.manual_seed(0)
        param = torch.nn.Parameter(torch.randn(5))
        opts = Optimisers()
        opts.add("a", spec, [param], batches, total_steps=12)
        if capturable:
            opts.make_capturable(torch.device("cpu"))
            lr = opts["a"].param_groups[0]["lr"]
        with graphs._capturable_anywhere():  # PyTorch admits capturable optimisers on accelerators only
            for _ in range(6):
                opts.zero_grad()
                (param.square() * torch.arange(5.0)).sum().backward()
                opts.step()
                opts.step_schedules()
        if capturable:
            assert opts["a"].param_groups[0]["lr"] is lr  # updated in place, where a graph reads it
        return opts, param

    plain, plain_param = trained(False)
    captured, captured_param = trained(True)
    # bias corrections in float32 tensors instead of Python floats: rounding-level differences
    torch.testing.assert_close(captured_param, plain_param, rtol=1e-4, atol=1e-5)
    assert float(captured["a"].param_groups[0]["lr"]) == pytest.approx(plain["a"].param_groups[0]["lr"])
    saved = captured.state_dict()["optimisers"]["a"]["optimizer"]
    expected = plain.state_dict()["optimisers"]["a"]["optimizer"]
    # plain rates (float32-rounded: a graph reads them from a float32 tensor), the spec's capturable
    for group, plain_group in zip(saved["param_groups"], expected["param_groups"]):
        assert group["lr"] == pytest.approx(plain_group.pop("lr"), rel=1e-7)
        assert {k: v for k, v in group.items() if k != "lr"} == plain_group
    for pid, state in expected["state"].items():
        for key, value in state.items():
            assert saved["state"][pid][key].device == value.device
            torch.testing.assert_close(saved["state"][pid][key], value, rtol=1e-4, atol=1e-5)


def test_an_optimiser_that_cannot_be_captured_is_named():
    from genframe import GenframeError, Optimizer

    class Plain(Optimizer):
        def build(self, params):
            return torch.optim.SGD(params, lr=0.1)

    opts = Optimisers()
    opts.add("critic", Plain(), [torch.nn.Parameter(torch.zeros(2))],
             EpochBatches(4, 2, seed=0, device=torch.device("cpu")), total_steps=2)
    with pytest.raises(GenframeError, match="critic optimiser .SGD. cannot run inside a CUDA graph"):
        opts.make_capturable(torch.device("cpu"))


def test_optimisers_own_their_schedules_and_the_rollback_scale():
    batches = EpochBatches(40, 10, seed=0, device=torch.device("cpu"))
    shared = Adam(lr=0.1, schedule=Plateau(monitor="loss", patience=1, threshold=10.0, gamma=0.5))

    def made() -> Optimisers:
        opts = Optimisers()
        opts.add("generator", shared, [torch.nn.Parameter(torch.zeros(2))], batches, total_steps=8)
        opts.add("critic", shared, [torch.nn.Parameter(torch.zeros(2))], batches, total_steps=8)
        return opts

    opts = made()
    assert opts.schedules == [shared.schedule]  # one spec, one schedule: observed and saved once
    opts.observe({"loss": 1.0})
    opts.observe({"loss": 1.0})  # no improvement beyond the threshold: the multiplier halves
    opts.scale(0.25)
    opts.step()  # no gradients: nothing moves, but schedules follow optimiser steps
    opts.step_schedules()
    assert opts.learning_rate_scale == 0.25
    assert opts["critic"].param_groups[0]["lr"] == pytest.approx(0.1 * 0.5 * 0.25)
    saved = opts.state_dict()
    assert saved["scale"] == 0.25 and len(saved["schedules"]) == 1

    restored = made()  # a fresh schedule state, then the saved one
    assert shared.schedule.factor(0, 0) == 1.0
    restored.load_state_dict(saved)
    assert restored.learning_rate_scale == 0.25 and shared.schedule.factor(0, 0) == 0.5
    assert restored["generator"].param_groups[0]["lr"] == pytest.approx(0.1 * 0.5 * 0.25)
