"""Reconstruction losses between images in [-1, 1]: pixel L2 and L1, and GLO's Laplacian-pyramid L1.

All three use one reduction: the distance is summed over the pixels (and channels) of each image
and averaged over the batch. That is the per-example loss GLO minimises (Bojanowski et al. 2018
write the objective as a mean over examples of a per-image loss), and it makes the losses
comparable: ``lap1`` with a single level is exactly ``l1``. Summing rather than averaging over
pixels means the loss, and so the learning rate that suits it, grows with the image size.
Losses are computed in float32 even when the images arrive in half precision, because sums over
thousands of pixels lose most of their digits in bfloat16.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from genframe import ReconstructionLoss, component, hookimpl, param

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
        return _per_image_sum((reconstruction.float() - target.float()).square()).mean()


@component("reconstruction_loss", "l1")
class L1(ReconstructionLoss):
    """Absolute error summed over each image's pixels, averaged over the batch; less blurry than l2."""

    def __call__(self, reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return _per_image_sum((reconstruction.float() - target.float()).abs()).mean()


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
        bands = laplacian_pyramid(reconstruction.float() - target.float(), self.levels, self.kernel)
        return sum(4.0 ** j * _per_image_sum(band.abs()) for j, band in enumerate(bands)).mean()


@hookimpl
def genframe_components():
    return [L2, L1, Lap1]
