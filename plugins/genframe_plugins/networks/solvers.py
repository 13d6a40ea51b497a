"""Solvers of dx/dt = v(x, t) from noise (t = 0) to data (t = 1): how a flow or diffusion model samples.

``steps`` is the spec field that trades quality for network evaluations (NFE); the evaluation
protocol records each solver's NFE next to its numbers.
"""

from __future__ import annotations

from typing import Callable

import torch

from genframe import ProbabilityPath, Solver, component, hookimpl, param

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@component("solver", "euler")
class Euler(Solver):
    """Euler's method: one velocity per step (NFE = steps); exact for straight paths."""

    steps: int = param(32, ge=1, help="integration steps")

    def solve(self, velocity: Velocity, x: torch.Tensor, times: torch.Tensor, path: ProbabilityPath,
              generator: torch.Generator | None = None) -> torch.Tensor:
        for i in range(len(times) - 1):
            x = x + (times[i + 1] - times[i]) * velocity(x, times[i])
        return x


@component("solver", "heun")
class Heun(Solver):
    """Heun's second-order method (Karras et al. 2022, Algorithm 1): two velocities per step.

    An Euler step, then the mean of the velocities at both ends (NFE = 2 steps); the error shrinks
    with the square of the step.
    """

    steps: int = param(16, ge=1, help="integration steps")

    def solve(self, velocity: Velocity, x: torch.Tensor, times: torch.Tensor, path: ProbabilityPath,
              generator: torch.Generator | None = None) -> torch.Tensor:
        for i in range(len(times) - 1):
            x = _heun_step(velocity, x, times[i], times[i + 1])
        return x

    def evaluations(self) -> int:
        return 2 * self.steps


@component("solver", "stochastic")
class Stochastic(Solver):
    """Karras et al.'s stochastic sampler (2022, Algorithm 2): Heun steps with noise added back.

    Before each step it goes back in time by ``churn`` of the step, adding the fresh noise the path
    has there, which corrects errors of earlier steps. Needs a path that can re-noise (every
    Gaussian path). The noise comes from ``generator``, or else from torch's default generator,
    which the sampler chain seeds from the sampling seed: the same seed gives the same samples.
    """

    steps: int = param(16, ge=1, help="integration steps")
    churn: float = param(0.5, ge=0, help="how far back each step re-noises, as a share of the step")

    def solve(self, velocity: Velocity, x: torch.Tensor, times: torch.Tensor, path: ProbabilityPath,
              generator: torch.Generator | None = None) -> torch.Tensor:
        for i in range(len(times) - 1):
            now, after = times[i], times[i + 1]
            if i > 0 and self.churn > 0:  # at t = 0 the point is pure noise already
                earlier = (now - self.churn * (after - now)).clamp(min=times[0])
                x = path.renoise(x, now, earlier, torch.randn(x.shape, device=x.device, generator=generator))
                now = earlier
            x = _heun_step(velocity, x, now, after)
        return x

    def evaluations(self) -> int:
        return 2 * self.steps


def _heun_step(velocity: Velocity, x: torch.Tensor, now: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    step = after - now
    slope = velocity(x, now)
    guess = x + step * slope
    return x + step * 0.5 * (slope + velocity(guess, after))


@hookimpl
def genframe_components():
    return [Euler, Heun, Stochastic]
