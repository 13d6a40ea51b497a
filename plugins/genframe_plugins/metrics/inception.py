"""The FID Inception-v3: the TensorFlow graph of 2015-12-05 that FID and the Inception Score are defined by.

Published FIDs and Inception Scores are measured with this one network, not with torchvision's
Inception-v3: the weights differ (1008 classes), and the graph departs from the paper in ways a port
must reproduce to give the same numbers — the 3x3 average pools of the A, C and first E blocks
ignore the zero padding, and the last E block max-pools where the paper average-pools. Features
are the 2048-d pool3 activations; the Inception Score reads the classifier's logits without its
bias, as the original code did.

The weights are read from a local path or any fsspec URL (http(s) through the standard library, so
no extra package is needed), copied once into a cache folder, and their SHA-256 is checked on the
bytes that are loaded, every time: a FID is only comparable if the weights are exactly the
release's. Files load with ``torch.load(weights_only=True)``, which runs no code.

For speed, batch norms are folded into the convolutions once the weights are loaded (in float64,
then cast), and the 1x1 convolutions that open each mixed block read the same input, so they run
as one convolution.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Iterator, Literal, Mapping

import fsspec
import numpy as np
import torch
import torch.nn.functional as F
from fsspec.implementations.local import LocalFileSystem
from torch import nn

from genframe import FeatureExtractor, GenframeError, component, hookimpl, param

RELEASE_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
               "pt_inception-2015-12-05-6726825d.pth")
RELEASE_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
RELEASE_BYTES = 95_628_359
WEIGHTS_ENV = "GENFRAME_INCEPTION_WEIGHTS"
CACHE_ENV = "GENFRAME_CACHE"
RESIZES = ("tf1_bilinear", "bilinear", "bicubic", "nearest")
FEATURE_DIM = 2048
NUM_CLASSES = 1008
_CHUNK = 1 << 20


# --------------------------------------------------------------------------- the network


class ConvBN(nn.Module):
    """Convolution without bias, batch norm with TensorFlow's epsilon (1e-3), ReLU.

    Kept as separate modules only so that the release's keys (``<name>.conv.weight``,
    ``<name>.bn.running_mean``...) load as they are; ``fold`` turns them into one biased convolution.
    """

    def __init__(self, cin: int, cout: int, kernel, stride: int = 1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3)
        self.stride, self.padding = stride, padding
        self.register_buffer("weight", None, persistent=False)  # set by fold
        self.register_buffer("bias", None, persistent=False)

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight, bias) in float64 of the convolution that equals conv followed by batch norm."""
        bn = self.bn
        scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
        weight = self.conv.weight.double() * scale[:, None, None, None]
        return weight, bn.bias.double() - bn.running_mean.double() * scale

    def fold(self, dtype: torch.dtype) -> None:
        weight, bias = self.folded()
        self.weight, self.bias = weight.to(dtype), bias.to(dtype)
        del self.conv, self.bn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight is None:
            return F.relu(self.bn(self.conv(x)))
        return F.relu(F.conv2d(x, self.weight, self.bias, self.stride, self.padding))


