"""The run folder, over fsspec: any URL (local path, ``memory://``, ``s3://``...) holds a run.

Layout::

    spec.yaml            the resolved spec (every default written out)
    run.json             data shape and provenance, so a run can be sampled without its data
    metrics.jsonl        one JSON object per logging interval / evaluation
    checkpoints/last.pt  everything needed to resume; replaced atomically
    images/<stage>/...   sample grids and previews as PNG
"""

from __future__ import annotations

import io
import json
import uuid
from typing import Any

import fsspec
import torch
import yaml

from .errors import GenframeError

CHECKPOINT_FORMAT = 1
LAST_CHECKPOINT = "checkpoints/last.pt"


class RunStorage:
    """Files of one run, addressed by run-relative paths."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")
        try:
            self.fs, self.root = fsspec.core.url_to_fs(self.url)
        except (ImportError, ValueError) as exc:
            raise GenframeError(f"{url}: unsupported output location: {exc}") from None

    def path(self, rel: str) -> str:
        return f"{self.root.rstrip('/')}/{rel}"

    # -- creation -------------------------------------------------------------------

    @classmethod
    def create(cls, url: str) -> "RunStorage":
        """A new, writable run folder; refuses to mix two runs in one folder."""
        storage = cls(url)
        if storage.exists("spec.yaml"):
            raise GenframeError(f"{url}: already holds a run; resume it with --resume {url} or choose another --out")
        try:
            storage.fs.makedirs(storage.root, exist_ok=True)
            storage.write_bytes(".write-test", b"")
            storage.fs.rm(storage.path(".write-test"))
        except (OSError, PermissionError) as exc:
            raise GenframeError(f"{url}: cannot write the run folder: {exc.strerror or exc}") from None
        return storage

    @classmethod
    def open(cls, url: str) -> "RunStorage":
        storage = cls(url)
        if not storage.exists("spec.yaml"):
            raise GenframeError(f"{url}: not a run folder (no spec.yaml found)")
        return storage

    # -- files ----------------------------------------------------------------------

    def exists(self, rel: str) -> bool:
        try:
            return self.fs.exists(self.path(rel))
        except OSError:
            return False

    def read_bytes(self, rel: str) -> bytes:
        with self.fs.open(self.path(rel), "rb") as fh:
            return fh.read()

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write atomically: readers see the old file or the new one, never a partial one."""
        final = self.path(rel)
        parent = final.rsplit("/", 1)[0]
        self.fs.makedirs(parent, exist_ok=True)
        temp = f"{parent}/.{final.rsplit('/', 1)[1]}.{uuid.uuid4().hex}.tmp"
        with self.fs.open(temp, "wb") as fh:
            fh.write(data)
        try:
            self.fs.mv(temp, final)
        except Exception:
            self.fs.rm(temp)
            raise

    def write_text(self, rel: str, text: str) -> None:
        self.write_bytes(rel, text.encode("utf-8"))

    def append_line(self, rel: str, line: str) -> None:
        """Append to a log; stores without append are rewritten atomically instead."""
        data = (line.rstrip("\n") + "\n").encode("utf-8")
        try:
            with self.fs.open(self.path(rel), "ab") as fh:
                fh.write(data)
        except (NotImplementedError, ValueError):
            old = self.read_bytes(rel) if self.exists(rel) else b""
            self.write_bytes(rel, old + data)

    # -- structured files -----------------------------------------------------------

    def write_spec(self, spec: dict) -> None:
        self.write_text("spec.yaml", yaml.safe_dump(spec, sort_keys=False))

    def read_spec(self) -> dict:
        return yaml.safe_load(self.read_bytes("spec.yaml").decode("utf-8"))

    def write_json(self, rel: str, data: dict) -> None:
        self.write_text(rel, json.dumps(data, indent=2) + "\n")

    def read_json(self, rel: str) -> dict:
        return json.loads(self.read_bytes(rel).decode("utf-8"))

    def log(self, record: dict) -> None:
        self.append_line("metrics.jsonl", json.dumps(record))

    def read_log(self) -> list[dict]:
        if not self.exists("metrics.jsonl"):
            return []
        return [json.loads(line) for line in self.read_bytes("metrics.jsonl").decode().splitlines() if line]

    # -- checkpoints ----------------------------------------------------------------

    def save_checkpoint(self, payload: dict[str, Any], rel: str = LAST_CHECKPOINT) -> None:
        buffer = io.BytesIO()
        torch.save({"format": CHECKPOINT_FORMAT, **payload}, buffer)
        self.write_bytes(rel, buffer.getvalue())

    def load_checkpoint(self, rel: str = LAST_CHECKPOINT) -> dict[str, Any] | None:
        """The checkpoint, or None when the run has none yet. Only tensors and plain data load."""
        if not self.exists(rel):
            return None
        raw = self.read_bytes(rel)
        try:
            payload = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise GenframeError(f"{self.url}/{rel}: unreadable checkpoint ({type(exc).__name__}: "
                                f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
        if payload.get("format") != CHECKPOINT_FORMAT:
            raise GenframeError(f"{self.url}/{rel}: checkpoint format {payload.get('format')!r}, "
                                f"this genframe reads format {CHECKPOINT_FORMAT}")
        return payload
