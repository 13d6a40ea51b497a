"""BEGAN's networks (Berthelot et al. 2017): an autoencoder critic whose score is a reconstruction energy.

The pieces are ordinary components, so BEGAN runs in the ``adversarial`` trainer like any GAN:
the ``autoencoder_critic`` scores each image by its pixel-wise L1 reconstruction error L(v), and the
``began`` divergence (in ``objectives/divergences.py``) turns those energies into losses, updates k_t
once per step and reports the convergence measure M. ``began_generator`` is the paper's generator:
the critic's decoder shape.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from genframe import BuildContext, Critic, Generator, at_least_float32, component, hookimpl, param
from genframe_plugins.networks.dcgan import halving_plan


def _conv3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, 1, 1)


def decoder(latent_dim: int, width: int, channels: int, image_size: int) -> list[nn.Module]:
    """BEGAN's decoder: a linear map to ``width`` maps at the base size, then at every scale two 3x3
    convolutions with ELU and a nearest-neighbour doubling, and a last 3x3 convolution to the image."""
    base, stages = halving_plan(image_size)
    layers: list[nn.Module] = [nn.Linear(latent_dim, width * base * base), nn.Unflatten(1, (width, base, base))]
    for scale in range(stages + 1):
        layers += [_conv3(width, width), nn.ELU(), _conv3(width, width), nn.ELU()]
        if scale < stages:
            layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
    return layers + [_conv3(width, channels)]


def encoder(latent_dim: int, width: int, channels: int, image_size: int) -> list[nn.Module]:
    """BEGAN's encoder: the decoder mirrored, with stride-2 convolutions to halve and the number of
    feature maps growing linearly (width, 2 width, 3 width...) at each halving."""
    base, stages = halving_plan(image_size)
    layers: list[nn.Module] = [_conv3(channels, width), nn.ELU()]
    for scale in range(stages + 1):
        maps = width * (scale + 1)
        layers += [_conv3(maps, maps), nn.ELU(), _conv3(maps, maps), nn.ELU()]
        if scale < stages:
            layers += [nn.Conv2d(maps, maps + width, 3, 2, 1), nn.ELU()]
    return layers + [nn.Flatten(), nn.Linear(width * (stages + 1) * base * base, latent_dim)]


@component("critic", "autoencoder_critic")
class AutoencoderCritic(Critic):
    """BEGAN's critic: an autoencoder scoring each image by its mean absolute reconstruction error.

    The score is an energy (low for what the critic reconstructs well), so it is meant for the
    ``began`` divergence, which the build enforces in that direction.
    """

    latent_dim: int = param(64, ge=1, help="h, the size of the bottleneck")
    width: int = param(64, ge=1, help="n, the feature maps at full resolution")
    channels: int | None = param(None, ge=1, help="image channels; default: the data's")
    image_size: int | None = param(None, ge=1, help="image side; default: the data's")

    def setup(self, ctx: BuildContext) -> None:
        channels, size = self.channels or ctx.channels, self.image_size or ctx.image_size
        self.encoder = nn.Sequential(*encoder(self.latent_dim, self.width, channels, size))
        self.decoder = nn.Sequential(*decoder(self.latent_dim, self.width, channels, size))

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return at_least_float32(x - self.reconstruct(x)).abs().flatten(1).mean(1)


@component("generator", "began_generator")
class BEGANGenerator(Generator):
    """BEGAN's generator: the autoencoder critic's decoder architecture (own weights), ending in a
    convolution as the paper's decoder does.

    A Tanh after it (``output: tanh``) can trap training at its start: the autoencoder critic first
    reconstructs the dark background of digits best, the generator's pre-activations run to large
    negative values, and the saturated Tanh passes almost no gradient back (measured on MNIST: every
    sample the same black image after 1,500 steps, pre-activations near -7).
    """

    latent_dim: int = param(64, ge=1, help="size of the latent vector it takes (the paper's N_z = h)")
    width: int = param(64, ge=1, help="n, the feature maps of every convolution")
    channels: int | None = param(None, ge=1, help="image channels; default: the data's")
    image_size: int | None = param(None, ge=1, help="image side; default: the data's")
    output: Literal["linear", "tanh"] = param(
        "linear", help="linear: the last convolution's output, as in the paper (images are clipped to [-1, 1] "
                       "only when saved); tanh: squashed into [-1, 1], which can saturate at the start")

    def setup(self, ctx: BuildContext) -> None:
        layers = decoder(self.latent_dim, self.width, self.channels or ctx.channels, self.image_size or ctx.image_size)
        self.net = nn.Sequential(*layers, *([nn.Tanh()] if self.output == "tanh" else []))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.flatten(1))


@hookimpl
def genframe_components():
    return [AutoencoderCritic, BEGANGenerator]
