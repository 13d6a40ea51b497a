"""DCGAN-style convolutional generator and critic, sized from the data at setup.

Both networks share one plan: the image side is halved down to a base of 3 to 7 pixels, each
halving being one stride-2 convolution (transposed in the generator), with feature maps doubling
towards the base. This covers 28x28 MNIST (base 7) as well as the usual powers of two.

Setting ``num_classes`` makes either class-conditional: the generator appends a learned label
embedding to its latent vector, the critic adds a projection term (Miyato & Koyama 2018). The
helpers for both, and for the critics' normalisation choice, serve the other network families too.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from genframe import BuildContext, Critic, Generator, GenframeError, component, hookimpl, param

MIN_BASE, MAX_BASE = 3, 7


def halving_plan(image_size: int) -> tuple[int, int]:
    """(base size, number of stride-2 stages) with ``base * 2**stages == image_size`` and ``stages >= 1``."""
    base, stages = image_size, 0
    while base % 2 == 0 and (base > MAX_BASE or stages == 0):
        base, stages = base // 2, stages + 1
    if not MIN_BASE <= base <= MAX_BASE or stages == 0:
        raise GenframeError(
            f"image_size {image_size} is not supported: it must be a base of {MIN_BASE} to {MAX_BASE} "
            f"doubled at least once (e.g. 16, 24, 28, 32, 64)")
    return base, stages


def stage_widths(width: int, stages: int) -> list[int]:
    """Feature maps at each resolution from the base upwards: ``width`` at the finest, doubling towards the base."""
    return [width * 2 ** (stages - 1 - i) for i in range(stages)]


def dcgan_init(module: nn.Module) -> None:
    """The DCGAN paper's initialisation: weights N(0, 0.02), normalisation scales N(1, 0.02), biases 0.

    Small initial weights keep the adversarial game near its balanced start, which the paper found
    to stabilise training.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.normal_(m.weight, 1.0, 0.02)
        else:
            continue
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def _resolved(value: int | None, from_data: int) -> int:
    return from_data if value is None else value


Normalisation = Literal["none", "batch", "layer"]


def norm_layers(kind: str, channels: int) -> list[nn.Module]:
    """The normalisation ``kind`` for ``channels`` feature maps (layer: over channels and pixels)."""
    if kind == "batch":
        return [nn.BatchNorm2d(channels)]
    if kind == "layer":
        return [nn.GroupNorm(1, channels)]  # one group: normalised over (C, H, W) per image
    return []


def norm_param() -> Normalisation:
    return param("none", help="normalisation in the hidden layers: batch couples the images of a batch "
                              "(refused with gradient penalties), layer and none keep them independent")


# --------------------------------------------------------------------------- class conditioning


def classes_param(what: str) -> int | None:
    return param(None, ge=1, help=f"classes to condition on ({what}); null: unconditional")


def label_embedding(num_classes: int | None, dim: int) -> nn.Embedding | None:
    """A learned N(0, 1)-initialised vector per class for a generator's input; None when unconditional.

    The unit scale matches the Gaussian latent vector it is appended to, so neither dominates at first.
    """
    return None if num_classes is None else nn.Embedding(num_classes, dim)


def projection_embedding(num_classes: int | None, dim: int) -> nn.Embedding | None:
    """The class vectors of a projection critic, initialised like a linear layer's weights
    (U(+-1/sqrt(dim))) so that the projection starts as small as the unconditional score."""
    if num_classes is None:
        return None
    embedding = nn.Embedding(num_classes, dim)
    nn.init.uniform_(embedding.weight, -dim ** -0.5, dim ** -0.5)
    return embedding


def _labels_of(network: nn.Module, labels: torch.Tensor | None) -> torch.Tensor:
    if labels is None:
        raise GenframeError(f"{network.type_name} is class-conditional (num_classes: {network.num_classes}) "
                            "and needs labels")
    return labels


