"""Exponential moving average of a generator's weights, as a generator that wraps the trained one.

GAN iterates orbit around an equilibrium instead of settling on it; averaging them cancels much of
that oscillation, so the average samples better than the last iterate (Yazici et al. 2019; Karras et
al. 2018 use decay 0.999). The average lives in this component's weights: checkpoints save it,
resume restores it, and because the sampler puts its chain in evaluation mode, sample grids,
metrics and ``genframe sample`` all use it while training keeps using the live weights.
"""

from __future__ import annotations

import copy

import torch

from genframe import BuildContext, Generator, component, hookimpl, param


@component("generator", "ema")
class EMA(Generator):
    """A generator whose evaluation-mode output comes from an exponential moving average of its weights.

    Training mode runs the wrapped ``generator``; evaluation mode (sampling) runs ``average``, updated
    after every optimiser step as average <- decay * average + (1 - decay) * weights. Buffers (batch
    norm statistics) are copied, not averaged. Until ``start`` updates have passed, the average just
    copies the weights, so early, poor iterates do not linger in it.
    """

    generator: Generator = param(help="the generator that is trained (any generator spec)")
    decay: float = param(0.999, ge=0, lt=1, help="weight of the previous average at each update")
    start: int = param(0, ge=0, help="generator updates during which the average copies the weights")

    @property
    def latent_dim(self) -> int:  # type: ignore[override]
        return self.generator.latent_dim

    @property
    def num_classes(self) -> int | None:  # type: ignore[override]
        return self.generator.num_classes

    def setup(self, ctx: BuildContext) -> None:
        self.generator.setup(ctx)
        self.average = copy.deepcopy(self.generator).requires_grad_(False)  # never given to an optimiser
        self.register_buffer("updates", torch.zeros((), dtype=torch.int64))

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        network = self.generator if self.training else self.average
        return network(z) if labels is None else network(z, labels)

    @torch.no_grad()
    def after_update(self) -> None:
        self.generator.after_update()
        self.updates += 1
        # chosen on the device, in the run's precision (torch's default dtype)
        weight = torch.where(self.updates > self.start, 1.0 - self.decay, 1.0)
        average_into(self.average, self.generator, weight)


@torch.no_grad()
def average_into(average: torch.nn.Module, live: torch.nn.Module, weight: float | torch.Tensor) -> None:
    """average <- average + weight (live - average) for the weights, in place; buffers (batch norm
    statistics) are copied, not averaged. ``weight`` may be a device tensor, so no update waits for
    the host."""
    for averaged, current in zip(average.parameters(), live.parameters()):
        averaged.lerp_(current, weight)
    for averaged, current in zip(average.buffers(), live.buffers()):
        averaged.copy_(current)


@hookimpl
def genframe_components():
    return [EMA]
