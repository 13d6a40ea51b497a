"""Built-in latent priors: the distributions a sampler chain starts from.

The choice matters because a generator only learns the part of latent space it is trained on: GANs
and VAEs usually assume a Gaussian, while GLO's codes live on the unit sphere.
"""

from __future__ import annotations

import torch

from genframe import Prior, component, hookimpl, param
from genframe_plugins.latents import project


@component("prior", "gaussian")
class Gaussian(Prior):
    """Standard normal N(0, I): the usual GAN and VAE prior."""

    dim: int = param(64, ge=1, help="size of one sample (the latent size of what consumes it)")

    def sample(self, n: int, *, device: torch.device | str = "cpu",
               generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn(n, self.dim, device=device, generator=generator)


@component("prior", "uniform")
class Uniform(Prior):
    """Uniform on the cube [-1, 1]^dim: bounded noise, as in the original DCGAN."""

    dim: int = param(64, ge=1, help="size of one sample (the latent size of what consumes it)")

    def sample(self, n: int, *, device: torch.device | str = "cpu",
               generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.rand(n, self.dim, device=device, generator=generator).mul_(2.0).sub_(1.0)


@component("prior", "sphere")
class Sphere(Prior):
    """Uniform on the unit sphere: matches GLO codes, which are projected onto that sphere."""

    dim: int = param(64, ge=1, help="size of one sample (the latent size of what consumes it)")

    def sample(self, n: int, *, device: torch.device | str = "cpu",
               generator: torch.Generator | None = None) -> torch.Tensor:
        # A standard Gaussian is rotation invariant, so its directions are uniform on the sphere.
        return project(torch.randn(n, self.dim, device=device, generator=generator), "sphere")


@hookimpl
def genframe_components():
    return [Gaussian, Uniform, Sphere]
