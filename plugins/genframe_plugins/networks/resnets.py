"""The residual generator and critic of SN-GAN (Miyato et al. 2018) for 32 px images, sized by the data.

For 32 px (CIFAR-10 in the paper) the generator maps z to a 4x4 map of ``width`` channels and
doubles it three times with up-sampling residual blocks; the critic halves 32 -> 16 -> 8 with two
down-sampling blocks, adds two blocks at 8x8, and sums its features over the pixels. Other sides
follow the DCGAN plan (a base of 3 to 7 pixels): the generator has one block per doubling, the
critic stops halving at twice the base. Residual connections let both be deeper than DCGAN's
networks at the same cost, which is what made SN-GAN's ResNet results better than its CNN ones.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from genframe import BuildContext, Critic, Generator, component, hookimpl, param
from genframe_plugins.networks.dcgan import (Normalisation, append_labels, classes_param, halving_plan, label_embedding,
                                       norm_layers, norm_param, projection_embedding, projection_scores)


def glorot_init(module: nn.Module, gain: float = 1.0) -> nn.Module:
    """Glorot-uniform weights and zero biases for the convolutions and linear layers of ``module``.

    SN-GAN's code uses gain sqrt(2) inside residual branches (which ReLUs follow) and 1 elsewhere.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight, gain=gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module


def _conv3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, 1, 1)


class UpBlock(nn.Module):
    """BN-ReLU-upsample-conv-BN-ReLU-conv, plus an up-sampled 1x1 convolution as the shortcut."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.residual = glorot_init(nn.Sequential(
            nn.BatchNorm2d(cin), nn.ReLU(), nn.Upsample(scale_factor=2), _conv3(cin, cout),
            nn.BatchNorm2d(cout), nn.ReLU(), _conv3(cout, cout)), math.sqrt(2))
        self.shortcut = glorot_init(nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(cin, cout, 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.residual(x) + self.shortcut(x)


class DownBlock(nn.Module):
    """[norm]-ReLU-conv-[norm]-ReLU-conv, then 2x2 average pooling when ``down``; 1x1 shortcut when the shape changes.

    The ``first`` block (SN-GAN's "optimized" block) sees raw pixels: no activation before its
    first convolution, no normalisation (as in WGAN-GP's ResNet critic), and its shortcut pools
    before the 1x1 convolution.
    """

    def __init__(self, cin: int, cout: int, *, down: bool, norm: str, first: bool = False):
        super().__init__()
        pool = [nn.AvgPool2d(2)] if down else []
        norm = "none" if first else norm
        pre = [] if first else [*norm_layers(norm, cin), nn.ReLU()]
        self.residual = glorot_init(nn.Sequential(*pre, _conv3(cin, cout), *norm_layers(norm, cout), nn.ReLU(),
                                                  _conv3(cout, cout), *pool), math.sqrt(2))
        if first:
            self.shortcut = glorot_init(nn.Sequential(*pool, nn.Conv2d(cin, cout, 1)))
        elif down or cin != cout:
            self.shortcut = glorot_init(nn.Sequential(nn.Conv2d(cin, cout, 1), *pool))
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.residual(x) + self.shortcut(x)


@component("generator", "resnet_generator")
class ResNetGenerator(Generator):
    """SN-GAN's ResNet generator: z -> base x base map, one up-sampling residual block per doubling, Tanh."""

    latent_dim: int = param(128, ge=1, help="size of the latent vector it takes")
    channels: int | None = param(None, ge=1, help="image channels; default: the data's")
    image_size: int | None = param(None, ge=1, help="image side; default: the data's")
    width: int = param(256, ge=1, help="feature maps of every block")
    num_classes: int | None = classes_param("a label embedding is appended to the latent vector")
    embedding_dim: int = param(32, ge=1, help="size of the label embedding (class-conditional only)")

    def setup(self, ctx: BuildContext) -> None:
        base, stages = halving_plan(self.image_size or ctx.image_size)
        self.embedding = label_embedding(self.num_classes, self.embedding_dim)
        inputs = self.latent_dim + (self.embedding_dim if self.num_classes else 0)
        self.net = nn.Sequential(
            glorot_init(nn.Linear(inputs, self.width * base * base)), nn.Unflatten(1, (self.width, base, base)),
            *[UpBlock(self.width, self.width) for _ in range(stages)],
            nn.BatchNorm2d(self.width), nn.ReLU(), glorot_init(_conv3(self.width, self.channels or ctx.channels)),
            nn.Tanh())

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(append_labels(self, z.flatten(1), labels))


@component("critic", "resnet_critic")
class ResNetCritic(Critic):
    """SN-GAN's ResNet critic: residual blocks, a sum over pixels, one linear score (+ projection if conditional).

    Down-sampling blocks halve the image to twice the base size, two more blocks follow, then a
    ReLU, the sum of each feature map over its pixels and the score.

    Normalisation (off in SN-GAN, which relies on spectral normalisation) precedes each ReLU of
    every block but the first, as in WGAN-GP's ResNet critic.
    """

    channels: int | None = param(None, ge=1, help="image channels; default: the data's")
    image_size: int | None = param(None, ge=1, help="image side; default: the data's")
    width: int = param(128, ge=1, help="feature maps of every block")
    norm: Normalisation = norm_param()
    num_classes: int | None = classes_param("projection of the image features on a class embedding")

    def setup(self, ctx: BuildContext) -> None:
        _, stages = halving_plan(self.image_size or ctx.image_size)
        downs = stages - 1  # 32 px: 32 -> 16 -> 8
        w = self.width
        blocks = [DownBlock(self.channels or ctx.channels, w, down=downs > 0, norm=self.norm, first=True)]
        blocks += [DownBlock(w, w, down=True, norm=self.norm) for _ in range(downs - 1)]
        blocks += [DownBlock(w, w, down=False, norm=self.norm) for _ in range(2)]
        self.net = nn.Sequential(*blocks, nn.ReLU())
        self.head = glorot_init(nn.Linear(w, 1, bias=False))  # no bias, as in SN-GAN's code
        self.embedding = projection_embedding(self.num_classes, w)

    def batch_coupling(self) -> str | None:
        return "norm" if self.norm == "batch" else None

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return projection_scores(self, self.net(x).sum(dim=(2, 3)), labels)


@hookimpl
def genframe_components():
    return [ResNetGenerator, ResNetCritic]
