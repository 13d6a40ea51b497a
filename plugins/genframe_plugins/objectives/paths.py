"""Probability paths: flow matching and diffusion as one spec line.

Every path here is Gaussian: x_t = a(t) x1 + s(t) x0 with data x1, standard normal noise x0 and
time t from 0 (noise) to 1 (data). A path says how training times are drawn, what the network
regresses, and how its output becomes the velocity dx/dt or the denoised estimate E[x1 | x_t]. The
base class derives the rest from ``scales`` and ``time_of``: the noisy point, the starting point,
re-noising, and the noise levels sigma = s / a that the solvers step through (Karras et al. 2022:
in sigma, on x / a, a step with a fixed denoiser is exact, so every path samples as well as its
network allows at few steps).
"""

from __future__ import annotations

import abc
import math
from collections.abc import Iterable
from typing import Literal

import torch

from genframe import ModuleComponent, ProbabilityPath, component, hookimpl, param


def _column(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``t`` (one value per row, or one for all) shaped to broadcast over the rows of ``like``."""
    return t.reshape(-1, *([1] * (like.dim() - 1))) if t.dim() else t


def _host(value: float) -> torch.Tensor:
    """A number as a float64 tensor on the CPU, for schedules computed on the host (also while
    genframe validate builds the system under the meta device)."""
    return torch.tensor(value, dtype=torch.float64, device="cpu")


def rho_levels(high: float, low: float, steps: int, rho: float) -> list[float]:
    """Karras et al.'s schedule: ``steps`` noise levels from ``high`` to ``low``, evenly spaced in
    sigma^(1/rho) (rho = 7 puts more steps at low noise, where the details form), then 0."""
    if steps == 1:
        return [high, 0.0]
    first, last = high ** (1 / rho), low ** (1 / rho)
    return [(first + i / (steps - 1) * (last - first)) ** rho for i in range(steps)] + [0.0]


class _Gaussian(ProbabilityPath):
    """x_t = a(t) x1 + s(t) x0; subclasses give ``scales``, ``time_of`` and ``denoised``."""

    gaussian = True

    @abc.abstractmethod
    def scales(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(a(t), s(t)): how much data and how much noise x_t holds at time ``t``."""

    @abc.abstractmethod
    def time_of(self, sigma: torch.Tensor) -> torch.Tensor:
        """The time at which the noise level s(t) / a(t) is ``sigma`` (the inverse of :meth:`sigma`)."""

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """The noise level s(t) / a(t): infinite where x_t is pure noise, 0 where it is data."""
        a, s = self.scales(t)
        return s / a

    def level(self, sigma: float) -> tuple[float, float, float]:
        t = self.time_of(_host(sigma))
        a, s = self.scales(t)
        return float(t), float(a), float(s)

    def noise_levels(self, steps: int) -> list[float]:
        """sigma at ``steps`` evenly spaced times from 0 to 1, then 0: a path that still holds noise
        at t = 1 (EDM's sigma_min, VP's s_min) ends with a step to the clean data, as Karras et
        al.'s schedule does; one that reaches the data at t = 1 (linear) spreads its steps to there."""
        ends_clean = self.level_at_end() == 0.0
        times = torch.linspace(0.0, 1.0, steps + 1 if ends_clean else steps, dtype=torch.float64, device="cpu")
        levels = [float(self.sigma(t)) for t in times]
        return levels if ends_clean else [*levels, 0.0]

    def level_at_end(self) -> float:
        return float(self.sigma(_host(1.0)))

    def noisy(self, data: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a, s = self.scales(_column(t, data))
        return a * data + s * noise

    def start(self, noise: torch.Tensor) -> torch.Tensor:
        _, s = self.scales(torch.zeros((), dtype=noise.dtype, device=noise.device))
        return s * noise

    def renoise(self, x: torch.Tensor, t: torch.Tensor, earlier: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x at time ``earlier`` < ``t``, with the path's marginal there: scaled back, fresh noise added
        (the "churn" of stochastic samplers, Karras et al. 2022)."""
        a_t, s_t = self.scales(t)
        a_e, s_e = self.scales(earlier)
        ratio = a_e / a_t
        extra = (s_e.square() - (ratio * s_t).square()).clamp(min=0.0).sqrt()
        return ratio * x + extra * noise


@component("probability_path", "linear")
class Linear(_Gaussian):
    """Rectified flow / flow matching (Liu et al. 2023; Lipman et al. 2023): straight lines from noise to data.

    x_t = t x1 + (1 - t) x0, whose velocity x1 - x0 the network regresses directly.
    """

    time_sampling: Literal["uniform", "logit_normal"] = param(
        "uniform", help="training times: uniform, or logit-normal (more weight mid-path, Esser et al. 2024)")

    def scales(self, t):
        return t, 1.0 - t

    def training_times(self, n, *, device, generator):
        if self.time_sampling == "uniform":
            return torch.rand(n, device=device, generator=generator)
        return torch.sigmoid(torch.randn(n, device=device, generator=generator))

    def time_of(self, sigma):
        return 1.0 / (1.0 + sigma)

    def target(self, data, noise, x_t, t):
        return data - noise

    def velocity(self, output, x_t, t):
        return output

    def denoised(self, output, x_t, t):
        return x_t + _column(1.0 - t, x_t) * output


@component("probability_path", "vp_cosine")
class VPCosine(_Gaussian):
    """Variance-preserving diffusion, cosine schedule (Ho et al. 2020; Nichol & Dhariwal 2021), noise prediction.

    a(t)^2 + s(t)^2 = 1, the network predicts the noise (epsilon), and sampling integrates the
    probability-flow ODE. Diffusion time runs from ``s_max`` (almost pure noise) down to ``s_min``.
    """

    offset: float = param(0.008, gt=0, help="the schedule's small offset s (keeps beta finite near 0)")
    s_min: float = param(1e-4, gt=0, lt=1, help="diffusion time at t = 1 (a little noise remains)")
    s_max: float = param(0.999, gt=0, le=1, help="diffusion time at t = 0")
    sigma_start: float = param(80.0, gt=0, help="noise level s / a that sampling starts from, if below the "
                                                "path's start (about 640): Karras et al. sample VP models from 80")
    rho: float = param(7.0, gt=0, help="curvature of the sampling schedule in sigma (Karras et al.)")

    def __attrs_post_init__(self) -> None:
        if self.s_min >= self.s_max:
            raise ValueError(f"s_min ({self.s_min:g}) must be below s_max ({self.s_max:g}): diffusion time runs "
                             "from s_max (noise) down to s_min (data)")

    def _diffusion_time(self, t):
        return self.s_min + (self.s_max - self.s_min) * (1.0 - t)

    def _angle(self, t):
        """u(t) with alpha_bar = cos(u)^2 / cos(u(s = 0))^2."""
        return (self._diffusion_time(t) + self.offset) / (1 + self.offset) * (math.pi / 2)

    def _norm(self) -> float:
        return math.cos(self.offset / (1 + self.offset) * math.pi / 2) ** 2

    def _alpha_bar(self, t):
        return torch.cos(self._angle(t)).square() / self._norm()

    def scales(self, t):
        alpha_bar = self._alpha_bar(t)
        return alpha_bar.sqrt(), (1.0 - alpha_bar).clamp(min=0.0).sqrt()

    def time_of(self, sigma):
        # alpha_bar = 1 / (1 + sigma^2) = cos(u)^2 / norm, then u back to the diffusion time and t
        angle = torch.acos((self._norm() / (1.0 + sigma.square())).sqrt().clamp(max=1.0))
        diffusion_time = angle * (2 / math.pi) * (1 + self.offset) - self.offset
        return 1.0 - (diffusion_time - self.s_min) / (self.s_max - self.s_min)

    def training_times(self, n, *, device, generator):
        return torch.rand(n, device=device, generator=generator)

    def noise_levels(self, steps):
        """Karras et al.'s schedule, which they found best for VP networks too: evenly spaced times
        put the first step from sigma 640 to 4 and leave Heun's method 2x off on Gaussian data at 8 steps."""
        high = min(float(self.sigma(_host(0.0))), self.sigma_start)
        return rho_levels(high, self.level_at_end(), steps, self.rho)

    def target(self, data, noise, x_t, t):
        return noise

    def denoised(self, output, x_t, t):
        a, s = self.scales(_column(t, x_t))
        return (x_t - s * output) / a

    def velocity(self, output, x_t, t):
        # d alpha_bar / dt through u(s(t)): s' = -(s_max - s_min), du/ds = pi / (2 (1 + offset))
        d_alpha_bar = (torch.sin(2 * self._angle(t)) / self._norm() * (math.pi / 2) / (1 + self.offset)
                       * (self.s_max - self.s_min))
        a, s = self.scales(t)
        data = (x_t - s * output) / a  # the data the predicted noise implies
        return d_alpha_bar / (2 * a) * data - d_alpha_bar / (2 * s) * output


@component("probability_path", "edm")
class EDM(_Gaussian, ModuleComponent):
    """EDM (Karras et al. 2022): noise levels on a rho-spaced schedule and a preconditioned network.

    x = x1 + sigma x0 with sigma from ``sigma_max`` down to ``sigma_min``; the network is
    preconditioned (c_in, c_out, c_skip, c_noise) so that its input and target have unit second
    moment at every noise level; training noise levels are log-normal (P_mean, P_std). Left null,
    ``sigma_data`` is measured on the training data when the stage starts (their root mean square,
    which the preconditioning assumes) and kept in checkpoints.
    """

    sigma_min: float = param(0.002, gt=0)
    sigma_max: float = param(80.0, gt=0)
    rho: float = param(7.0, gt=0, help="curvature of the sampling schedule in sigma")
    sigma_data: float | None = param(
        None, gt=0, help="scale of the data (root mean square; 0.5 in the paper's CIFAR-10 runs); null: measured "
                         "on the training data (MNIST in [-1, 1]: about 0.96)")
    p_mean: float = param(-1.2, help="mean of log sigma during training")
    p_std: float = param(1.2, gt=0, help="standard deviation of log sigma during training")

    def __attrs_post_init__(self) -> None:
        if self.sigma_min >= self.sigma_max:
            raise ValueError(f"sigma_min ({self.sigma_min:g}) must be below sigma_max ({self.sigma_max:g})")
        if self.sigma_data is None:  # measured by fit; until then the paper's value
            self.register_buffer("measured_sigma_data", torch.tensor(0.5))

    def _scale(self) -> float | torch.Tensor:
        return self.sigma_data if self.sigma_data is not None else self.measured_sigma_data

    @torch.no_grad()
    def fit(self, batches: Iterable[torch.Tensor]) -> None:
        if self.sigma_data is None:
            total, count = 0.0, 0
            for batch in batches:  # summed per batch on its device, in double precision on the host
                total, count = total + float(batch.square().sum()), count + batch.numel()
            self.measured_sigma_data.fill_(math.sqrt(total / max(count, 1)))

    def _ends(self) -> tuple[float, float]:
        return self.sigma_max ** (1 / self.rho), self.sigma_min ** (1 / self.rho)

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        first, last = self._ends()
        return (first + t * (last - first)) ** self.rho

    def scales(self, t):
        return torch.ones_like(t), self.sigma(t)

    def time_of(self, sigma):
        first, last = self._ends()
        return (sigma ** (1 / self.rho) - first) / (last - first)

    def training_times(self, n, *, device, generator):
        log_sigma = self.p_mean + self.p_std * torch.randn(n, device=device, generator=generator)
        root = log_sigma.exp().clamp(self.sigma_min, self.sigma_max) ** (1 / self.rho)
        first, last = self._ends()
        return (root - first) / (last - first)

    def _coefficients(self, t, like):
        sigma, scale = _column(self.sigma(t), like), self._scale()
        total = sigma.square() + scale ** 2
        return sigma, scale ** 2 / total, sigma * scale / total.sqrt(), 1 / total.sqrt()

    def network_input(self, x_t, t):
        _, _, _, c_in = self._coefficients(t, x_t)
        return c_in * x_t, self.sigma(t).log() / 4

    def target(self, data, noise, x_t, t):
        _, c_skip, c_out, _ = self._coefficients(t, x_t)
        return (data - c_skip * x_t) / c_out

    def denoised(self, output, x_t, t):
        _, c_skip, c_out, _ = self._coefficients(t, x_t)
        return c_skip * x_t + c_out * output

    def velocity(self, output, x_t, t):
        sigma = _column(self.sigma(t), x_t)
        denoised = self.denoised(output, x_t, t)
        first, last = self._ends()
        d_sigma = self.rho * (first + t * (last - first)) ** (self.rho - 1) * (last - first)
        return (x_t - denoised) / sigma * _column(d_sigma, x_t)


@hookimpl
def genframe_components():
    return [Linear, VPCosine, EDM]
