"""Images already stored as one uint8 array: .npz/.npy (NumPy) or .pt (torch) files at any fsspec URL.

This is the format ``genframe sample`` writes (key ``images``), so generated images can be trained
on or evaluated like any data set. Loading never runs code from the file: NumPy files are read
with ``allow_pickle=False`` and torch files with ``weights_only=True``.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch

from genframe import Dataset, GenframeError, component, hookimpl, param, resize_uint8

from genframe_plugins.data._io import open_location, take_subset

SUFFIXES = (".npz", ".npy", ".pt", ".pth")
CHANNELS = (1, 3)  # what layout: auto recognises as a channel axis


def _as_tensor(value: Any) -> torch.Tensor | None:
    """A tensor view of a stored array; None for what torch cannot hold (strings, objects)."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        return torch.from_numpy(value.astype(value.dtype.newbyteorder("="), copy=False))
    return None


@component("dataset", "tensor_file")
class TensorFile(Dataset):
    """uint8 images (N, C, H, W), (N, H, W, C) or (N, H, W) from an .npz, .npy or .pt file, with optional labels.

    An .npz or a .pt dictionary holds named arrays: the images under ``key`` and int labels (N,)
    under ``labels_key``. A .npy file or a .pt tensor is the image array itself.
    """

    path: str = param(help="the .npz/.npy/.pt file: a path or an fsspec URL")
    key: str = param("images", help="name of the image array in an .npz or a .pt dictionary")
    labels_key: str | None = param(None, help="name of the int labels (N,); default: 'labels' when present")
    layout: Literal["auto", "nchw", "nhwc"] = param(
        "auto", help="auto: the axis of size 1 or 3 next to two equal sides is the channel axis")
    image_size: int | None = param(None, ge=1, help="resize to this side (bilinear); null keeps the stored size")
    limit: int | None = param(None, ge=1, help="keep a seeded random subset of this many images")
    subset_seed: int = param(0, help="seed of the subset chosen by limit")

    def preflight(self) -> None:
        fs, path = open_location(self.path, self.type_name, "path")
        if not fs.exists(path):
            raise GenframeError(f"{self.type_name}: path: no such file {self.path!r}")

    def load(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        arrays = self._read()
        images = self._images(arrays)
        labels = self._labels(arrays, images.shape[0])
        images, labels = take_subset(images, labels, self.limit, self.subset_seed)
        if self.image_size is not None:
            images = resize_uint8(images, self.image_size, "bilinear")
        return images, labels

    def _read(self) -> dict[str, Any] | torch.Tensor | np.ndarray:
        fs, path = open_location(self.path, self.type_name, "path")
        suffix = next((s for s in SUFFIXES if path.lower().endswith(s)), None)
        if suffix is None:
            raise GenframeError(f"{self.type_name}: path: {self.path!r} is not one of {', '.join(SUFFIXES)}")
        try:
            with fs.open(path, "rb") as f:
                if suffix in (".pt", ".pth"):
                    return torch.load(f, map_location="cpu", weights_only=True)
                loaded = np.load(f, allow_pickle=False)
                return {k: loaded[k] for k in loaded.files} if suffix == ".npz" else loaded
        except FileNotFoundError:
            raise GenframeError(f"{self.type_name}: path: no file at {self.path!r}") from None
        except Exception as exc:  # damaged files, pickled objects refused by the safe loaders
            raise GenframeError(f"{self.type_name}: cannot load {self.path!r} safely: "
                                f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None

    def _images(self, arrays: Any) -> torch.Tensor:
        if isinstance(arrays, dict):
            if self.key not in arrays:
                raise GenframeError(f"{self.type_name}: key: {self.path!r} has no {self.key!r}; it holds "
                                    f"{', '.join(map(str, arrays)) or 'nothing'}")
            array = arrays[self.key]
        else:
            array = arrays
        images = _as_tensor(array)
        if images is None or images.dtype != torch.uint8 or images.dim() not in (3, 4):
            what = f"{tuple(array.shape)} {array.dtype}" if hasattr(array, "shape") else type(array).__name__
            raise GenframeError(f"{self.type_name}: {self.path!r} holds {what}; expected uint8 images "
                                "(N, C, H, W), (N, H, W, C) or (N, H, W)")
        if images.dim() == 3:
            return images.unsqueeze(1).contiguous()
        layout = self.layout if self.layout != "auto" else self._guess_layout(tuple(images.shape))
        return (images.permute(0, 3, 1, 2) if layout == "nhwc" else images).contiguous()

    def _guess_layout(self, shape: tuple[int, ...]) -> str:
        nchw = shape[1] in CHANNELS and shape[2] == shape[3]
        nhwc = shape[3] in CHANNELS and shape[1] == shape[2]
        if nchw == nhwc:
            raise GenframeError(f"{self.type_name}: layout: cannot tell the channel axis of shape {shape} in "
                                f"{self.path!r}; set layout: nchw or nhwc")
        return "nchw" if nchw else "nhwc"

    def _labels(self, arrays: Any, n: int) -> torch.Tensor | None:
        name = self.labels_key or "labels"
        if not isinstance(arrays, dict) or name not in arrays:
            if self.labels_key is not None:
                raise GenframeError(f"{self.type_name}: labels_key: {self.path!r} has no {name!r} "
                                    "(a .npy file or a bare tensor holds images only)")
            return None
        labels = _as_tensor(arrays[name])
        if not (labels is not None and labels.dim() == 1 and labels.shape[0] == n
                and not labels.is_floating_point() and not labels.is_complex() and labels.dtype != torch.bool
                and (n == 0 or labels.min() >= 0)):
            raise GenframeError(f"{self.type_name}: labels_key: {name!r} in {self.path!r} must hold {n} "
                                "non-negative integers")
        return labels.long()


@hookimpl
def genframe_components():
    return [TensorFile]
