"""Built-in data sets: MNIST read from IDX files on any fsspec filesystem, and scikit-learn's digits.

Both decode the whole set once into uint8 (N, 1, H, W) tensors: these data sets fit in memory many
times over, and the engine keeps them on the device so that batching never touches the host.
"""

from __future__ import annotations

import gzip
from typing import Literal

import fsspec
from fsspec.implementations.local import LocalFileSystem
import numpy as np
import torch

from genframe import Dataset, GenframeError, component, hookimpl, param
from genframe.images import resize_uint8

IMAGES_MAGIC = 2051  # IDX: unsigned bytes, 3 dimensions (count, rows, columns)
LABELS_MAGIC = 2049  # IDX: unsigned bytes, 1 dimension (count)
MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def parse_idx(raw: bytes, magic: int, source: str) -> np.ndarray:
    """Decode an IDX file of unsigned bytes, checking its magic number and that its size matches the header.

    Parsed here rather than through torchvision so that a folder holding a single split works.
    """
    if raw[:2] == b"\x1f\x8b":  # gzip's magic: IDX files always start with two zero bytes instead
        raw = gzip.decompress(raw)
    found = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
    if found != magic:
        raise GenframeError(f"{source}: not an IDX file of the expected kind "
                            f"(magic number {found}, expected {magic})")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise GenframeError(f"{source}: truncated IDX header ({len(raw)} bytes)")
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape))
    if len(raw) != expected:
        raise GenframeError(f"{source}: IDX header announces shape {shape} ({expected} bytes) "
                            f"but the file holds {len(raw)} bytes")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy()


def take_subset(images: torch.Tensor, labels: torch.Tensor | None, limit: int | None,
                seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A seeded random subset of ``limit`` examples, kept in file order; everything if ``limit`` is None.

    Random rather than the first ``limit`` so that small runs still see every class in proportion.
    """
    if limit is None or limit >= images.shape[0]:
        return images, labels
    generator = torch.Generator().manual_seed(seed)
    keep = torch.randperm(images.shape[0], generator=generator)[:limit].sort().values
    return images[keep], None if labels is None else labels[keep]


def _join(path: str, name: str) -> str:
    return f"{path.rstrip('/')}/{name}" if path else name


@component("dataset", "mnist")
class MNIST(Dataset):
    """MNIST handwritten digits from IDX files (plain or .gz), in any fsspec location.

    Files are looked up directly in ``root`` and in ``root/MNIST/raw`` (where torchvision puts them),
    so an existing torchvision download is reused as is.
    """

    root: str = param("data/mnist", help="folder or fsspec URL holding the IDX files")
    split: Literal["auto", "train", "test"] = param(
        "auto", help="auto: the training split if its files are present, else the test split")
    image_size: int = param(28, ge=1, help="side of the square images produced")
    resize: Literal["bilinear", "pad"] = param(
        "bilinear", help="how to reach image_size: interpolate, or centre the 28x28 digits with zero borders")
    limit: int | None = param(None, ge=1, help="keep a seeded random subset of this many images")
    subset_seed: int = param(0, help="seed of the subset chosen by limit")
    download: bool = param(False, help="fetch missing files with torchvision (local roots only)")

    def load(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        try:
            fs, root = fsspec.core.url_to_fs(self.root)
        except (ValueError, ImportError) as exc:  # unknown protocol, or its package is not installed
            raise GenframeError(f"mnist: root: cannot open {self.root!r}: {exc}") from None
        split, files = self._find(fs, root)
        if files is None:
            if not self.download:
                raise GenframeError(self._missing_message(split))
            split = "test" if self.split == "test" else "train"
            self._fetch(fs, root, split)
            files = self._locate(fs, root, split)
            if files is None:
                raise GenframeError(self._missing_message(split))
        image_path, label_path = files
        with fs.open(image_path, "rb") as f:
            images = parse_idx(f.read(), IMAGES_MAGIC, image_path)
        with fs.open(label_path, "rb") as f:
            labels = parse_idx(f.read(), LABELS_MAGIC, label_path)
        if images.shape[0] != labels.shape[0]:
            raise GenframeError(f"mnist: {image_path} holds {images.shape[0]} images but "
                                f"{label_path} holds {labels.shape[0]} labels")
        x, y = take_subset(torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels).long(),
                           self.limit, self.subset_seed)
        if self.resize == "pad" and self.image_size < x.shape[-1]:
            raise GenframeError(f"mnist: resize: pad needs image_size >= {x.shape[-1]}, got {self.image_size}")
        return resize_uint8(x, self.image_size, self.resize), y

    def _find(self, fs, root: str) -> tuple[str, tuple[str, str] | None]:
        """The split to use and its (images, labels) paths, or None when its files are missing."""
        if self.split != "auto":
            return self.split, self._locate(fs, root, self.split)
        for split in ("train", "test"):
            files = self._locate(fs, root, split)
            if files is not None:
                return split, files
        return "auto", None

    @staticmethod
    def _locate(fs, root: str, split: str) -> tuple[str, str] | None:
        folders = (root, _join(root, "MNIST/raw"))
        found = []
        for stem in MNIST_FILES[split]:
            candidates = [_join(folder, stem + ext) for folder in folders for ext in ("", ".gz")]
            path = next((p for p in candidates if fs.isfile(p)), None)
            if path is None:
                return None
            found.append(path)
        return found[0], found[1]

    def _missing_message(self, split: str) -> str:
        splits = ("train", "test") if split == "auto" else (split,)
        names = ", ".join(f"{stem}[.gz]" for s in splits for stem in MNIST_FILES[s])
        return (f"mnist: no {' or '.join(splits)} files under root {self.root!r}: looked for {names} "
                f"in the root and in its MNIST/raw folder; set `download: true` to fetch them")

    def _fetch(self, fs, root: str, split: str) -> None:
        if not isinstance(fs, LocalFileSystem):
            raise GenframeError(f"mnist: download: only a local root can be downloaded to, got {self.root!r}")
        from torchvision.datasets import MNIST as TorchvisionMNIST

        try:
            TorchvisionMNIST(root, train=split == "train", download=True)
        except Exception as exc:  # network failures and the like: one line for the user
            raise GenframeError(f"mnist: download into {self.root!r} failed: {exc}") from exc


@component("dataset", "digits")
class Digits(Dataset):
    """scikit-learn's 1797 8x8 handwritten digits: a data set small enough for tests and quick demos.

    Its 17 grey levels (0..16) are stretched to 0..255 so that it follows the uint8 convention.
    """

    image_size: int = param(16, ge=1, help="side of the square images produced (bilinear resize)")
    limit: int | None = param(None, ge=1, help="keep a seeded random subset of this many images")
    subset_seed: int = param(0, help="seed of the subset chosen by limit")

    def load(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        from sklearn.datasets import load_digits

        pixels, labels = load_digits(return_X_y=True)
        images = np.rint(pixels * (255.0 / 16.0)).astype(np.uint8).reshape(-1, 1, 8, 8)
        x, y = take_subset(torch.from_numpy(images), torch.from_numpy(labels).long(),
                           self.limit, self.subset_seed)
        return resize_uint8(x, self.image_size, "bilinear"), y


@hookimpl
def genframe_components():
    return [MNIST, Digits]
