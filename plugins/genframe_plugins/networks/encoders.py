"""Convolutional encoders for autoencoders (AE, WAE) and variational autoencoders (VAE).

An encoder mirrors the DCGAN critic: stride-2 convolutions halve the image down to the base size
that the DCGAN generator starts from (the same ``halving_plan``), with feature maps doubling on
the way, and a last linear layer predicts a code instead of a score. AE, WAE and VAE thereby share
one architecture and differ only in what that layer predicts and which latent divergence the
autoencoding trainer adds.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from torch import nn

from genframe import BuildContext, Encoder, Posterior, component, hookimpl, param, per_example
from genframe_plugins.networks.dcgan import dcgan_init, halving_plan, stage_widths


@component("encoder", "conv_encoder")
class ConvEncoder(Encoder):
    """Deterministic convolutional encoder (AE, WAE-MMD): strided convolutions, then a linear layer to the code.

    Batch normalisation after every convolution but the first, and LeakyReLU, as in the DCGAN
    discriminator; at evaluation time (reconstruction, interpolation) it uses running statistics,
    so every image is encoded independently of the others.
    """

    dim: int = param(64, ge=1, help="size of the code (the generator's latent_dim)")
    channels: int | None = param(None, ge=1, help="image channels; default: the data's")
    image_size: int | None = param(None, ge=1, help="image side; default: the data's")
    width: int = param(64, ge=1, help="feature maps of the first layer, doubling towards the code")
    norm: Literal["batch", "none"] = param("batch", help="normalisation after each convolution but the first")
    init: Literal["dcgan", "default"] = param("dcgan", help="dcgan: N(0, 0.02) weights; default: PyTorch's")

    #: Numbers the last layer predicts per code dimension (the VAE predicts a mean and a log-variance).
    outputs_per_dim: ClassVar[int] = 1

    def setup(self, ctx: BuildContext) -> None:
        side = ctx.image_size if self.image_size is None else self.image_size
        base, stages = halving_plan(side)
        in_channels = ctx.channels if self.channels is None else self.channels
        layers: list[nn.Module] = []
        for i, out_channels in enumerate(reversed(stage_widths(self.width, stages))):
            normalised = i > 0 and self.norm == "batch"
            # No bias before batch normalisation: its mean subtraction cancels it.
            layers.append(nn.Conv2d(in_channels, out_channels, 4, 2, 1, bias=not normalised))
            if normalised:
                layers.append(nn.BatchNorm2d(out_channels))
            layers.append(nn.LeakyReLU(0.2))
            in_channels = out_channels
        layers += [nn.Flatten(), nn.Linear(in_channels * base * base, self.outputs_per_dim * self.dim)]
        self.net = nn.Sequential(*layers)
        if self.init == "dcgan":
            dcgan_init(self.net)

    def encode(self, images: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        return self.net(images)


@component("encoder", "gaussian_encoder")
class GaussianEncoder(ConvEncoder):
    """VAE encoder: the conv_encoder predicting the mean and log-variance of a diagonal Gaussian over codes.

    Training decodes a reparameterised draw mean + exp(log_var / 2) * eps (Kingma & Welling 2014),
    so that gradients reach the encoder through the sampling; ``encode`` returns the mean, the
    code an image is reconstructed, interpolated or fitted from.
    """

    gaussian_posterior = True
    outputs_per_dim = 2

    def _moments(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_var = self.net(images).chunk(2, dim=1)
        return mean, log_var

    def encode(self, images: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        return self._moments(images)[0]

    def posterior(self, images: torch.Tensor, indices: torch.Tensor, *,
                  generator: torch.Generator | None = None) -> Posterior:
        mean, log_var = self._moments(images)
        eps = per_example(lambda n: torch.randn((n, *mean.shape[1:]), device=mean.device, dtype=mean.dtype,
                                                generator=generator), mean.shape[0])
        return Posterior(sample=mean + torch.exp(0.5 * log_var) * eps, mean=mean, log_var=log_var)


@hookimpl
def genframe_components():
    return [ConvEncoder, GaussianEncoder]
