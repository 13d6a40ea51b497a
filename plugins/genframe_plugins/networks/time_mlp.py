"""A time-conditioned MLP for vectors (latent codes): the network of a flow or diffusion latent mapper."""

from __future__ import annotations

import math

import torch
from torch import nn

from genframe import BuildContext, TimeNetwork, at_least_float32, component, hookimpl, param


def sinusoidal(t: torch.Tensor, size: int) -> torch.Tensor:
    """Sinusoidal features of times (Vaswani et al. 2017, as diffusion models embed t): ``size`` // 2
    frequencies from 1 to 1000 so that small and large changes of t are both visible."""
    half = size // 2
    frequencies = torch.exp(torch.linspace(0.0, math.log(1000.0), half, device=t.device))
    angles = at_least_float32(t).reshape(-1, 1) * frequencies * math.pi
    return torch.cat([angles.sin(), angles.cos()], dim=1)


@component("time_network", "time_mlp")
class TimeMLP(TimeNetwork):
    """An MLP of [x, time features (, class embedding)] with SiLU and a residual connection per layer.

    The output layer starts at zero, so an untrained flow does not move its noise: training starts
    from a well-scaled, stable point.
    """

    dim: int | None = param(None, ge=1, help="size of the vectors it maps; default: the flow mapper's dim")
    hidden: int = param(512, ge=1, help="units of each hidden layer")
    layers: int = param(3, ge=1, help="hidden layers")
    time_features: int = param(64, ge=2, help="sinusoidal features of t")
    num_classes: int | None = param(None, ge=1, help="class-conditional: an embedding per class plus 'no class'")

    def setup(self, ctx: BuildContext) -> None:
        self.time_embedding = nn.Sequential(nn.Linear(self.time_features, self.hidden), nn.SiLU(),
                                            nn.Linear(self.hidden, self.hidden))
        self.labels = nn.Embedding(self.num_classes + 1, self.hidden) if self.num_classes else None
        self.inp = nn.Linear(self.dim, self.hidden)
        self.blocks = nn.ModuleList(nn.Sequential(nn.SiLU(), nn.Linear(self.hidden, self.hidden))
                                    for _ in range(self.layers))
        self.out = nn.Linear(self.hidden, self.dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        condition = self.time_embedding(sinusoidal(t.expand(x.shape[0]) if t.dim() == 0 else t, self.time_features))
        if self.labels is not None and labels is not None:
            condition = condition + self.labels(labels)
        h = self.inp(x) + condition
        for block in self.blocks:
            h = h + block(h)
        return self.out(torch.nn.functional.silu(h))


@hookimpl
def genframe_components():
    return [TimeMLP]
