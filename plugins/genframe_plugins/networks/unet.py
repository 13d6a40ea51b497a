"""A compact time-conditioned U-Net (Ho et al. 2020, simplified) for flow-matching and diffusion models.

The image goes down ``len(multipliers)`` resolution levels (each halving by a stride-2 convolution),
through a middle of two residual blocks (optionally with self-attention between them), and back up
(nearest-neighbour doubling and a convolution), each level's features concatenated with those of
the same level on the way down. The time t, and the class label when ``num_classes`` is set, enter
every residual block as one embedding vector added after its first convolution. Three levels cover
28 px (28 -> 14 -> 7) as well as 32, 48 and 64 px.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from genframe import BuildContext, GenframeError, TimeNetwork, at_least_float32, component, hookimpl, param
from genframe_plugins.networks.dcgan import classes_param

#: Times in [0, 1] are scaled to DDPM's step range [0, 1000] before the sinusoids, so that their
#: frequencies (periods 2 pi up to 10000 * 2 pi, as in transformers) resolve neighbouring times.
TIME_SCALE = 1000.0


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sines and cosines of ``TIME_SCALE * t`` at ``dim // 2`` geometrically spaced frequencies each
    (a zero column pads an odd ``dim``): a smooth code in which both fine and coarse changes of t show."""
    half, t = dim // 2, at_least_float32(t)
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=t.dtype) / half)
    angles = TIME_SCALE * t[:, None] * freqs[None]
    return F.pad(torch.cat([angles.sin(), angles.cos()], dim=1), (0, dim % 2))


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with as many groups as divide the channels, up to 32, while each keeps 4 channels.

    Unlike batch norm it keeps the images of a batch independent and acts the same when sampling.
    A group must span several channels: normalising one channel alone subtracts its mean over the
    pixels, and with it the per-channel time embedding added just before (the network would then
    ignore t). Wide layers get DDPM's 32 groups (of 4 channels at 128), narrow ones fewer.
    """
    return nn.GroupNorm(max(g for g in range(1, min(32, channels) + 1)
                            if channels % g == 0 and (g == 1 or channels // g >= 4)), channels)


class ResBlock(nn.Module):
    """norm-SiLU-conv, plus the projected embedding, norm-SiLU-dropout-conv, plus a (1x1 when the
    width changes) shortcut. Adding the embedding as a per-channel bias lets t shift every feature map."""

    def __init__(self, cin: int, cout: int, emb_dim: int, dropout: float):
        super().__init__()
        self.first = nn.Sequential(group_norm(cin), nn.SiLU(), nn.Conv2d(cin, cout, 3, padding=1))
        self.emb = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, cout))
        self.second = nn.Sequential(group_norm(cout), nn.SiLU(), nn.Dropout(dropout),
                                    nn.Conv2d(cout, cout, 3, padding=1))
        self.shortcut = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.first(x) + self.emb(emb)[:, :, None, None]
        return self.shortcut(x) + self.second(h)


class SelfAttention(nn.Module):
    """One-head self-attention over the pixels, residual: at the lowest resolution it is cheap and
    lets every position see the whole image, which convolutions alone reach only through depth."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        n, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(n, 3, c, h * w).transpose(-1, -2).unbind(1)  # each (N, HW, C)
        attended = F.scaled_dot_product_attention(q, k, v)
        return x + self.out(attended.transpose(-1, -2).reshape(n, c, h, w))


