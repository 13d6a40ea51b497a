"""Probability paths: flow matching and diffusion as one spec line.

Every path here is Gaussian: x_t = a(t) x1 + s(t) x0 with data x1, standard normal noise x0 and
time t from 0 (noise) to 1 (data). A path says how training times are drawn, what the network
regresses and how its output becomes the velocity dx/dt that a solver integrates; the base class
derives the rest (the noisy point, the starting point, re-noising for stochastic solvers) from
``scales`` alone.
"""

from __future__ import annotations

import abc
import math
from typing import Literal

import torch

from genframe import ProbabilityPath, component, hookimpl, param


def _column(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``t`` (one value per row, or one for all) shaped to broadcast over the rows of ``like``."""
    return t.reshape(-1, *([1] * (like.dim() - 1))) if t.dim() else t


class _Gaussian(ProbabilityPath):
    """x_t = a(t) x1 + s(t) x0; subclasses give ``scales`` (and their derivatives where they need them)."""

    @abc.abstractmethod
    def scales(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(a(t), s(t)): how much data and how much noise x_t holds at time ``t``."""

    def noisy(self, data: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a, s = self.scales(_column(t, data))
        return a * data + s * noise

    def start(self, noise: torch.Tensor) -> torch.Tensor:
        _, s = self.scales(torch.zeros((), device=noise.device))
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

    def target(self, data, noise, x_t, t):
        return data - noise

    def velocity(self, output, x_t, t):
        return output


@component("probability_path", "vp_cosine")
class VPCosine(_Gaussian):
    """Variance-preserving diffusion, cosine schedule (Ho et al. 2020; Nichol & Dhariwal 2021), noise prediction.

    a(t)^2 + s(t)^2 = 1, the network predicts the noise (epsilon), and sampling integrates the
    probability-flow ODE. Diffusion time runs from ``s_max`` (almost pure noise) down to ``s_min``.
    """

    offset: float = param(0.008, gt=0, help="the schedule's small offset s (keeps beta finite near 0)")
    s_min: float = param(1e-4, gt=0, lt=1, help="diffusion time at t = 1 (a little noise remains)")
    s_max: float = param(0.999, gt=0, le=1, help="diffusion time at t = 0")

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

    def training_times(self, n, *, device, generator):
        return torch.rand(n, device=device, generator=generator)

    def target(self, data, noise, x_t, t):
        return noise

    def velocity(self, output, x_t, t):
        # d alpha_bar / dt through u(s(t)): s' = -(s_max - s_min), du/ds = pi / (2 (1 + offset))
        d_alpha_bar = (torch.sin(2 * self._angle(t)) / self._norm() * (math.pi / 2) / (1 + self.offset)
                       * (self.s_max - self.s_min))
        a, s = self.scales(t)
        data = (x_t - s * output) / a  # the data the predicted noise implies
        return d_alpha_bar / (2 * a) * data - d_alpha_bar / (2 * s) * output


@component("probability_path", "edm")
class EDM(_Gaussian):
    """EDM (Karras et al. 2022): noise levels on a rho-spaced schedule and a preconditioned network.

    x = x1 + sigma x0 with sigma from ``sigma_max`` down to ``sigma_min``; the network is
    preconditioned (c_in, c_out, c_skip, c_noise) so that its input and target have unit variance at
    every noise level; training noise levels are log-normal (P_mean, P_std).
    """

    sigma_min: float = param(0.002, gt=0)
    sigma_max: float = param(80.0, gt=0)
    rho: float = param(7.0, gt=0, help="curvature of the sampling schedule in sigma")
    sigma_data: float = param(0.5, gt=0, help="standard deviation of the data")
    p_mean: float = param(-1.2, help="mean of log sigma during training")
    p_std: float = param(1.2, gt=0, help="standard deviation of log sigma during training")

    def _ends(self) -> tuple[float, float]:
        return self.sigma_max ** (1 / self.rho), self.sigma_min ** (1 / self.rho)

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        first, last = self._ends()
        return (first + t * (last - first)) ** self.rho

    def scales(self, t):
        return torch.ones_like(t), self.sigma(t)

    def training_times(self, n, *, device, generator):
        log_sigma = self.p_mean + self.p_std * torch.randn(n, device=device, generator=generator)
        root = log_sigma.exp().clamp(self.sigma_min, self.sigma_max) ** (1 / self.rho)
        first, last = self._ends()
        return (root - first) / (last - first)

    def _coefficients(self, t, like):
        sigma = _column(self.sigma(t), like)
        total = sigma.square() + self.sigma_data ** 2
        return sigma, self.sigma_data ** 2 / total, sigma * self.sigma_data / total.sqrt(), 1 / total.sqrt()

    def network_input(self, x_t, t):
        _, _, _, c_in = self._coefficients(t, x_t)
        return c_in * x_t, self.sigma(t).log() / 4

    def target(self, data, noise, x_t, t):
        _, c_skip, c_out, _ = self._coefficients(t, x_t)
        return (data - c_skip * x_t) / c_out

    def velocity(self, output, x_t, t):
        sigma, c_skip, c_out, _ = self._coefficients(t, x_t)
        denoised = c_skip * x_t + c_out * output
        first, last = self._ends()
        d_sigma = self.rho * (first + t * (last - first)) ** (self.rho - 1) * (last - first)
        return (x_t - denoised) / sigma * _column(d_sigma, x_t)


@hookimpl
def genframe_components():
    return [Linear, VPCosine, EDM]
