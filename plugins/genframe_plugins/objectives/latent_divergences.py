"""Latent divergences: the term that turns an autoencoder into a generative model.

An autoencoder's codes need not fill any region a sampler could draw from. The VAE adds, per
example, the KL divergence from the encoder's Gaussian posterior to the prior N(0, I); the WAE
adds a distance between the distribution of all codes and the prior, estimated by the MMD between
a batch of codes and as many prior samples. The autoencoding trainer adds ``weight`` times the
term to its reconstruction loss, so AE, VAE and WAE differ in one spec field.
"""

from __future__ import annotations

from typing import Literal

import torch

from genframe import (Component, Encoder, GenframeError, LatentDivergence, Posterior, Prior, SpecError,
                      StageContext, at_least_float32, component, hookimpl, param, per_example, ref)

#: Prior samples drawn (with a fixed seed, on the CPU) to measure the prior's spread for the MMD kernels.
SPREAD_SAMPLES = 10_000


def gaussian_kl(mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, diag(exp(log_var))) || N(0, I)) of each row, in closed form."""
    return 0.5 * (mean.square() + log_var.exp() - log_var - 1.0).sum(dim=1)


@component("latent_divergence", "kl")
class KL(LatentDivergence):
    """KL(q(z|x) || N(0, I)) of a diagonal Gaussian posterior in closed form: the VAE's latent term.

    Summed over the code's dimensions and averaged over the batch, like the reconstruction losses,
    so that with weight 1 the objective is the negative ELBO per example (with l2, for a Gaussian
    likelihood of variance 1/2 on the [-1, 1] pixel scale, up to its constant).
    """

    weight: float = param(1.0, ge=0, help="multiplier of the term (1: the ELBO; above 1: a beta-VAE)")

    def check(self, encoder: Encoder, components: dict[str, Component], path: str) -> None:
        if not encoder.gaussian_posterior:
            raise SpecError(f"kl needs an encoder with a Gaussian posterior (mean and log-variance), but the "
                            f"encoder is a {encoder.type_name}; use a gaussian_encoder, or the sample-based mmd",
                            path=f"{path}.type")

    def __call__(self, posterior: Posterior, generator: torch.Generator | None = None) -> torch.Tensor:
        if posterior.log_var is None:
            raise GenframeError("latent_divergence kl: the posterior has no log-variance (a deterministic encoder)")
        return gaussian_kl(at_least_float32(posterior.mean), at_least_float32(posterior.log_var)).mean()


def squared_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pairwise squared Euclidean distances of the rows, clamped at 0 against rounding in the expansion."""
    return (x.square().sum(1)[:, None] + y.square().sum(1)[None, :] - 2.0 * x @ y.T).clamp_min(0.0)


def kernel_sum(sq_dist: torch.Tensor, kernel: str, bandwidths: list[float]) -> torch.Tensor:
    """Sum over bandwidths C of the kernel at squared distances: C / (C + d2) (imq) or exp(-d2 / C) (rbf)."""
    total = torch.zeros_like(sq_dist)
    for c in bandwidths:
        total = total + (c / (c + sq_dist) if kernel == "imq" else torch.exp(-sq_dist / c))
    return total


def mmd_unbiased(x: torch.Tensor, y: torch.Tensor, kernel: str, bandwidths: list[float]) -> torch.Tensor:
    """Unbiased U-statistic of MMD^2 between the rows of ``x`` (n) and ``y`` (m), n, m >= 2.

    Within-sample means leave out the pairs of a point with itself (Gretton et al. 2012, eq. 3);
    that removes the bias of the plain V-statistic, so the estimate is centred on zero, and may be
    negative, when both samples come from one distribution.
    """
    n, m = x.shape[0], y.shape[0]
    if n < 2 or m < 2:
        raise ValueError(f"the unbiased MMD needs at least two samples on each side, got {n} and {m}")
    kxx = kernel_sum(squared_distances(x, x), kernel, bandwidths)
    kyy = kernel_sum(squared_distances(y, y), kernel, bandwidths)
    kxy = kernel_sum(squared_distances(x, y), kernel, bandwidths)
    within_x = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    within_y = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return within_x + within_y - 2.0 * kxy.mean()


def prior_spread(prior: Prior) -> float:
    """E|x - y|^2 for independent prior samples, 2 tr(Cov): 2 d for N(0, I_d), 2 on the unit sphere.

    Estimated from a fixed-seed draw so that it does not consume the run's random numbers.
    """
    samples = prior.sample(SPREAD_SAMPLES, device="cpu", generator=torch.Generator().manual_seed(0))
    return float(2.0 * samples.double().var(dim=0).sum())


@component("latent_divergence", "mmd")
class MMD(LatentDivergence):
    """Maximum mean discrepancy between a batch's codes and as many prior samples (WAE-MMD).

    The unbiased U-statistic with a sum of kernels at several bandwidths C = scale x base, where
    base defaults to the mean squared distance between two prior samples (2 d for N(0, I_d): the
    C = 2 d sigma^2 of Tolstikhin et al.). Several scales keep a useful gradient both when the codes
    are far from the prior and when they are close; the inverse multiquadratic kernel's heavy
    tails keep one for outlying codes, where a Gaussian kernel's vanishes.
    """

    prior: str = ref("prior", "prior", read_only=True, help="the prior the codes are pulled towards")
    weight: float = param(10.0, ge=0, help="lambda, the multiplier of the term (10 in the WAE paper's MNIST runs)")
    kernel: Literal["imq", "rbf"] = param("imq", help="imq: C / (C + |x - y|^2); rbf: exp(-|x - y|^2 / C)")
    scales: list[float] = param(factory=lambda: [0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0],
                                help="multipliers of the base bandwidth; the kernels at all of them are summed")
    base: float | None = param(None, gt=0, help="base bandwidth C (a squared length); null: the mean squared "
                                                "distance between two prior samples")

    def __attrs_post_init__(self) -> None:
        if not self.scales or any(not isinstance(s, (int, float)) or s <= 0 for s in self.scales):
            raise GenframeError(f"mmd: scales must list positive numbers, got {self.scales!r}")

    def check(self, encoder: Encoder, components: dict[str, Component], path: str) -> None:
        prior = components[self.prior]
        code_dim = getattr(encoder, "dim", prior.dim)
        if prior.dim != code_dim:
            raise SpecError(f"prior {self.prior!r} draws {prior.dim}-d samples but the encoder makes "
                            f"{code_dim}-d codes", path=f"{path}.prior")

    def bind(self, ctx: StageContext) -> None:
        self._prior = ctx.component(self.prior, Prior)
        base = self.base if self.base is not None else prior_spread(self._prior)
        self._bandwidths = [s * base for s in self.scales]

    def __call__(self, posterior: Posterior, generator: torch.Generator | None = None) -> torch.Tensor:
        codes = at_least_float32(posterior.sample)
        samples = per_example(lambda n: self._prior.sample(n, device=codes.device, generator=generator),
                              codes.shape[0]).to(codes.dtype)
        return mmd_unbiased(codes, samples, self.kernel, self._bandwidths)


@hookimpl
def genframe_components():
    return [KL, MMD]
