"""Image conventions: uint8 (N, C, H, W) at rest, float in [-1, 1] inside models."""

from __future__ import annotations

import io

import torch
import torch.nn.functional as F


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1] in torch's default dtype (float32, or float64 in a run with
    ``precision: fp64``), on whatever device the tensor is."""
    return images.to(torch.get_default_dtype()).mul_(2.0 / 255.0).sub_(1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8 [0, 255], rounding to nearest and clamping out-of-range values."""
    return images.detach().add(1.0).mul(127.5).round_().clamp_(0, 255).to(torch.uint8)


def resize_uint8(images: torch.Tensor, size: int, mode: str = "bilinear") -> torch.Tensor:
    """Resize uint8 images to ``size`` x ``size`` (antialiased when shrinking); ``pad`` centres them."""
    h, w = images.shape[-2:]
    if (h, w) == (size, size):
        return images
    if mode == "pad":
        if h > size or w > size:
            raise ValueError(f"cannot pad {h}x{w} images to {size}x{size}")
        top, left = (size - h) // 2, (size - w) // 2
        return F.pad(images, (left, size - w - left, top, size - h - top))
    out = F.interpolate(images.float(), size=(size, size), mode=mode, antialias=mode in ("bilinear", "bicubic"),
                        align_corners=False if mode in ("bilinear", "bicubic") else None)
    return out.round_().clamp_(0, 255).to(torch.uint8)


def image_grid(images: torch.Tensor, nrow: int | None = None, padding: int = 2) -> torch.Tensor:
    """Tile uint8 (N, C, H, W) images into one uint8 (C, H', W') image."""
    from torchvision.utils import make_grid

    n = images.shape[0]
    nrow = nrow or max(1, int(round(n ** 0.5)))
    return make_grid(images.cpu(), nrow=nrow, padding=padding, pad_value=0)


def png_bytes(image: torch.Tensor) -> bytes:
    """Encode a uint8 (C, H, W) image with C in {1, 3} as PNG."""
    from PIL import Image

    array = image.cpu().permute(1, 2, 0).numpy()
    pil = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)
    buffer = io.BytesIO()
    pil.save(buffer, format="PNG")
    return buffer.getvalue()
