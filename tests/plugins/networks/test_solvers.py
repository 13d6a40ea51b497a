"""Solvers on differential equations with known solutions: orders of accuracy and NFE."""

from __future__ import annotations

import math

import pytest
import torch

from genframe_plugins.networks.solvers import Euler, Heun, Stochastic
from genframe_plugins.objectives.paths import Linear


def exponential(x, t):  # dx/dt = x: x(1) = e x(0)
    return x


def error(solver, steps: int) -> float:
    x = torch.ones(1, dtype=torch.float64)
    times = torch.linspace(0, 1, steps + 1, dtype=torch.float64)
    return abs(solver.solve(exponential, x, times, Linear()).item() - math.e)


def test_euler_is_first_order_and_heun_second_order():
    assert error(Euler(), 64) / error(Euler(), 128) == pytest.approx(2.0, rel=0.05)
    assert error(Heun(), 64) / error(Heun(), 128) == pytest.approx(4.0, rel=0.05)
    assert error(Heun(), 16) < error(Euler(), 16) / 20


def test_euler_is_exact_on_a_straight_path():
    # the linear path's velocity towards a single point c: (c - x) / (1 - t), straight from any start
    c = torch.tensor([[2.0, -1.0]], dtype=torch.float64)
    times = torch.linspace(0, 1, 5, dtype=torch.float64)[:-1].tolist() + [1.0 - 1e-12]
    field = lambda x, t: (c - x) / (1 - t)  # noqa: E731
    out = Euler(steps=4).solve(field, torch.zeros(1, 2, dtype=torch.float64), torch.tensor(times), Linear())
    torch.testing.assert_close(out, c)


def test_evaluations_count_network_calls():
    calls = []

    def counted(x, t):
        calls.append(t)
        return x

    for solver in (Euler(steps=5), Heun(steps=5), Stochastic(steps=5)):
        calls.clear()
        solver.solve(counted, torch.ones(3, 2), torch.linspace(0.1, 1, 6), Linear(), torch.Generator().manual_seed(0))
        assert len(calls) == solver.evaluations()


def test_stochastic_without_churn_is_heun_and_with_churn_is_seeded():
    times = torch.linspace(0.1, 1, 9, dtype=torch.float64)
    x = torch.ones(4, 2, dtype=torch.float64)
    field = lambda y, t: -y  # noqa: E731
    plain = Heun(steps=8).solve(field, x, times, Linear())
    torch.testing.assert_close(Stochastic(steps=8, churn=0.0).solve(field, x, times, Linear()), plain)
    first = Stochastic(steps=8).solve(field, x, times, Linear(), torch.Generator().manual_seed(3))
    again = Stochastic(steps=8).solve(field, x, times, Linear(), torch.Generator().manual_seed(3))
    torch.testing.assert_close(first, again)
    assert not torch.allclose(first, plain)
