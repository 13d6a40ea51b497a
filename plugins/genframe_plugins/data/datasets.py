"""Benchmarks stored as raw pixel arrays: MNIST and Fashion-MNIST (IDX), CIFAR-10 (python batches), digits.

These files already hold uint8 pixels, so reading them is as fast as reading a decoded-image cache
would be: they are parsed on every run and need none. Each data set fits in memory many times
over; the engine keeps it on the device so that batching never touches the host.
"""

from __future__ import annotations

import codecs
import importlib.resources
import io
import pickle
from typing import Literal

import numpy as np
import torch

from genframe import Dataset, GenframeError, component, hookimpl, param, resize_uint8

from genframe_plugins.data._io import (decompressed, download_with_torchvision, join, open_location, read_data_file,
                                       take_subset)

IMAGES_MAGIC = 2051  # IDX: unsigned bytes, 3 dimensions (count, rows, columns)
LABELS_MAGIC = 2049  # IDX: unsigned bytes, 1 dimension (count)
MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
CIFAR_FOLDER = "cifar-10-batches-py"  # where torchvision extracts the archive
CIFAR_FILES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
CIFAR_PIXELS = 3 * 32 * 32

__all__ = ["CIFAR10", "Digits", "FashionMNIST", "IMAGES_MAGIC", "LABELS_MAGIC", "MNIST", "parse_cifar_batch",
           "parse_idx", "take_subset"]


def parse_idx(raw: bytes, magic: int, source: str) -> np.ndarray:
    """Decode an IDX file of unsigned bytes, checking its magic number and that its size matches the header.

    Parsed here rather than through torchvision so that a folder holding a single split works.
    """
    raw = decompressed(raw, source)  # IDX files always start with two zero bytes, gzip with its magic
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


def _missing_files_message(who: str, url: str, splits: tuple[str, ...], names: str, subfolder: str) -> str:
    return (f"{who}: no {' or '.join(splits)} files under root {url!r}: looked for {names} "
            f"in the root and in its {subfolder} folder")


def find_or_download(dataset, fs, root: str, fetch) -> tuple[str, object]:
    """(split, files) of a benchmark under ``root``; missing files are fetched when ``download`` is set.

    ``dataset`` provides ``_find(fs, root)`` and ``_missing_message(split)``; ``fetch`` downloads.
    """
    split, files = dataset._find(fs, root)
    if files is None:
        if not dataset.download:
            raise GenframeError(f"{dataset._missing_message(split)}; set `download: true` to fetch them")
        try:
            download_with_torchvision(fs, dataset.root, dataset.type_name, fetch)
        except GenframeError as exc:  # offline: say where the files go
            missing = dataset._missing_message(split).split(": ", 1)[1]
            raise GenframeError(f"{exc}; without internet, put the files there yourself ({missing})") from None
        split, files = dataset._find(fs, root)
        if files is None:
            raise GenframeError(dataset._missing_message(split))
    return split, files


@component("dataset", "mnist")
class MNIST(Dataset):
    """MNIST handwritten digits from IDX files (plain or .gz), in any fsspec location.

    Files are looked up directly in ``root`` and in ``root/MNIST/raw`` (where torchvision puts them),
    so an existing torchvision download is reused as is.
    """

    raw_folder = "MNIST/raw"  # torchvision's layout under root
    label_names = tuple(str(digit) for digit in range(10))  # what class_names() reports

    root: str = param("data/mnist", help="folder or fsspec URL holding the IDX files")
    split: Literal["auto", "train", "test"] = param(
        "auto", help="auto: the training split if its files are present, else the test split")
    image_size: int = param(28, ge=1, help="side of the square images produced")
    resize: Literal["bilinear", "pad"] = param(
        "bilinear", help="how to reach image_size: interpolate, or centre the 28x28 images with zero borders")
    limit: int | None = param(None, ge=1, help="keep a seeded random subset of this many images")
    subset_seed: int = param(0, help="seed of the subset chosen by limit")
    download: bool = param(False, help="fetch missing files with torchvision (local roots only)")

    def class_names(self) -> list[str]:
        return list(self.label_names)

    def planned_shape(self) -> tuple[int | None, int, int]:
        count = {"train": 60_000, "test": 10_000}.get(self.split, 60_000)
        return min(count, self.limit or count), 1, self.image_size

    def preflight(self) -> None:
        self._files()

    def _files(self) -> tuple[object, tuple[str, str]]:
        """(filesystem, (images, labels) paths), fetched first when missing and ``download`` is set."""
        fs, root = open_location(self.root, self.type_name)
        fetched_split = "test" if self.split == "test" else "train"
        _, files = find_or_download(self, fs, root, lambda: self._torchvision(root, fetched_split))
        return fs, files

    def load(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        fs, files = self._files()
        image_path, label_path = files
        images = parse_idx(read_data_file(fs, image_path, self.type_name), IMAGES_MAGIC, image_path)
        labels = parse_idx(read_data_file(fs, label_path, self.type_name), LABELS_MAGIC, label_path)
        if images.shape[0] != labels.shape[0]:
            raise GenframeError(f"{self.type_name}: {image_path} holds {images.shape[0]} images but "
                                f"{label_path} holds {labels.shape[0]} labels")
        x, y = take_subset(torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels).long(),
                           self.limit, self.subset_seed)
        if self.resize == "pad" and self.image_size < x.shape[-1]:
            raise GenframeError(f"{self.type_name}: resize: pad needs image_size >= {x.shape[-1]}, "
                                f"got {self.image_size}")
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

    def _locate(self, fs, root: str, split: str) -> tuple[str, str] | None:
        folders = (root, join(root, self.raw_folder))
        found = []
        for stem in MNIST_FILES[split]:
            candidates = [join(folder, stem + ext) for folder in folders for ext in ("", ".gz")]
            path = next((p for p in candidates if fs.isfile(p)), None)
            if path is None:
                return None
            found.append(path)
        return found[0], found[1]

    def _missing_message(self, split: str) -> str:
        splits = ("train", "test") if split == "auto" else (split,)
        names = ", ".join(f"{stem}[.gz]" for s in splits for stem in MNIST_FILES[s])
        return _missing_files_message(self.type_name, self.root, splits, names, self.raw_folder)

    @staticmethod
    def _torchvision(root: str, split: str) -> None:
        from torchvision.datasets import MNIST as TorchvisionMNIST

        TorchvisionMNIST(root, train=split == "train", download=True)


