"""Built-in latent priors: the distributions a sampler chain starts from.

The choice matters because a generator only learns the part of latent space it is trained on: GANs
and VAEs usually assume a Gaussian, while GLO's codes live on the unit sphere.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch.distributions import MultivariateNormal

from genframe import GenframeError, ModuleComponent, Prior, component, hookimpl, param
from genframe_plugins.networks.latents import project


def _dim_param():
    return param(None, ge=1, help="size of one sample; default: the width of the link it feeds in the sampler "
                                  "chain (a generator's latent_dim, a mapper's in_dim)")


def _width(prior: Prior) -> int:
    if prior.dim is None:
        raise GenframeError(f"{prior.type_name}: dim is not set and this prior does not start a sampler chain "
                            "that could size it; give its dim")
    return prior.dim


@component("prior", "gaussian")
class Gaussian(Prior):
    """Standard normal N(0, I): the usual GAN and VAE prior."""

    dim: int | None = _dim_param()

    def sample(self, n: int, *, device: torch.device | str = "cpu",
               generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn(n, _width(self), device=device, generator=generator)


@component("prior", "uniform")
class Uniform(Prior):
    """Uniform on the cube [-1, 1]^dim: bounded noise, as in the original DCGAN."""

    dim: int | None = _dim_param()

    def sample(self, n: int, *, device: torch.device | str = "cpu",
               generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.rand(n, _width(self), device=device, generator=generator).mul_(2.0).sub_(1.0)


@component("prior", "sphere")
class Sphere(Prior):
    """Uniform on the unit sphere: matches GLO codes, which are projected onto that sphere."""

    dim: int | None = _dim_param()

    def sample(self, n: int, *, device: torch.device | str = "cpu",
               generator: torch.Generator | None = None) -> torch.Tensor:
        # A standard Gaussian is rotation invariant, so its directions are uniform on the sphere.
        return project(torch.randn(n, _width(self), device=device, generator=generator), "sphere")


@component("prior", "fitted_gaussian")
class FittedGaussian(Prior, ModuleComponent):
    """A full-covariance Gaussian fitted to learned codes: how the GLO paper samples, and GLANN's baseline.

    A ``fit_prior`` stage sets its mean and covariance from an encoder's codes of the training data.
    They are buffers, so checkpoints hold them and ``genframe sample`` draws from the fitted
    distribution without the data. Before fitting it is N(0, I).
    """

    dim: int = param(64, ge=1, help="size of one sample (the encoder's code size)")
    ridge: float = param(1e-6, ge=0, help="added to the covariance's diagonal so that it stays positive definite")
    projection: Literal["none", "sphere", "ball"] = param(
        "none", help="project samples like the codes it was fitted to (GLO's are on the unit sphere)")

    def __attrs_post_init__(self) -> None:
        self.register_buffer("mean", torch.zeros(self.dim))
        self.register_buffer("scale_tril", torch.eye(self.dim))  # Cholesky factor of the covariance

    @torch.no_grad()
    def fit(self, codes: torch.Tensor) -> torch.Tensor:
        """Take the mean and covariance of ``codes`` (N x dim); returns their mean negative log-likelihood."""
        if codes.dim() != 2 or codes.shape[1] != self.dim or codes.shape[0] < 2:
            raise GenframeError(f"fitted_gaussian: needs at least 2 codes of size {self.dim} to fit, "
                                f"got shape {tuple(codes.shape)}")
        x = codes.double()  # float32 sums over thousands of codes would lose the small eigenvalues
        mean = x.mean(dim=0)
        covariance = torch.cov(x.T).reshape(self.dim, self.dim)
        covariance = covariance + self.ridge * torch.eye(self.dim, dtype=x.dtype, device=x.device)
        scale_tril, info = torch.linalg.cholesky_ex(covariance)
        if int(info) != 0:
            raise GenframeError(f"fitted_gaussian: the codes' covariance is singular; raise ridge "
                                f"(now {self.ridge:g}) or use codes that span all {self.dim} dimensions")
        self.mean.copy_(mean)
        self.scale_tril.copy_(scale_tril)
        return -MultivariateNormal(mean, scale_tril=scale_tril).log_prob(x).mean().to(torch.get_default_dtype())

    def sample(self, n: int, *, device: torch.device | str = "cpu",
               generator: torch.Generator | None = None) -> torch.Tensor:
        z = torch.randn(n, self.dim, device=device, generator=generator)
        return project(self.mean.to(device) + z @ self.scale_tril.to(device).T, self.projection)


@hookimpl
def genframe_components():
    return [Gaussian, Uniform, Sphere, FittedGaussian]
