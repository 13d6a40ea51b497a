"""Test material for the metrics: FID Inception weights made here, a cheap feature extractor, a replaying sampler.

No real weights can be downloaded in the tests, so equivalence with the reference implementations
is proven on weights made here: a seeded random network whose batch norms are calibrated on images
like the test images (so that activations neither vanish nor explode through 94 layers), saved in
the release file's key layout, and given to genframe and to the references alike.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import torch.nn.functional as F

from genframe import FeatureExtractor, component, hookimpl, param
from genframe_plugins.metrics.inception import ConvBN, FIDInception, preprocess


def make_images(n: int, seed: int, size: int = 32, low: int = 0, high: int = 256) -> torch.Tensor:
    """Seeded uint8 RGB images: random pixels, smoothed a little so the network sees some structure."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.rand(n, 3, size, size, generator=generator, dtype=torch.float64)
    smooth = F.avg_pool2d(F.pad(noise, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    return (low + smooth * (high - low - 1)).round().to(torch.uint8)


def make_release_like_weights(path: Path, seed: int = 0, with_step_counters: bool = False) -> str:
    """Write calibrated random FID Inception weights to ``path``; returns their SHA-256."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    network = FIDInception().eval()
    hooks = []

    def calibrate(bn, inputs):  # normalise each layer for the calibration images, as training would
        x = inputs[0]
        bn.running_mean.copy_(x.mean(dim=(0, 2, 3)))
        bn.running_var.copy_(x.var(dim=(0, 2, 3)))

    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, ConvBN):
                module.bn.weight.uniform_(0.6, 1.2, generator=generator)
                module.bn.bias.normal_(0.0, 0.2, generator=generator)
                hooks.append(module.bn.register_forward_pre_hook(calibrate))
        images = preprocess(make_images(2, seed + 1), "tf1_bilinear", 299, torch.float32)
        features = network(images)
        for hook in hooks:
            hook.remove()
        scale = 2.0 / (features.square().mean().sqrt() * FIDInception().fc.in_features ** 0.5)
        network.fc.weight.normal_(0.0, float(scale), generator=generator)  # logits of a few units
        network.fc.bias.normal_(0.0, 1.0, generator=generator)  # must be ignored by the Inception Score
    state = {k: v for k, v in network.state_dict().items()
             if with_step_counters or not k.endswith("num_batches_tracked")}
    torch.save(state, path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Replay:
    """A sampler that returns fixed uint8 images (as floats in [-1, 1]), from the start for every new generator."""

    def __init__(self, images: torch.Tensor):
        self.images = images
        self.generator = None
        self.position = 0

    def __call__(self, n: int, generator=None, labels=None) -> torch.Tensor:
        if generator is not self.generator:
            self.generator, self.position = generator, 0
        out = self.images[self.position:self.position + n]
        self.position += n
        return out.double() / 127.5 - 1.0


@component("feature_extractor", "pixel_stats")
class PixelStats(FeatureExtractor):
    """Test extractor: average-pooled pixels as features, a fixed linear map of them as logits."""

    grid: int = param(2, ge=1, help="the features are the grid x grid average-pooled pixels per channel")
    logits: bool = param(True, help="also return 5 logits")

    def __attrs_post_init__(self) -> None:
        self.images_seen = 0
        self.prepared_on: torch.device | None = None

    def prepare(self, device: torch.device) -> None:
        self.prepared_on = torch.device(device)

    def extract(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        self.images_seen += images.shape[0]
        features = F.adaptive_avg_pool2d(images.double(), self.grid).flatten(1) / 255.0
        out = {"features": features}
        if self.logits:
            weights = torch.linspace(-3.0, 3.0, features.shape[1] * 5, dtype=torch.float64).reshape(-1, 5)
            out["logits"] = features @ weights.to(features.device)
        return out

    def protocol(self) -> dict:
        return {"type": self.type_name, "grid": self.grid}


class PixelStatsPlugin:
    @hookimpl
    def genframe_components(self):
        return [PixelStats]