class Mixed(nn.Module):
    """An Inception block whose ``heads`` (1x1 convolutions of the block's input) can run as one."""

    heads: tuple[str, ...] = ()

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("stem_weight", None, persistent=False)  # the heads as one, set by fold
        self.register_buffer("stem_bias", None, persistent=False)
        self.stem_sizes: list[int] = []

    def fold(self, dtype: torch.dtype) -> None:
        parts = [getattr(self, name).folded() for name in self.heads]
        if len(parts) > 1:
            self.stem_weight = torch.cat([w for w, _ in parts]).to(dtype)
            self.stem_bias = torch.cat([b for _, b in parts]).to(dtype)
            self.stem_sizes = [w.shape[0] for w, _ in parts]
            for name in self.heads:
                delattr(self, name)
        for module in self.children():
            if isinstance(module, ConvBN):
                module.fold(dtype)

    def open_heads(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.stem_weight is None:
            return [getattr(self, name)(x) for name in self.heads]
        return list(F.relu(F.conv2d(x, self.stem_weight, self.stem_bias)).split(self.stem_sizes, dim=1))


def _avg_pool_unpadded(x: torch.Tensor) -> torch.Tensor:
    """TensorFlow's 3x3 'SAME' average pool: border windows average only the pixels that exist."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class MixedA(Mixed):
    heads = ("branch1x1", "branch5x5_1", "branch3x3dbl_1")

    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = ConvBN(cin, 64, 1)
        self.branch5x5_1 = ConvBN(cin, 48, 1)
        self.branch5x5_2 = ConvBN(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = ConvBN(cin, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, padding=1)
        self.branch_pool = ConvBN(cin, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b, c = self.open_heads(x)
        b = self.branch5x5_2(b)
        c = self.branch3x3dbl_3(self.branch3x3dbl_2(c))
        return torch.cat([a, b, c, self.branch_pool(_avg_pool_unpadded(x))], dim=1)


class MixedB(Mixed):
    heads = ("branch3x3dbl_1",)

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = ConvBN(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = ConvBN(cin, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (b,) = self.open_heads(x)
        b = self.branch3x3dbl_3(self.branch3x3dbl_2(b))
        return torch.cat([self.branch3x3(x), b, F.max_pool2d(x, kernel_size=3, stride=2)], dim=1)


class MixedC(Mixed):
    heads = ("branch1x1", "branch7x7_1", "branch7x7dbl_1")

    def __init__(self, cin: int, c7: int):
        super().__init__()
        self.branch1x1 = ConvBN(cin, 192, 1)
        self.branch7x7_1 = ConvBN(cin, c7, 1)
        self.branch7x7_2 = ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = ConvBN(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = ConvBN(cin, c7, 1)
        self.branch7x7dbl_2 = ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = ConvBN(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = ConvBN(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b, c = self.open_heads(x)
        b = self.branch7x7_3(self.branch7x7_2(b))
        for name in ("branch7x7dbl_2", "branch7x7dbl_3", "branch7x7dbl_4", "branch7x7dbl_5"):
            c = getattr(self, name)(c)
        return torch.cat([a, b, c, self.branch_pool(_avg_pool_unpadded(x))], dim=1)


class MixedD(Mixed):
    heads = ("branch3x3_1", "branch7x7x3_1")

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = ConvBN(cin, 192, 1)
        self.branch3x3_2 = ConvBN(192, 320, 3, stride=2)
        self.branch7x7x3_1 = ConvBN(cin, 192, 1)
        self.branch7x7x3_2 = ConvBN(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = ConvBN(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = ConvBN(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.open_heads(x)
        a = self.branch3x3_2(a)
        b = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(b)))
        return torch.cat([a, b, F.max_pool2d(x, kernel_size=3, stride=2)], dim=1)


class MixedE(Mixed):
    """The last blocks; ``max_pool`` marks the final one, where the graph max-pools (see the module docstring)."""

    heads = ("branch1x1", "branch3x3_1", "branch3x3dbl_1")

    def __init__(self, cin: int, max_pool: bool):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = ConvBN(cin, 320, 1)
        self.branch3x3_1 = ConvBN(cin, 384, 1)
        self.branch3x3_2a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = ConvBN(cin, 448, 1)
        self.branch3x3dbl_2 = ConvBN(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = ConvBN(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b, c = self.open_heads(x)
        b = torch.cat([self.branch3x3_2a(b), self.branch3x3_2b(b)], dim=1)
        c = self.branch3x3dbl_2(c)
        c = torch.cat([self.branch3x3dbl_3a(c), self.branch3x3dbl_3b(c)], dim=1)
        pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1) if self.max_pool else _avg_pool_unpadded(x)
        return torch.cat([a, b, c, self.branch_pool(pooled)], dim=1)


class FIDInception(nn.Module):
    """The network from preprocessed images ((N, 3, R, R) in [-1, 1]) to pool3 features (N, 2048).

    Module names are the release file's keys; ``fc`` is the 1008-way classifier (its bias is kept
    for the key layout but never used).
    """

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = ConvBN(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = ConvBN(32, 32, 3)
        self.Conv2d_2b_3x3 = ConvBN(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = ConvBN(80, 192, 3)
        self.Mixed_5b = MixedA(192, 32)
        self.Mixed_5c = MixedA(256, 64)
        self.Mixed_5d = MixedA(288, 64)
        self.Mixed_6a = MixedB(288)
        self.Mixed_6b = MixedC(768, 128)
        self.Mixed_6c = MixedC(768, 160)
        self.Mixed_6d = MixedC(768, 160)
        self.Mixed_6e = MixedC(768, 192)
        self.Mixed_7a = MixedD(768)
        self.Mixed_7b = MixedE(1280, max_pool=False)
        self.Mixed_7c = MixedE(2048, max_pool=True)
        self.fc = nn.Linear(FEATURE_DIM, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
                     "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c"):
            x = getattr(self, name)(x)
        return x.mean(dim=(2, 3))

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """Class logits without the bias, as the Inception Score was defined."""
        return features @ self.fc.weight.T

    def fold(self, dtype: torch.dtype) -> "FIDInception":
        """Fold batch norms into convolutions and fuse each block's heads; the result only infers."""
        for module in self.children():
            if isinstance(module, (ConvBN, Mixed)):
                module.fold(dtype)
        self.fc.to(dtype)
        self.requires_grad_(False)
        return self.eval()


