"""Solvers that carry noise to data: how a flow or diffusion model samples.

On a Gaussian path (every built-in one) they step through the path's noise levels sigma = s / a,
on the scaled point y = x / a, where the probability-flow ODE reads dy/dsigma = (y - D) / sigma with
D the denoised estimate (Karras et al. 2022, section 3). An Euler step there is exact when D does not
change over the step: it is DDIM (Song et al. 2021) on a VP path, Euler in t on the linear path, and
Karras et al.'s Euler step on EDM. A path that still holds noise at t = 1 ends with a step to
sigma = 0, the clean data. On other paths the solvers integrate dx/dt in t.

``steps`` is the spec field that trades quality for network evaluations (NFE); the evaluation
protocol records each solver's NFE on its path next to its numbers.
"""

from __future__ import annotations

import math

import torch

from genframe import Field, GenframeError, ProbabilityPath, Solver, component, hookimpl, param

INF = math.inf


class _Level:
    """One noise level of a solve: sigma, the time the network is asked at, and the path's scales there."""

    def __init__(self, path: ProbabilityPath, sigma: float):
        self.sigma = sigma
        # sigma = 0 is the clean data, x = D: no network is evaluated there
        self.t, self.a, self.s = path.level(sigma) if sigma > 0 else (1.0, 1.0, 0.0)


def _levels(solver: Solver, path: ProbabilityPath, x: torch.Tensor) -> tuple[list[_Level], torch.Tensor]:
    """The solve's noise levels, and ``x`` (the path's start, s(0) times noise) moved to the first of
    them where sampling starts lower than the path does (a VP path): the same noise, scaled.

    Computed on the host once per solver, path and step count, so that a solve replayed from a
    CUDA graph runs device work only."""
    cached = getattr(solver, "_schedule", None)
    if cached is None or cached[0] is not path or cached[1] != solver.steps:
        levels = [_Level(path, sigma) for sigma in path.noise_levels(solver.steps)]
        _, start = path.scales(torch.zeros((), dtype=torch.float64, device="cpu"))
        solver._schedule = (path, solver.steps, levels, levels[0].s / float(start))
    _, _, levels, scale = solver._schedule
    return levels, x if scale == 1.0 else x * scale


def _predict(field: Field, x: torch.Tensor, level: _Level) -> tuple[torch.Tensor, torch.Tensor]:
    """(D, eps): the denoised estimate at ``level`` and the noise it implies, (x - a D) / s."""
    denoised = field.denoised(x, x.new_full((), level.t))
    return denoised, (x - level.a * denoised) / level.s


def _euler(denoised: torch.Tensor, noise: torch.Tensor, to: _Level) -> torch.Tensor:
    """The exact step for a fixed denoiser: the point at ``to`` with the same data and noise estimates."""
    return to.a * denoised + to.s * noise if to.s else denoised


