"""The decoded-image cache: image files are decoded once and kept as one uint8 tensor file.

Decoding a few hundred thousand JPEGs takes minutes; loading their pixels from one file takes
seconds. A cache file is named by everything that shapes its pixels (source URL, preprocessing,
subset), so changing any of them uses another file and toggling between two settings stays
cheap. Inside, it records the identity of the source files (relative paths, sizes, modification
stamps), so edited, added or removed files make it stale; it is then decoded again and replaced.
Files are written to a temporary name and renamed, so an interrupted run never leaves a partial
cache that a later run would trust.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
import warnings
from typing import Any, Iterable

import torch

from genframe_plugins.data._io import join, open_location

CACHE_FORMAT = 1
# Listing fields that change when a file's content does, across local, object-store, HTTP and archive filesystems.
STAMP_KEYS = ("mtime", "LastModified", "last_modified", "ETag", "etag", "md5", "CRC", "chksum", "date_time",
              "created")


def default_cache_folder() -> str:
    """``$GENFRAME_CACHE/data``, else ``~/.cache/genframe/data``: one root for all of genframe's caches."""
    base = os.environ.get("GENFRAME_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "genframe")
    return join(base, "data")


def source_identity(files: Iterable[tuple[str, dict]]) -> str:
    """A digest of (relative path, size, modification stamps) of every source file, in the order given."""
    digest = hashlib.sha256()
    for name, info in files:
        stamps = [str(info[k]) for k in STAMP_KEYS if info.get(k) is not None]
        digest.update(json.dumps([name, info.get("size"), stamps]).encode("utf-8"))
    return digest.hexdigest()


class DecodedCache:
    """One cache entry: ``load`` returns the stored payload when it is still valid, ``store`` replaces it."""

    def __init__(self, who: str, folder: str | None, settings: dict[str, Any], identity: str):
        self.who = who
        self.folder = folder or default_cache_folder()
        self.settings = json.dumps({"format": CACHE_FORMAT, "type": who, **settings}, sort_keys=True)
        self.identity = identity
        self.name = f"{who}-{hashlib.sha256(self.settings.encode('utf-8')).hexdigest()[:24]}.pt"

    @property
    def url(self) -> str:
        return join(self.folder, self.name)

    def load(self) -> dict[str, Any] | None:
        """The cached images, labels and skipped files; None when absent, stale or unreadable."""
        fs, folder = open_location(self.folder, self.who, "cache_dir")
        path = join(folder, self.name)
        try:
            if not fs.exists(path):
                return None
            with fs.open(path, "rb") as f:
                payload = torch.load(f, map_location="cpu", weights_only=True)
        except Exception as exc:  # a truncated or foreign file: decode again and replace it
            warnings.warn(f"{self.who}: ignoring the unreadable decoded-image cache {self.url} "
                          f"({type(exc).__name__}: {exc}); decoding again", stacklevel=4)
            return None
        if not isinstance(payload, dict) or payload.get("settings") != self.settings \
                or payload.get("identity") != self.identity:
            return None
        return payload

    def store(self, images: torch.Tensor, labels: torch.Tensor | None, skipped: list[list[str]]) -> None:
        """Write atomically; a cache that cannot be written only costs the next run its head start."""
        payload = {"settings": self.settings, "identity": self.identity, "images": images, "labels": labels,
                   "skipped": skipped}
        fs, folder = open_location(self.folder, self.who, "cache_dir")
        path = join(folder, self.name)
        temp = join(folder, f".{self.name}.{uuid.uuid4().hex}.tmp")
        try:
            fs.makedirs(folder, exist_ok=True)
            with fs.open(temp, "wb") as f:
                torch.save(payload, f)
            fs.mv(temp, path)
        except Exception as exc:
            try:
                if fs.exists(temp):
                    fs.rm(temp)
            except Exception:  # the folder may be unwritable altogether
                pass
            warnings.warn(f"{self.who}: could not write the decoded-image cache to {self.url} "
                          f"({type(exc).__name__}: {exc}); the next run decodes again", stacklevel=4)