def expected_keys() -> dict[str, tuple[int, ...]]:
    """Every key of the release layout with its shape (batch-norm step counters excluded)."""
    return {k: tuple(v.shape) for k, v in FIDInception().state_dict().items()
            if not k.endswith("num_batches_tracked")}


def build_network(state: Mapping[str, torch.Tensor], source: str) -> FIDInception:
    """An unfolded network holding ``state``; the keys must be exactly the release's.

    ``num_batches_tracked`` counters may be present or not (they are training bookkeeping, never
    used for inference, and PyTorch ports differ on whether they saved them); nothing else may
    be missing, extra or of another shape.
    """
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise GenframeError(f"{source}: not a state dict of tensors; expected the FID Inception weights")
    expected = expected_keys()
    given = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    wrong = sorted(k for k in set(expected) & set(given) if tuple(given[k].shape) != expected[k])
    if missing or unexpected or wrong:
        problems = [f"{len(keys)} {what} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})"
                    for what, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                                       ("keys of another shape", wrong)) if keys]
        raise GenframeError(f"{source}: not the FID Inception-v3 layout: {'; '.join(problems)}")
    network = FIDInception().double()  # folding then starts from the file's values, not rounded copies
    network.load_state_dict(given, strict=False)
    return network


# --------------------------------------------------------------------------- preprocessing


