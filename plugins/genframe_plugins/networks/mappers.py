"""Latent mappers: networks from a simple prior's noise to a learned latent space.

GLANN trains GLO codes first, then fits such a mapper with IMLE so that noise lands on the codes;
sampling is then prior -> mapper -> generator.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from genframe import BuildContext, GenframeError, LatentMapper, component, hookimpl, param


@component("latent_mapper", "mlp_mapper")
class MLPMapper(LatentMapper):
    """A multilayer perceptron from noise to codes (GLANN's IMLE mapper: 32 -> 128 -> 128 -> 64).

    Batch normalisation keeps the hidden activations well scaled, which IMLE's nearest-neighbour
    targets need to make progress from the first steps.
    """

    in_dim: int = param(32, ge=1, help="size of the noise it takes (the prior's dim)")
    out_dim: int = param(64, ge=1, help="size of the codes it produces (the generator's latent_dim)")
    hidden: list[int] = param(factory=lambda: [128, 128], help="widths of the hidden layers")
    batch_norm: bool = param(True, help="batch normalisation after each hidden linear layer")
    activation: Literal["relu", "leaky_relu"] = param("relu", help="hidden activation (leaky slope 0.2)")
    output_bias: bool = param(True, help="a bias in the last linear layer (the official GLANN mapper has none)")

    def __attrs_post_init__(self) -> None:
        if any(not isinstance(w, int) or w < 1 for w in self.hidden):
            raise GenframeError(f"mlp_mapper: hidden must list layer widths >= 1, got {self.hidden!r}")

    def setup(self, ctx: BuildContext) -> None:
        layers: list[nn.Module] = []
        width = self.in_dim
        for out in self.hidden:
            # A bias before batch normalisation is cancelled by its mean subtraction.
            layers.append(nn.Linear(width, out, bias=not self.batch_norm))
            if self.batch_norm:
                layers.append(nn.BatchNorm1d(out))
            layers.append(nn.ReLU() if self.activation == "relu" else nn.LeakyReLU(0.2))
            width = out
        layers.append(nn.Linear(width, self.out_dim, bias=self.output_bias))
        self.net = nn.Sequential(*layers)

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        return self.net(noise)


@hookimpl
def genframe_components():
    return [MLPMapper]