def append_labels(network: nn.Module, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """``z`` with the labels' embeddings appended (Mirza & Osindero 2014), or ``z`` when unconditional."""
    if network.embedding is None:
        return z
    return torch.cat([z, network.embedding(_labels_of(network, labels))], dim=1)


def projection_scores(network: nn.Module, features: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """psi(phi(x)) + <embed(y), phi(x)> (Miyato & Koyama 2018): the class enters as an inner product
    with the image features, which is what an optimal critic of a conditional model looks like when
    p(y|x) is log-linear in the features; unconditional critics keep psi(phi(x))."""
    scores = network.head(features).squeeze(1)
    if network.embedding is None:
        return scores
    return scores + (network.embedding(_labels_of(network, labels)) * features).sum(1)


@component("generator", "dcgan_generator")
class DCGANGenerator(Generator):
    """DCGAN generator: a linear projection to a small feature map, then transposed convolutions up to the image.

    Batch normalisation and ReLU in the hidden layers and Tanh at the output follow the DCGAN paper;
    Tanh puts the output in [-1, 1], the range images have inside models.
    """

    latent_dim: int = param(64, ge=1, help="size of the latent vector it takes")
    channels: int | None = param(None, ge=1, help="image channels; default: the data's")
    image_size: int | None = param(None, ge=1, help="image side; default: the data's")
    width: int = param(64, ge=1, help="feature maps of the last hidden layer, doubling towards the input")
    init: Literal["dcgan", "default"] = param("dcgan", help="dcgan: N(0, 0.02) weights; default: PyTorch's")
    normalize_input: bool = param(False, help="project latent vectors onto the unit sphere first (GLANN's "
                                               "generator), so only their direction matters")
    norm: Normalisation = param("batch", help="normalisation in the hidden layers: batch (DCGAN), layer or none "
                                          "(the WGAN paper's generator without batch norm)")
    num_classes: int | None = classes_param("a label embedding is appended to the latent vector")
    embedding_dim: int = param(32, ge=1, help="size of the label embedding (class-conditional only)")

    def setup(self, ctx: BuildContext) -> None:
        base, stages = halving_plan(_resolved(self.image_size, ctx.image_size))
        widths = stage_widths(self.width, stages)
        self.embedding = label_embedding(self.num_classes, self.embedding_dim)
        inputs = self.latent_dim + (self.embedding_dim if self.num_classes else 0)
        bias = self.norm != "batch"  # batch norm's mean subtraction would cancel a bias
        layers: list[nn.Module] = [
            nn.Linear(inputs, widths[0] * base * base, bias=bias),
            nn.Unflatten(1, (widths[0], base, base)),
            *norm_layers(self.norm, widths[0]), nn.ReLU(),
        ]
        for cin, cout in zip(widths, widths[1:]):
            layers += [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=bias), *norm_layers(self.norm, cout), nn.ReLU()]
        layers += [nn.ConvTranspose2d(widths[-1], _resolved(self.channels, ctx.channels), 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        if self.init == "dcgan":
            dcgan_init(self.net)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        z = z.flatten(1)
        if self.normalize_input:
            z = F.normalize(z, dim=1)
        return self.net(append_labels(self, z, labels))


@component("critic", "dcgan_critic")
class DCGANCritic(Critic):
    """DCGAN discriminator used as a critic: strided convolutions down to the base size, then one linear score.

    LeakyReLU keeps gradients flowing for every input. The normalisation is a choice because it
    interacts with the objective: batch norm (DCGAN) couples the images of a batch, which breaks
    per-sample gradient penalties; layer norm (WGAN-GP's advice) or none keep samples independent.
    Normalisation follows each convolution but the first.
    """

    channels: int | None = param(None, ge=1, help="image channels; default: the data's")
    image_size: int | None = param(None, ge=1, help="image side; default: the data's")
    width: int = param(64, ge=1, help="feature maps of the first layer, doubling towards the output")
    norm: Normalisation = norm_param()
    init: Literal["dcgan", "default"] = param("dcgan", help="dcgan: N(0, 0.02) weights; default: PyTorch's")
    num_classes: int | None = classes_param("projection of the image features on a class embedding")

    def setup(self, ctx: BuildContext) -> None:
        base, stages = halving_plan(_resolved(self.image_size, ctx.image_size))
        widths = stage_widths(self.width, stages)[::-1]
        layers: list[nn.Module] = [
            nn.Conv2d(_resolved(self.channels, ctx.channels), widths[0], 4, 2, 1), nn.LeakyReLU(0.2)]
        for cin, cout in zip(widths, widths[1:]):
            layers += [nn.Conv2d(cin, cout, 4, 2, 1, bias=self.norm == "none"), *norm_layers(self.norm, cout),
                       nn.LeakyReLU(0.2)]
        self.net = nn.Sequential(*layers, nn.Flatten())
        self.head = nn.Linear(widths[-1] * base * base, 1)
        if self.init == "dcgan":
            dcgan_init(self)
        self.embedding = projection_embedding(self.num_classes, widths[-1] * base * base)

    def batch_coupling(self) -> str | None:
        return "norm" if self.norm == "batch" else None

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return projection_scores(self, self.net(x), labels)


@hookimpl
def genframe_components():
    return [DCGANGenerator, DCGANCritic]
