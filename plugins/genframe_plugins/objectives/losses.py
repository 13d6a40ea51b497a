"""Reconstruction losses between images in [-1, 1]: pixel L2 and L1, GLO's Laplacian-pyramid L1, VGG-16 features.

All of them use one reduction: the distance is summed over the pixels (and channels) of each image
and averaged over the batch. That is the per-example loss GLO minimises (Bojanowski et al. 2018
write the objective as a mean over examples of a per-image loss), and it makes the losses
comparable: ``lap1`` with a single level is exactly ``l1``. Summing rather than averaging over
pixels means the loss, and so the learning rate that suits it, grows with the image size.
Losses are computed in float32 even when the images arrive in half precision, because sums over
thousands of pixels lose most of their digits in bfloat16.
"""

from __future__ import annotations

import hashlib
import io
import os
import re

import fsspec
import torch
import torch.nn.functional as F
from torch import nn

from genframe import BuildContext, GenframeError, ReconstructionLoss, at_least_float32, component, hookimpl, param

#: 1-D taps of Burt and Adelson's 5-tap binomial filter; the 2-D blur is their outer product.
BINOMIAL_5 = (1.0, 4.0, 6.0, 4.0, 1.0)


def _blur(images: torch.Tensor, taps: tuple[float, ...]) -> torch.Tensor:
    """Separable blur of (N, C, H, W) images with reflect padding (the border is not repeated).

    Reflect padding keeps a constant image constant and does not give border pixels extra weight;
    it needs H and W larger than half the filter length. Written as shifted sums rather than a
    convolution so that no filter tensor has to be built on the device.
    """
    radius = len(taps) // 2
    height, width = images.shape[-2:]
    padded = F.pad(images, (0, 0, radius, radius), mode="reflect")
    images = sum(t * padded[..., i:i + height, :] for i, t in enumerate(taps))
    padded = F.pad(images, (radius, radius, 0, 0), mode="reflect")
    return sum(t * padded[..., :, i:i + width] for i, t in enumerate(taps))


def _expand(coarse: torch.Tensor, size: tuple[int, int], taps: tuple[float, ...]) -> torch.Tensor:
    """Burt and Adelson's EXPAND: insert zeros between the samples, blur, and restore the gain (x4)."""
    upsampled = coarse.new_zeros(*coarse.shape[:-2], *size)
    upsampled[..., ::2, ::2] = coarse
    return 4.0 * _blur(upsampled, taps)


def laplacian_pyramid(images: torch.Tensor, levels: int,
                      taps: tuple[float, ...] = BINOMIAL_5) -> list[torch.Tensor]:
    """Laplacian pyramid of (N, C, H, W) images, finest band first, low-pass residual last.

    Level j < last is G_j - EXPAND(G_{j+1}) with G_0 the images and G_{j+1} = blur(G_j)[::2, ::2]
    (Burt and Adelson 1983); the last level is the remaining Gaussian level, so the list sums back
    to the images after expanding. ``taps`` are normalised to sum to 1. ``levels`` counts all the
    levels including the residual and is clipped to what the size allows: an image is split only
    while both sides exceed half the filter length (3 pixels for 5 taps), so odd sizes are fine.
    """
    total = sum(taps)
    taps = tuple(t / total for t in taps)
    radius = len(taps) // 2
    bands = []
    current = images
    while len(bands) < levels - 1 and min(current.shape[-2:]) > radius:
        coarse = _blur(current, taps)[..., ::2, ::2]
        bands.append(current - _expand(coarse, current.shape[-2:], taps))
        current = coarse
    bands.append(current)
    return bands


def _per_image_sum(values: torch.Tensor) -> torch.Tensor:
    return values.flatten(1).sum(1)