@component("time_network", "unet")
class UNet(TimeNetwork):
    """A compact time-conditioned U-Net (DDPM-style residual blocks) for 28 to 64 px images.

    The last convolution starts at zero, so the untrained network outputs 0 for every input: 0 is
    the mean of the noise a diffusion model predicts and, for centred data, of a flow's velocity, so
    training starts at the loss of the best constant instead of first unlearning a random function
    of x, and the early gradients are small and stable. Training still moves: the last layer's own
    gradient is not zero, and once it has left zero the gradients reach every earlier layer.
    """

    width: int = param(64, ge=1, help="channels of the first level; level i has width * multipliers[i]")
    multipliers: list[int] = param(factory=lambda: [1, 2, 2],
                                   help="channel multiplier per resolution level; each level after the first "
                                        "halves the image, so the side must be divisible by 2**(levels - 1)")
    blocks: int = param(2, ge=1, help="residual blocks per level, on the way down and on the way up")
    attention: bool = param(False, help="a self-attention block in the middle, at the lowest resolution")
    num_classes: int | None = classes_param("a class embedding is added to the time embedding; "
                                            "label num_classes means no class (classifier-free guidance)")
    channels: int | None = param(None, ge=1, help="image channels; default: the data's")
    image_size: int | None = param(None, ge=1, help="image side; default: the data's")
    dropout: float = param(0.0, ge=0, lt=1, help="dropout before the second convolution of each residual block")

    def __attrs_post_init__(self) -> None:
        if not self.multipliers or any(not isinstance(m, int) or m < 1 for m in self.multipliers):
            raise GenframeError(f"unet: multipliers must list one integer >= 1 per level, got {self.multipliers!r}")

    def setup(self, ctx: BuildContext) -> None:
        channels = ctx.channels if self.channels is None else self.channels
        size = ctx.image_size if self.image_size is None else self.image_size
        levels = len(self.multipliers)
        if size % 2 ** (levels - 1):
            raise GenframeError(
                f"unet: image_size {size} is not divisible by 2**{levels - 1} = {2 ** (levels - 1)}, which the "
                f"{levels} levels of multipliers {self.multipliers} need (each level after the first halves it)")
        emb_dim = 4 * self.width
        self.time_mlp = nn.Sequential(nn.Linear(self.width, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        # One row more than the classes: the last one is "no class", for classifier-free guidance.
        self.class_embedding = None if self.num_classes is None else nn.Embedding(self.num_classes + 1, emb_dim)

        widths = [self.width * m for m in self.multipliers]
        self.stem = nn.Conv2d(channels, self.width, 3, padding=1)
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        cin = self.width
        for i, w in enumerate(widths):
            self.down.append(nn.ModuleList([ResBlock(cin if j == 0 else w, w, emb_dim, self.dropout)
                                            for j in range(self.blocks)]))
            self.downsample.append(nn.Conv2d(w, w, 3, stride=2, padding=1) if i < levels - 1 else nn.Identity())
            cin = w
        self.middle = nn.ModuleList([ResBlock(cin, cin, emb_dim, self.dropout),
                                     *([SelfAttention(cin)] if self.attention else []),
                                     ResBlock(cin, cin, emb_dim, self.dropout)])
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for i in reversed(range(levels)):
            w = widths[i]
            # The first block of a level takes the skip connection concatenated to the features from below.
            self.up.append(nn.ModuleList([ResBlock(cin + w if j == 0 else w, w, emb_dim, self.dropout)
                                          for j in range(self.blocks)]))
            self.upsample.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                               nn.Conv2d(w, w, 3, padding=1)) if i > 0 else nn.Identity())
            cin = w
        self.head = nn.Sequential(group_norm(cin), nn.SiLU(), nn.Conv2d(cin, channels, 3, padding=1))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def embedding(self, t: torch.Tensor, labels: torch.Tensor | None, n: int) -> torch.Tensor:
        """The time (+ class) embedding of each row; a single time is broadcast to the ``n`` rows.

        Without labels a class-conditional network gets the "no class" label, as when sampling
        unconditionally; an unconditional network ignores labels."""
        t = t.reshape(-1).expand(n) if t.numel() == 1 else t.reshape(n)
        emb = self.time_mlp(timestep_embedding(t, self.width))
        if self.class_embedding is not None:
            if labels is None:
                labels = torch.full((n,), self.num_classes, dtype=torch.long, device=t.device)
            emb = emb + self.class_embedding(labels.reshape(n).long())
        return emb

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.embedding(t, labels, x.shape[0])
        h, skips = self.stem(x), []
        for blocks, downsample in zip(self.down, self.downsample):
            for block in blocks:
                h = block(h, emb)
            skips.append(h)
            h = downsample(h)
        for block in self.middle:
            h = block(h, emb)
        for blocks, upsample in zip(self.up, self.upsample):
            h = torch.cat([h, skips.pop()], dim=1)
            for block in blocks:
                h = block(h, emb)
            h = upsample(h)
        return self.head(h)


@hookimpl
def genframe_components():
    return [UNet]