def tf1_bilinear_matrix(n_in: int, n_out: int, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """(n_out, n_in) weights of TensorFlow 1's ``resize_bilinear`` (align_corners=False) along one axis.

    TF1 maps output pixel i to input position i * (n_in / n_out), with the scale rounded to float32,
    and interpolates between floor(position) and the next pixel, clamped at the border: no half-pixel
    offset and no antialiasing, unlike PyTorch's bilinear mode. The FID graph was fed this way.
    """
    scale = float(np.float32(n_in) / np.float32(n_out))
    position = torch.arange(n_out, dtype=dtype, device=device) * scale
    low = position.floor()
    frac = position - low
    low = low.long().clamp(max=n_in - 1)
    high = (low + 1).clamp(max=n_in - 1)
    rows = torch.arange(n_out, device=device)
    matrix = torch.zeros(n_out, n_in, dtype=dtype, device=device)
    matrix.index_put_((rows, low), 1 - frac, accumulate=True)
    matrix.index_put_((rows, high), frac, accumulate=True)
    return matrix


def preprocess(images: torch.Tensor, resize: str, resolution: int, dtype: torch.dtype) -> torch.Tensor:
    """uint8 (N, C, H, W) -> the network's input (N, C, R, R) in [-1, 1], computed where the images are.

    ``tf1_bilinear`` scales as the TF graph did, (x - 128) / 128; the PyTorch modes scale as
    pytorch-fid does, x / 127.5 - 1. All modes interpolate linearly, so scaling before or after
    resizing is the same up to rounding.
    """
    x = images.to(dtype)
    height, width = x.shape[-2:]
    if resize == "tf1_bilinear":
        if (height, width) != (resolution, resolution):
            rows = tf1_bilinear_matrix(height, resolution, dtype, x.device)
            cols = tf1_bilinear_matrix(width, resolution, dtype, x.device)
            x = rows @ x @ cols.T
        return (x - 128.0) / 128.0
    if (height, width) != (resolution, resolution):
        corners = {} if resize == "nearest" else {"align_corners": False}
        x = F.interpolate(x, size=(resolution, resolution), mode=resize, **corners)
    return x / 127.5 - 1.0


# --------------------------------------------------------------------------- weights


def cache_dir() -> Path:
    """Where downloads and statistics are kept: ``$GENFRAME_CACHE`` or ``~/.cache/genframe``."""
    return Path(os.environ.get(CACHE_ENV) or "~/.cache/genframe").expanduser()


def weights_location(configured: str | None) -> str:
    """The spec's value, else ``$GENFRAME_INCEPTION_WEIGHTS``, else the public release."""
    return configured or os.environ.get(WEIGHTS_ENV) or RELEASE_URL


def _is_local(location: str) -> bool:
    if urllib.parse.urlsplit(location).scheme in ("http", "https"):
        return False
    try:
        fs, _ = fsspec.core.url_to_fs(location)
    except (ValueError, ImportError) as exc:
        raise GenframeError(f"inception_v3: weights: cannot open {location!r}: {exc}") from None
    return isinstance(fs, LocalFileSystem)


@contextlib.contextmanager
def _open_remote(location: str) -> Iterator:
    """A binary stream of a remote file; http(s) goes through urllib, so fsspec's aiohttp is not needed."""
    if urllib.parse.urlsplit(location).scheme in ("http", "https"):
        with urllib.request.urlopen(location, timeout=60) as response:  # noqa: S310 (scheme checked)
            yield response
    else:
        with fsspec.open(location, "rb") as fh:
            yield fh


def _cached_path(location: str) -> Path:
    name = Path(urllib.parse.urlsplit(location).path).name or "inception-weights.pth"
    return cache_dir() / "inception" / name


def _download(location: str, target: Path, sha256: str | None) -> None:
    """Stream ``location`` into ``target``, hashing on the way; a file with another digest is not kept."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.part")
    digest = hashlib.sha256()
    try:
        with _open_remote(location) as source, open(temp, "wb") as out:
            while chunk := source.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
    except Exception as exc:  # offline, no such file, permission...: one line naming the manual fix
        temp.unlink(missing_ok=True)
        size = f"{RELEASE_BYTES:,} bytes, " if location == RELEASE_URL else ""
        expect = f"SHA-256 {sha256}" if sha256 else "any SHA-256"
        raise GenframeError(
            f"inception_v3: cannot download the FID Inception weights from {location} "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no detail'}); download that "
            f"file ({size}{expect}) and save it as {target}, or point ${WEIGHTS_ENV} or the metric's "
            f"features.weights at a copy") from None
    if sha256 and digest.hexdigest() != sha256:
        temp.unlink(missing_ok=True)
        raise GenframeError(f"inception_v3: {location} has SHA-256 {digest.hexdigest()}, expected {sha256}; "
                            "refusing it (a different or damaged file gives different FIDs)")
    os.replace(temp, target)


def _read_checked(path: str, sha256: str | None, source: str) -> tuple[bytes, str]:
    """The file's bytes and their SHA-256, refused when they are not the expected ones."""
    try:
        with fsspec.open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        raise GenframeError(f"inception_v3: weights: no such file {source!r}") from None
    except OSError as exc:
        raise GenframeError(f"inception_v3: weights: cannot read {source!r}: {exc.strerror or exc}") from None
    digest = hashlib.sha256(data).hexdigest()
    if sha256 and digest != sha256:
        raise GenframeError(f"inception_v3: {source} has SHA-256 {digest}, expected {sha256}; refusing it "
                            "(replace the file, or set features.weights_sha256 for deliberately other weights)")
    return data, digest


def _present(location: str, sha256: str | None) -> tuple[bytes, str]:
    """The weights' bytes and SHA-256, checked; a remote file is downloaded into the cache first."""
    if _is_local(location):
        return _read_checked(location, sha256, location)
    cached = _cached_path(location)
    if not cached.exists():
        _download(location, cached, sha256)
    return _read_checked(str(cached), sha256, f"{cached} (cached copy of {location})")


_CHECKED: set[tuple[str, str]] = set()  # weights found present and intact in this process


def check_weights(location: str, sha256: str | None) -> None:
    """Fetch the weights if they are remote and check their digest, once per process (preflight)."""
    if (location, sha256 or "") not in _CHECKED:
        _present(location, sha256)
        _CHECKED.add((location, sha256 or ""))


def read_weights(location: str, sha256: str | None) -> tuple[dict[str, torch.Tensor], str]:
    """(state dict, SHA-256) of the weights at ``location``; remote files go through the cache first."""
    data, digest = _present(location, sha256)
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # a non-torch file raises anything from UnpicklingError to RuntimeError
        raise GenframeError(f"inception_v3: {location} is not a PyTorch weights file "
                            f"({type(exc).__name__})") from None
    return state, digest


_NETWORKS: dict[tuple[str, str, str, str], tuple[FIDInception, str]] = {}


def load_network(location: str | None, sha256: str | None, dtype: torch.dtype,
                 device: torch.device) -> tuple[FIDInception, str]:
    """The folded network on ``device`` and its weights' SHA-256, loaded once per process and setting."""
    where = weights_location(location)
    key = (where, sha256 or "", str(dtype), str(device))
    if key not in _NETWORKS:
        state, digest = read_weights(where, sha256)
        network = build_network(state, where).fold(dtype).to(device)
        if device.type == "cuda":
            network = network.to(memory_format=torch.channels_last)
        _NETWORKS[key] = (network, digest)
    return _NETWORKS[key]


@contextlib.contextmanager
def _cudnn_tf32(allowed: bool) -> Iterator[None]:
    """Allow or forbid TF32 in cuDNN convolutions for the duration, restoring the global setting."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):
        previous = conv.fp32_precision
        conv.fp32_precision = "tf32" if allowed else "ieee"
        try:
            yield
        finally:
            conv.fp32_precision = previous
    else:
        previous = torch.backends.cudnn.allow_tf32
        torch.backends.cudnn.allow_tf32 = allowed
        try:
            yield
        finally:
            torch.backends.cudnn.allow_tf32 = previous


# --------------------------------------------------------------------------- the component


@component("feature_extractor", "inception_v3")
class InceptionV3(FeatureExtractor):
    """The FID Inception-v3 (TensorFlow's 2015-12-05 graph): 2048-d pool3 features and 1008 class logits.

    The defaults are the published protocol: the release weights, TF1 bilinear resizing to 299 x 299,
    float32. Greyscale images are repeated to three channels. Weights are looked up in ``weights``,
    else ``$GENFRAME_INCEPTION_WEIGHTS``, else downloaded once from the public release into
    ``$GENFRAME_CACHE/inception`` (default ``~/.cache/genframe/inception``).
    """

    weights: str | None = param(None, help="file or fsspec URL of the weights (default: $GENFRAME_INCEPTION_WEIGHTS, "
                                           "else the public pt_inception-2015-12-05 release)")
    weights_sha256: str | None = param(RELEASE_SHA256, help="SHA-256 the weights must have; null accepts any "
                                                            "file (its digest is still recorded)")
    resize: Literal["tf1_bilinear", "bilinear", "bicubic", "nearest"] = param(
        "tf1_bilinear", help="resizing to resolution: tf1_bilinear as TensorFlow 1 / torch-fidelity (published "
                             "numbers); bilinear as pytorch-fid; bicubic; nearest")
    resolution: int = param(299, ge=75, help="side the images are resized to (299 for comparable numbers)")
    dtype: Literal["float32", "float64"] = param("float32", help="precision of the network")
    allow_tf32: bool = param(True, help="let cuDNN use TF32 for float32 convolutions on recent NVIDIA GPUs, as "
                                        "PyTorch does by default; false for strict float32")

    def __attrs_post_init__(self) -> None:
        sha = self.weights_sha256
        if sha is not None and (len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha)):
            raise ValueError(f"weights_sha256 must be 64 lowercase hexadecimal digits, got {sha!r}")
        self._network: FIDInception | None = None
        self._digest: str | None = None

    @property
    def torch_dtype(self) -> torch.dtype:
        return torch.float64 if self.dtype == "float64" else torch.float32

    def preflight(self) -> None:
        check_weights(weights_location(self.weights), self.weights_sha256)

    def prepare(self, device: torch.device) -> None:
        self._network, self._digest = load_network(self.weights, self.weights_sha256, self.torch_dtype,
                                                   torch.device(device))

    @torch.no_grad()
    def extract(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if self._network is None:
            raise RuntimeError("call prepare(device) before extract")
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3):
            raise GenframeError(f"inception_v3: expects uint8 (N, 1 or 3, H, W) images, got "
                                f"{images.dtype} {tuple(images.shape)}")
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        x = preprocess(images, self.resize, self.resolution, self.torch_dtype)
        if x.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with _cudnn_tf32(self.allow_tf32):
            features = self._network(x)
        return {"features": features, "logits": self._network.logits(features)}

    def protocol(self) -> dict:
        if self._digest is None:
            raise RuntimeError("call prepare(device) before protocol")
        return {"type": self.type_name, "weights_sha256": self._digest, "resize": self.resize,
                "resolution": self.resolution, "dtype": self.dtype, "allow_tf32": self.allow_tf32,
                "features": "pool3", "logits": "without bias"}


@hookimpl
def genframe_components():
    return [InceptionV3]