@component("reconstruction_loss", "l2")
class L2(ReconstructionLoss):
    """Squared error summed over each image's pixels, averaged over the batch."""

    def __call__(self, reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return _per_image_sum((at_least_float32(reconstruction) - at_least_float32(target)).square()).mean()


@component("reconstruction_loss", "l1")
class L1(ReconstructionLoss):
    """Absolute error summed over each image's pixels, averaged over the batch; less blurry than l2."""

    def __call__(self, reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return _per_image_sum((at_least_float32(reconstruction) - at_least_float32(target)).abs()).mean()


@component("reconstruction_loss", "lap1")
class Lap1(ReconstructionLoss):
    """GLO's Laplacian-pyramid L1: sum_j 2^(2j) |L^j(x) - L^j(x')|_1, sharper than pixel losses.

    Bojanowski, Joulin, Lopez-Paz and Szlam, "Optimizing the Latent Space of Generative Networks"
    (ICML 2018): a pixel loss lets a generator trade every fine detail for a blur, while L1 on the
    band-pass levels L^j of a Laplacian pyramid (j = 0 finest, the low-pass residual last) penalises
    missing edges at every scale. |.|_1 sums over the level's pixels and channels; level j has 4^j
    times fewer pixels, so the weight 2^(2j) gives every level the same weight per pixel, as the
    authors' linked Laplacian-loss code does by averaging each level. The pyramid is linear, so it
    is taken once, of x - x'. ``levels=1`` is exactly ``l1``.
    """

    levels: int = param(4, ge=1, help="pyramid levels including the low-pass residual; clipped to what "
                                      "the image size allows")
    kernel: tuple[float, float, float, float, float] = param(
        BINOMIAL_5, help="taps of the separable 5x5 blur, normalised to sum to 1 (default: binomial)")

    def __attrs_post_init__(self) -> None:
        if min(self.kernel) < 0 or sum(self.kernel) <= 0:
            raise ValueError(f"kernel taps must be non-negative with a positive sum, got {list(self.kernel)}")

    def __call__(self, reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        bands = laplacian_pyramid(at_least_float32(reconstruction) - at_least_float32(target), self.levels, self.kernel)
        return sum(4.0 ** j * _per_image_sum(band.abs()) for j, band in enumerate(bands)).mean()


#: Indices into torchvision's ``vgg16().features`` of the layers compared, level by level: conv1_2,
#: conv2_2, conv3_2, conv4_3 (before their ReLU) and pool5, the levels of the official GLANN code.
VGG_LAYERS = (2, 7, 12, 21, 30)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_NO_WEIGHTS_ADVICE = "or use the loss lap1, which needs no weights"


def vgg16_features(state: dict[str, torch.Tensor], last_layer: int, source: str) -> nn.Sequential:
    """The first layers of VGG-16's convolutional part, up to ``last_layer``, with frozen weights from ``state``.

    ``state`` uses torchvision's key names (``features.<index>.weight``); classifier weights, if
    present, are ignored. ReLUs are made out of place, so that the pre-activation outputs the loss
    compares are not overwritten by the next layer.
    """
    from torchvision.models.vgg import cfgs, make_layers

    features = make_layers(cfgs["D"])[:last_layer + 1]
    for module in features:
        if isinstance(module, nn.ReLU):
            module.inplace = False
    missing = [key for key in features.state_dict() if f"features.{key}" not in state]
    if missing:
        raise GenframeError(f"vgg: {source} is not a VGG-16 state dict with torchvision's key names "
                            f"(no features.{missing[0]})")
    try:
        features.load_state_dict({key: state[f"features.{key}"] for key in features.state_dict()})
    except RuntimeError as exc:
        raise GenframeError(f"vgg: {source}: {str(exc).splitlines()[-1].strip()}") from None
    return features.requires_grad_(False).eval()


@component("reconstruction_loss", "vgg")
class VGG(ReconstructionLoss):
    """VGG-16 perceptual loss: L1 between ImageNet features of the two images plus pixel L1 (GLANN's GLO loss).

    A pixel loss is minimised by a blur that averages the plausible details; distances between the
    features of a network trained to recognise ImageNet objects are not, so a generator trained
    with them keeps edges and textures (Hoshen, Li & Malik 2019). Each level adds the mean absolute
    difference of its features times the number of pixel values of an image, so the pixel term is
    exactly ``l1`` and the total is on the scale of the other losses. Grey images are repeated to
    three channels, and all are normalised as ImageNet images were for the network's training.

    ``weights: torchvision`` loads torchvision's ImageNet weights through its API: downloaded once
    into the torch hub cache and checked against the SHA-256 prefix in their file name (and against
    ``sha256`` when given). Any other value is an fsspec path or URL of a VGG-16 state dict with
    torchvision's key names, checked against ``sha256``, which it then requires.
    """

    levels: int = param(3, ge=0, le=len(VGG_LAYERS),
                        help="feature levels compared (conv1_2, conv2_2, conv3_2, conv4_3, pool5); GLANN uses 3 "
                             "for 28-32 px images and 4 for 64 px")
    weights: str = param("torchvision", help="torchvision (its ImageNet VGG-16 download), or an fsspec path or URL "
                                            "of a VGG-16 state dict")
    sha256: str | None = param(None, help="SHA-256 of the weights file (sha256sum FILE); required for a path or URL")
    pixel_weight: float = param(1.0, ge=0, help="weight of the pixel L1 term")

    def __attrs_post_init__(self) -> None:
        if self.sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", self.sha256):
            raise GenframeError(f"vgg: sha256: expected 64 hexadecimal digits, got {self.sha256!r}")
        if self.weights != "torchvision" and self.sha256 is None:
            raise GenframeError(f"vgg: sha256: required when weights is a path or URL ({self.weights!r}); "
                                "compute it with: sha256sum FILE")
        self._features: nn.Sequential | None = None

    def setup(self, ctx: BuildContext) -> None:
        if self.levels:
            self._network(ctx.device)

    def preflight(self) -> None:
        if self.levels:  # the weights downloaded and checked now, not at the first training step
            self._network(torch.device("cpu"))

    def _network(self, device: torch.device) -> nn.Sequential:
        if self._features is None:
            state, source = self._torchvision_state() if self.weights == "torchvision" else self._file_state()
            self._features = vgg16_features(state, VGG_LAYERS[self.levels - 1], source)
        return self._features.to(device)

    def _torchvision_state(self) -> tuple[dict, str]:
        from torchvision.models import VGG16_Weights

        entry = VGG16_Weights.IMAGENET1K_V1
        cached = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(entry.url))
        try:
            state = entry.get_state_dict(progress=False, check_hash=True)
        except Exception as exc:  # no network, a proxy, a damaged download: all end the same way for the user
            reason = (str(exc).splitlines() or [""])[0]
            raise GenframeError(f"vgg: cannot load torchvision's ImageNet VGG-16 weights ({type(exc).__name__}: "
                                f"{reason}); put {os.path.basename(entry.url)} (from {entry.url}) into "
                                f"{os.path.dirname(cached)}, or set weights: to a path or URL of the file and "
                                f"sha256: to its SHA-256, {_NO_WEIGHTS_ADVICE}") from None
        if self.sha256 is not None:
            with open(cached, "rb") as fh:
                self._check_digest(fh.read(), cached)
        return state, cached

    def _file_state(self) -> tuple[dict, str]:
        try:
            with fsspec.open(self.weights, "rb") as fh:
                raw = fh.read()
        except (OSError, ValueError, ImportError) as exc:
            raise GenframeError(f"vgg: weights: cannot read {self.weights!r} ({type(exc).__name__}: {exc}); "
                                f"give the path or URL of a VGG-16 state dict, {_NO_WEIGHTS_ADVICE}") from None
        self._check_digest(raw, self.weights)
        try:
            state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise GenframeError(f"vgg: weights: {self.weights!r} is not a torch state dict "
                                f"({type(exc).__name__})") from None
        return state, self.weights

    def _check_digest(self, raw: bytes, source: str) -> None:
        digest = hashlib.sha256(raw).hexdigest()
        if digest != str(self.sha256).lower():
            raise GenframeError(f"vgg: weights: {source} has SHA-256 {digest}, not the sha256 given "
                                f"({self.sha256}); fix the file or the sha256, {_NO_WEIGHTS_ADVICE}")

    def _imagenet_input(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[1] not in (1, 3):
            raise GenframeError(f"vgg: compares grey or RGB images, got {images.shape[1]} channels")
        mean = images.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = images.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
        return ((images.expand(-1, 3, -1, -1) + 1.0) / 2.0 - mean) / std

    def __call__(self, reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        x, y = at_least_float32(reconstruction), at_least_float32(target)
        per_image = self.pixel_weight * (x - y).abs().flatten(1).mean(1)
        if self.levels:
            # Both batches in one pass; each level's output is split back into (x, y) halves.
            h = self._imagenet_input(torch.cat([x, y]))
            wanted = VGG_LAYERS[:self.levels]
            for index, layer in enumerate(self._network(x.device)):
                h = layer(h)
                if index in wanted:
                    fx, fy = h.chunk(2)
                    per_image = per_image + (fx - fy).abs().flatten(1).mean(1)
        return (per_image * x[0].numel()).mean()


@hookimpl
def genframe_components():
    return [L2, L1, Lap1, VGG]
