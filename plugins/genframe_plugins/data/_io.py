"""Shared by the data-set plugins: opening fsspec locations, seeded subsets, torchvision downloads.

Every data set reads through fsspec, so a root may be a local folder, ``memory://``, ``s3://``,
``https://`` or a chained archive URL (``zip://::photos.zip``) with no code specific to any of them.
"""

from __future__ import annotations

import gzip
import zlib
from typing import Any, Callable

import fsspec
from fsspec.implementations.local import LocalFileSystem
import torch

from genframe import GenframeError


def open_location(url: str, who: str, field: str = "root") -> tuple[Any, str]:
    """(filesystem, path) of a URL; an unknown protocol or a missing fsspec extra is a user error."""
    try:
        return fsspec.core.url_to_fs(url)
    except (ValueError, ImportError) as exc:  # unknown protocol, or its package is not installed
        raise GenframeError(f"{who}: {field}: cannot open {url!r}: {exc}") from None


def join(path: str, name: str) -> str:
    """fsspec paths are POSIX-like on every filesystem; an archive's root is the empty string."""
    return f"{path.rstrip('/')}/{name}" if path.rstrip("/") else name


def relative(path: str, root: str) -> str:
    """``path`` relative to ``root`` (both as a filesystem's listing spells them)."""
    prefix = root.rstrip("/") + "/" if root.rstrip("/") else ""
    return path[len(prefix):] if prefix and path.startswith(prefix) else path.lstrip("/")


def subset_positions(n: int, limit: int | None, seed: int) -> torch.Tensor | None:
    """Sorted positions of a seeded random subset of ``limit`` out of ``n``; None keeps everything.

    Random rather than the first ``limit`` so that small runs still see every class in proportion;
    sorted so that the subset keeps the source's order.
    """
    if limit is None or limit >= n:
        return None
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=generator)[:limit].sort().values


def take_subset(images: torch.Tensor, labels: torch.Tensor | None, limit: int | None,
                seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A seeded random subset of ``limit`` examples, kept in order; everything if ``limit`` is None."""
    keep = subset_positions(images.shape[0], limit, seed)
    if keep is None:
        return images, labels
    return images[keep], None if labels is None else labels[keep]


def download_with_torchvision(fs: Any, url: str, who: str, fetch: Callable[[], object]) -> None:
    """Run a torchvision download into a local root, turning its failures into one line for the user.

    torchvision writes with the local ``open``, so a remote root cannot be a download target.
    """
    if not isinstance(fs, LocalFileSystem):
        raise GenframeError(f"{who}: download: only a local root can be downloaded to, got {url!r}")
    try:
        fetch()
    except Exception as exc:  # network failures, missing optional packages, checksum errors...
        first_line = (str(exc).strip().splitlines() or [""])[0]
        raise GenframeError(f"{who}: download into {url!r} failed: {type(exc).__name__}: {first_line}") from exc


def decompressed(raw: bytes, source: str) -> bytes:
    """``raw`` itself, or its gzip content when it starts with gzip's magic number.

    The one place compressed data files are opened: a damaged or truncated file (zlib errors,
    EOFError) becomes an error that names the file, instead of a traceback from deep in zlib.
    """
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise GenframeError(f"{source}: damaged gzip file ({type(exc).__name__}: {exc}); delete it to download "
                            "it again, or replace it") from None


def read_data_file(fs: Any, path: str, who: str) -> bytes:
    """The bytes of one data file (decompressed when gzipped), or an error that names the file."""
    try:
        with fs.open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise GenframeError(f"{who}: cannot read {path}: {exc.strerror or exc}") from None
    return decompressed(raw, path)