@component("dataset", "fashion_mnist")
class FashionMNIST(MNIST):
    """Zalando's Fashion-MNIST: 28x28 greyscale clothes in 10 classes, in MNIST's IDX format and file names.

    Files are looked up directly in ``root`` and in ``root/FashionMNIST/raw`` (torchvision's layout).
    """

    raw_folder = "FashionMNIST/raw"
    label_names = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
             "Ankle boot")

    root: str = param("data/fashion_mnist", help="folder or fsspec URL holding the IDX files")

    @staticmethod
    def _torchvision(root: str, split: str) -> None:
        from torchvision.datasets import FashionMNIST as TorchvisionFashionMNIST

        TorchvisionFashionMNIST(root, train=split == "train", download=True)


# --------------------------------------------------------------------------- CIFAR-10


def _numpy_loaders() -> dict[tuple[str, str], object]:
    """The callables a pickled numpy array refers to, under numpy 1's and numpy 2's module names."""
    reconstruct = np.zeros(1, np.uint8).__reduce_ex__(2)[0]
    frombuffer = np.zeros(1, np.uint8).__reduce_ex__(5)[0]
    allowed: dict[tuple[str, str], object] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                                              ("_codecs", "encode"): codecs.encode}
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{core}.numeric", "_frombuffer")] = frombuffer
    return allowed


class _ArraysOnly(pickle.Unpickler):
    """An unpickler that resolves only what numpy arrays need.

    CIFAR-10's python batches are pickled dicts of arrays, lists and strings; a general unpickler
    would run whatever code a tampered file names (torchvision's loader uses plain ``pickle.load``).
    ``_codecs.encode`` is how Python 3 spells bytes in protocol 2, for batches re-saved by Python 3.
    """

    _allowed = _numpy_loaders()

    def find_class(self, module: str, name: str):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"it references {module}.{name}, which is never unpickled") from None