def _heun_step(field: Field, x: torch.Tensor, at: _Level, to: _Level,
               first: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Karras et al.'s Algorithm 1 step from ``at`` to ``to``: Euler in sigma, then the trapezoidal
    correction with the slope at the end, except for a step to sigma = 0 (nothing to evaluate there)
    or from pure noise (sigma infinite: y = x / a is unbounded there)."""
    denoised, noise = first if first is not None else _predict(field, x, at)
    guess = _euler(denoised, noise, to)
    if to.sigma == 0 or at.sigma == INF:
        return guess
    _, noise_there = _predict(field, guess, to)
    y = x / at.a + (to.sigma - at.sigma) * 0.5 * (noise + noise_there)  # dy/dsigma = eps
    return to.a * y


def _gaussian(solver: Solver, path: ProbabilityPath) -> None:
    if not path.gaussian:
        raise GenframeError(f"solver {solver.type_name!r} steps through noise levels and needs a Gaussian path; "
                            f"path {path.type_name!r} is not one: use euler or heun")


@component("solver", "euler")
class Euler(Solver):
    """Euler's method in the path's noise level: one network evaluation per step.

    On a Gaussian path, exact whenever the denoised estimate is constant over a step (DDIM on a VP
    path); on others, Euler in t.
    """

    steps: int = param(32, ge=1, help="integration steps")

    def solve(self, velocity: Field, x: torch.Tensor, times: torch.Tensor, path: ProbabilityPath,
              generator: torch.Generator | None = None) -> torch.Tensor:
        if not path.gaussian:
            for i in range(len(times) - 1):
                x = x + (times[i + 1] - times[i]) * velocity(x, times[i])
            return x
        levels, x = _levels(self, path, x)
        for at, to in zip(levels, levels[1:]):
            x = _euler(*_predict(velocity, x, at), to)
        return x


@component("solver", "heun")
class Heun(Solver):
    """Heun's second-order method in the path's noise level (Karras et al. 2022, Algorithm 1).

    An Euler step, then the mean of the slopes at both ends; the last step, to the clean data, is
    Euler's, so NFE = 2 steps - 1 (2 steps - 2 on the linear path, whose first step leaves pure
    noise). On a path that is not Gaussian, Heun in t, without a correction at the path's end.
    """

    steps: int = param(16, ge=1, help="integration steps")

    def solve(self, velocity: Field, x: torch.Tensor, times: torch.Tensor, path: ProbabilityPath,
              generator: torch.Generator | None = None) -> torch.Tensor:
        if not path.gaussian:
            for i in range(len(times) - 1):
                step, slope = times[i + 1] - times[i], velocity(x, times[i])
                guess = x + step * slope
                x = guess if i == len(times) - 2 else x + step * 0.5 * (slope + velocity(guess, times[i + 1]))
            return x
        levels, x = _levels(self, path, x)
        for at, to in zip(levels, levels[1:]):
            x = _heun_step(velocity, x, at, to)
        return x

    def evaluations(self, path: ProbabilityPath | None = None) -> int:
        if path is None or not path.gaussian:
            return max(1, 2 * self.steps - 1)
        levels = path.noise_levels(self.steps)
        return 2 * self.steps - 1 - (levels[0] == INF and self.steps > 1)


@component("solver", "stochastic")
class Stochastic(Solver):
    """Karras et al.'s stochastic sampler (2022, Algorithm 2): Heun steps after adding noise back.

    At each noise level sigma in [s_tmin, s_tmax], it first raises the level to sigma (1 + gamma),
    gamma = min(churn / steps, sqrt(2) - 1), adding the fresh noise (scaled by s_noise) that the
    higher level has, which corrects the errors of earlier steps. The level never rises above the
    path's start, where the network was never trained. The noise comes from ``generator``, or else
    from torch's default generator, which the sampler chain seeds from the sampling seed: the same
    seed gives the same samples. NFE as Heun's.
    """

    steps: int = param(16, ge=1, help="integration steps")
    churn: float = param(40.0, ge=0, help="S_churn: total noise added back over the solve (0: Heun's method)")
    s_tmin: float = param(0.05, ge=0, help="lowest noise level at which noise is added back")
    s_tmax: float = param(50.0, ge=0, help="highest noise level at which noise is added back")
    s_noise: float = param(1.003, gt=0, help="scale of the added noise (slightly above 1 offsets the "
                                              "denoiser's tendency to remove too much)")

    def solve(self, velocity: Field, x: torch.Tensor, times: torch.Tensor, path: ProbabilityPath,
              generator: torch.Generator | None = None) -> torch.Tensor:
        _gaussian(self, path)
        levels, x = _levels(self, path, x)
        gamma = min(self.churn / self.steps, math.sqrt(2.0) - 1.0)
        for at, to in zip(levels, levels[1:]):
            raised = min(at.sigma * (1.0 + gamma), levels[0].sigma)
            if self.s_tmin <= at.sigma <= self.s_tmax and at.sigma < raised < INF:
                higher = self._raised(path, raised)
                noise = torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)
                extra = math.sqrt(raised ** 2 - at.sigma ** 2) * self.s_noise
                x, at = higher.a * (x / at.a + extra * noise), higher
            x = _heun_step(velocity, x, at, to)
        return x

    def _raised(self, path: ProbabilityPath, sigma: float) -> _Level:
        """The level noise is raised to, computed once (see _levels)."""
        raised = self.__dict__.setdefault("_raised_levels", {})
        if (path, sigma) not in raised:
            raised[(path, sigma)] = _Level(path, sigma)
        return raised[(path, sigma)]

    def evaluations(self, path: ProbabilityPath | None = None) -> int:
        return Heun(steps=self.steps).evaluations(path)


@component("solver", "dpm_solver_pp")
class DPMSolverPP(Solver):
    """DPM-Solver++(2M) (Lu et al. 2022): a second-order multistep solver, one evaluation per step.

    An exponential integrator in the log noise level with the data predictions of the current and
    the previous step; the first step, and the last (to the clean data), are first order (DDIM).
    The fast sampler diffusion users know: converged by about 10-20 evaluations.
    """

    steps: int = param(16, ge=1, help="integration steps (= network evaluations)")

    def solve(self, velocity: Field, x: torch.Tensor, times: torch.Tensor, path: ProbabilityPath,
              generator: torch.Generator | None = None) -> torch.Tensor:
        _gaussian(self, path)
        levels, x = _levels(self, path, x)
        previous, previous_width = None, INF  # the last data prediction and its step's width in log sigma
        for at, to in zip(levels, levels[1:]):
            denoised, _ = _predict(velocity, x, at)
            width = math.log(at.sigma / to.sigma) if 0 < to.sigma < at.sigma < INF else INF
            estimate = denoised
            if previous is not None and width < INF and previous_width < INF:
                half_ratio = width / (2.0 * previous_width)  # 1 / (2 r), r = h_previous / h
                estimate = (1.0 + half_ratio) * denoised - half_ratio * previous
            # x' = (s'/s) x + a' (1 - sigma'/sigma) D: exact for a fixed D, whatever the step's width
            shrink = to.sigma / at.sigma if at.sigma < INF else 0.0
            x = (to.s / at.s) * x + to.a * (1.0 - shrink) * estimate
            previous, previous_width = denoised, width
        return x


@hookimpl
def genframe_components():
    return [Euler, Heun, Stochastic, DPMSolverPP]