def parse_cifar_batch(raw: bytes, source: str) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images N x 3 x 32 x 32, int64 labels N) of one CIFAR-10 python batch, unpickled safely."""
    try:
        # latin1 reads Python 2's byte strings (the original files) the way numpy expects them
        batch = _ArraysOnly(io.BytesIO(raw), encoding="latin1").load()
    except Exception as exc:  # garbage raises anything from EOFError to IndexError
        raise GenframeError(f"{source}: not a CIFAR-10 batch: {exc}") from None
    if isinstance(batch, dict):
        batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    data = batch.get("data") if isinstance(batch, dict) else None
    labels = batch.get("labels") if isinstance(batch, dict) else None
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
            and data.shape[1] == CIFAR_PIXELS and isinstance(labels, (list, np.ndarray))
            and len(labels) == data.shape[0]):
        raise GenframeError(f"{source}: not a CIFAR-10 batch: expected a dict with 'data' "
                            f"(N x {CIFAR_PIXELS} uint8) and N 'labels'")
    labels = np.asarray(labels)
    if labels.size and (labels.dtype.kind not in "iu" or labels.min() < 0 or labels.max() > 9):
        raise GenframeError(f"{source}: not a CIFAR-10 batch: labels must be integers 0..9")
    # Each row is the red plane, then green, then blue, each 32x32 in row-major order.
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


@component("dataset", "cifar10")
class CIFAR10(Dataset):
    """CIFAR-10: 60,000 32x32 colour images in 10 classes, from the python batches of the official archive.

    Files are looked up in ``root`` and in ``root/cifar-10-batches-py`` (where torchvision extracts them),
    and unpickled with a loader that accepts numpy arrays and nothing else.
    """

    label_names = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

    root: str = param("data/cifar10", help="folder or fsspec URL holding data_batch_1..5 and/or test_batch")

    def class_names(self) -> list[str]:
        return list(self.label_names)
    split: Literal["auto", "train", "test"] = param(
        "auto", help="auto: the training split (50,000) if its files are present, else the test split (10,000)")
    image_size: int = param(32, ge=1, help="side of the square images produced (bilinear resize)")
    limit: int | None = param(None, ge=1, help="keep a seeded random subset of this many images")
    subset_seed: int = param(0, help="seed of the subset chosen by limit")
    download: bool = param(False, help="fetch the archive with torchvision (local roots only)")

    def planned_shape(self) -> tuple[int | None, int, int]:
        count = {"train": 50_000, "test": 10_000}.get(self.split, 50_000)
        return min(count, self.limit or count), 3, self.image_size

    def preflight(self) -> None:
        self._files()

    def _files(self) -> tuple[object, list[str]]:
        """(filesystem, batch file paths), fetched first when missing and ``download`` is set."""
        fs, root = open_location(self.root, self.type_name)
        _, files = find_or_download(self, fs, root, lambda: self._torchvision(root))
        return fs, files

    def load(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        fs, files = self._files()
        images, labels = [], []
        for path in files:
            x, y = parse_cifar_batch(read_data_file(fs, path, self.type_name), path)
            images.append(x)
            labels.append(y)
        x, y = take_subset(torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels)),
                           self.limit, self.subset_seed)
        return resize_uint8(x, self.image_size, "bilinear"), y

    def _find(self, fs, root: str) -> tuple[str, list[str] | None]:
        splits = ("train", "test") if self.split == "auto" else (self.split,)
        for split in splits:
            for folder in (root, join(root, CIFAR_FOLDER)):
                paths = [join(folder, name) for name in CIFAR_FILES[split]]
                if all(fs.isfile(p) for p in paths):
                    return split, paths
        return self.split, None

    def _missing_message(self, split: str) -> str:
        splits = ("train", "test") if split == "auto" else (split,)
        names = ", ".join("data_batch_1..5" if s == "train" else "test_batch" for s in splits)
        return _missing_files_message(self.type_name, self.root, splits, names, CIFAR_FOLDER)

    @staticmethod
    def _torchvision(root: str) -> None:
        # torchvision's own URL, checksum and extraction, but not its plain-pickle loading
        from torchvision.datasets import CIFAR10 as TorchvisionCIFAR10
        from torchvision.datasets.utils import download_and_extract_archive

        download_and_extract_archive(TorchvisionCIFAR10.url, root, filename=TorchvisionCIFAR10.filename,
                                     md5=TorchvisionCIFAR10.tgz_md5)


# --------------------------------------------------------------------------- digits


@component("dataset", "digits")
class Digits(Dataset):
    """The 1797 8x8 handwritten digits of scikit-learn: a data set small enough for tests and quick demos.

    Shipped with genframe (``digits.npz``, 45 kB), so that the quickstart runs offline on a base
    install: the test set of UCI's Optical Recognition of Handwritten Digits, as scikit-learn
    (BSD-3-Clause) bundles it in ``load_digits``. Its 17 grey levels (0..16) are stretched to 0..255
    so that it follows the uint8 convention.
    """

    def class_names(self) -> list[str]:
        return [str(digit) for digit in range(10)]

    image_size: int = param(16, ge=1, help="side of the square images produced (bilinear resize)")
    limit: int | None = param(None, ge=1, help="keep a seeded random subset of this many images")
    subset_seed: int = param(0, help="seed of the subset chosen by limit")

    def planned_shape(self) -> tuple[int | None, int, int]:
        return min(1797, self.limit or 1797), 1, self.image_size

    def load(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        with importlib.resources.files(__package__).joinpath("digits.npz").open("rb") as fh:
            with np.load(fh) as arrays:
                pixels, labels = arrays["pixels"].astype(np.float64), arrays["labels"].astype(np.int64)
        images = np.rint(pixels * (255.0 / 16.0)).astype(np.uint8).reshape(-1, 1, 8, 8)
        x, y = take_subset(torch.from_numpy(images), torch.from_numpy(labels).long(),
                           self.limit, self.subset_seed)
        return resize_uint8(x, self.image_size, "bilinear"), y


@hookimpl
def genframe_components():
    return [MNIST, FashionMNIST, CIFAR10, Digits]
