"""The run folder, over fsspec: any URL (local path, ``memory://``, ``s3://``...) holds a run.

Layout::

    spec.yaml            the resolved spec (every default written out)
    run.json             data shape and provenance, so a run can be sampled without its data
    metrics.jsonl        one JSON object per logging interval / evaluation
    checkpoints/         <stage>-<step>.pt files (immutable) and index.json, the commit point
    images/<stage>/...   sample grids and previews as PNG

A checkpoint file is written first and never changed; only then is ``index.json`` (its size and
SHA-256) replaced. Readers trust the index alone, so a crash at any moment leaves either the old
or the new index, each naming complete files; that holds on stores without an atomic rename too,
since one object PUT is atomic. A file whose size or hash disagrees with the index (a truncated
copy, a flipped bit) is skipped with a warning and the previous checkpoint is used.
"""

from __future__ import annotations

import hashlib
import io
import json
import uuid
from typing import Any

import fsspec
import jsonschema
import torch
import yaml

from genframe.errors import GenframeError
from genframe.ops.safe_yaml import load_yaml
from genframe.ops import log

CHECKPOINT_FORMAT = 1
CHECKPOINT_INDEX = "checkpoints/index.json"
#: An exported model (``genframe export``): the sampler chain's weights, in safetensors (no pickle).
EXPORTED_WEIGHTS = "model.safetensors"
EXPORT_FORMAT = "genframe-export/1"

_COUNT = {"type": "integer", "minimum": 0}
_ENTRY = {"type": "object", "required": ["file", "stage", "step", "size", "sha256"],
          "properties": {"file": {"type": "string", "pattern": r"^checkpoints/[^/]+\.pt$"}, "stage": _COUNT,
                         "step": _COUNT, "size": _COUNT, "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"}}}
#: The shapes of the run folder's metadata: every reader checks what it reads against them.
INDEX_SCHEMA = {"type": "object", "required": ["checkpoints"],
                "properties": {"checkpoints": {"type": "array", "items": _ENTRY},
                               "best": {"anyOf": [{"type": "null"}, {**_ENTRY, "required": [*_ENTRY["required"],
                                                                                          "value"]}]}}}
RUN_SCHEMA = {"type": "object", "required": ["data_shape"], "properties": {"data_shape": {
    "type": "object", "required": ["num_examples", "channels", "image_size"],
    "properties": {"num_examples": {"type": "integer", "minimum": 1}, "channels": {"type": "integer", "minimum": 1},
                   "image_size": {"type": "integer", "minimum": 1},
                   "num_classes": {"type": ["integer", "null"], "minimum": 1},
                   "class_names": {"type": ["array", "null"], "items": {"type": "string"}}}}}}


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
        if storage._holds_files():
            raise GenframeError(f"{url}: the folder holds files and is not a genframe run; a run writes only into "
                                "a new or empty folder: choose another --out")
        try:
            storage.fs.makedirs(storage.root, exist_ok=True)
            storage.write_bytes(".write-test", b"")
            storage.fs.rm(storage.path(".write-test"))
        except (OSError, PermissionError) as exc:
            raise GenframeError(f"{url}: cannot write the run folder: {exc.strerror or exc}") from None
        return storage

    @classmethod
    def open(cls, url: str) -> "RunStorage":
        """An existing run folder: its spec and its run.json (written together when a run starts)."""
        storage = cls(url)
        if not storage.exists("spec.yaml"):
            raise GenframeError(f"{url}: not a run folder (no spec.yaml found)")
        if not storage.exists("run.json"):
            raise GenframeError(f"{url}: not a complete run folder (no run.json: the run stopped before it began "
                                "training); start it again with another --out")
        storage.data_shape()  # the run's metadata has the shape every reader relies on
        return storage

    def _holds_files(self) -> bool:
        try:
            if not self.fs.exists(self.root):
                return False
            if not self.fs.isdir(self.root):
                return True
            return bool(self.fs.ls(self.root, detail=False))
        except OSError:
            return False

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
        target = self.path(rel)
        try:
            if not self.fs.exists(target):
                self.fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
            with self.fs.open(target, "ab") as fh:
                fh.write(data)
        except (NotImplementedError, ValueError):  # how fsspec stores without an append mode (S3...) refuse "ab"
            old = self.read_bytes(rel) if self.exists(rel) else b""
            self.write_bytes(rel, old + data)

    # -- structured files -----------------------------------------------------------

    def write_spec(self, spec: dict) -> None:
        self.write_text("spec.yaml", yaml.safe_dump(spec, sort_keys=False))

    def read_spec(self) -> dict:
        source = f"{self.url}/spec.yaml"
        spec = load_yaml(self._read_text("spec.yaml"), source)
        if not isinstance(spec, dict):
            raise GenframeError(f"{source}: a spec is a mapping of fields, found {type(spec).__name__}")
        return spec

    def _read_text(self, rel: str) -> str:
        try:
            return self.read_bytes(rel).decode("utf-8")
        except FileNotFoundError:
            raise GenframeError(f"{self.url}/{rel}: missing from the run folder") from None
        except UnicodeDecodeError:
            raise GenframeError(f"{self.url}/{rel}: damaged run metadata: not UTF-8 text") from None
        except OSError as exc:
            raise GenframeError(f"{self.url}/{rel}: cannot read: {exc.strerror or exc}") from None

    def write_json(self, rel: str, data: dict) -> None:
        self.write_text(rel, json.dumps(data, indent=2) + "\n")

    def read_json(self, rel: str, schema: dict | None = None) -> dict:
        """A JSON file of the run folder, checked against ``schema`` (the shape its readers rely on)."""
        try:
            data = json.loads(self._read_text(rel))
        except ValueError as exc:
            raise GenframeError(f"{self.url}/{rel}: damaged run metadata: not JSON ({exc})") from None
        error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema or {"type": "object"})
                                                 .iter_errors(data))
        if error is not None:
            where = ".".join(str(p) for p in error.absolute_path) or "(top level)"
            raise GenframeError(f"{self.url}/{rel}: damaged run metadata: {where}: {error.message}")
        return data

    def data_shape(self) -> dict:
        """What run.json records of the data (so that a run can be sampled without its data)."""
        return self.read_json("run.json", RUN_SCHEMA)["data_shape"]

    def log(self, record: dict) -> None:
        self.append_line("metrics.jsonl", json.dumps(record))

    def read_log(self) -> list[dict]:
        """The records of metrics.jsonl; a line that is not a JSON object (a write cut short by a crash,
        a damaged file) is skipped with a warning, since the log is a record, not state."""
        if not self.exists("metrics.jsonl"):
            return []
        records, skipped = [], []
        for number, line in enumerate(self.read_bytes("metrics.jsonl").decode("utf-8", "replace").splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if isinstance(record, dict) and isinstance(record.get("stage"), str) and isinstance(record.get("step"), int):
                records.append(record)
            else:
                skipped.append(number)
        if skipped:
            log.warning(f"{self.url}/metrics.jsonl: skipped damaged line(s) "
                        f"{', '.join(map(str, skipped[:5]))}{' ...' if len(skipped) > 5 else ''}")
        return records

    # -- checkpoints ----------------------------------------------------------------

    def _read_index(self) -> dict:
        if not self.exists(CHECKPOINT_INDEX):
            return {"format": CHECKPOINT_FORMAT, "checkpoints": [], "best": None}
        return self.read_json(CHECKPOINT_INDEX, INDEX_SCHEMA)

    def best_value(self) -> float | None:
        """The metric value of the best checkpoint so far, if one is marked."""
        best = self._read_index().get("best")
        return None if not best else best["value"]

    def checkpoints(self) -> list[dict]:
        """Index entries, oldest first: file, stage, step, size, sha256."""
        return list(self._read_index()["checkpoints"])

    def save_checkpoint(self, payload: dict[str, Any], *, keep: int = 3, best: dict | None = None) -> str:
        """Write a checkpoint of (``payload['stage']``, ``payload['step']``), then commit it in the index.

        Keeps the ``keep`` newest, and every stage's last one (saved as step 0 of the next stage),
        which marks a stage boundary that ``--reuse`` starts from: one file per stage. ``best``
        (``{"metric": name, "value": v}``) marks this one as the best so far, which is kept as well
        whatever its age.
        """
        buffer = io.BytesIO()
        torch.save({"format": CHECKPOINT_FORMAT, **payload}, buffer)
        data = buffer.getvalue()
        rel = f"checkpoints/{payload['stage']:02d}-{payload['step']:09d}.pt"
        self.write_bytes(rel, data)
        entry = {"file": rel, "stage": payload["stage"], "step": payload["step"], "size": len(data),
                 "sha256": hashlib.sha256(data).hexdigest()}
        index = self._read_index()
        entries = [e for e in index["checkpoints"] if e["file"] != rel] + [entry]
        if best is not None:
            index["best"] = {**entry, **best}
        protected = {e["file"] for e in entries if e["step"] == 0}  # stage boundaries
        protected |= {index["best"]["file"]} if index.get("best") else set()
        kept = entries[-max(1, keep):]
        kept = [e for e in entries if e in kept or e["file"] in protected]
        index["checkpoints"] = kept
        self.write_json(CHECKPOINT_INDEX, index)
        for stale in entries:
            if stale not in kept:
                try:
                    self.fs.rm(self.path(stale["file"]))
                except OSError:  # already gone: the index no longer names it, which is what matters
                    pass
        return rel

    def load_checkpoint(self, which: str = "last") -> dict[str, Any] | None:
        """The newest intact checkpoint (or the ``best`` one), None when the run has none yet.

        Only tensors and plain data load (``weights_only``): a checkpoint cannot run code.
        """
        index = self._read_index()
        if which == "best":
            if not index.get("best"):
                raise GenframeError(f"{self.url}: no best checkpoint recorded (set best_checkpoint in the spec)")
            candidates = [index["best"]]
        else:
            candidates = list(reversed(index["checkpoints"]))
        for entry in candidates:
            payload, problem = self.verified_checkpoint(entry)
            if payload is not None:
                return payload
            fallback = "an older one" if entry is not candidates[-1] else "none is left"
            log.warning(f"{self.url}/{entry['file']}: {problem}; using {fallback}")
        if candidates:
            raise GenframeError(f"{self.url}: every checkpoint is damaged; the run cannot be resumed")
        return None

    def load_exported(self) -> dict[str, Any] | None:
        """The weights of an exported folder in a checkpoint's shape (``{"components": {name: state}}``),
        or None when the folder holds none. safetensors files hold tensors only: nothing in them runs."""
        if not self.exists(EXPORTED_WEIGHTS):
            return None
        from safetensors.torch import load as safetensors_load

        try:
            flat = safetensors_load(self.read_bytes(EXPORTED_WEIGHTS))
        except Exception as exc:  # damaged or not a safetensors file
            raise GenframeError(f"{self.url}/{EXPORTED_WEIGHTS}: not a readable safetensors file "
                                f"({type(exc).__name__})") from None
        components: dict[str, dict[str, torch.Tensor]] = {}
        for key, value in flat.items():
            name, _, rest = key.partition(".")
            components.setdefault(name, {})[rest] = value
        return {"components": components}

    def verified_checkpoint(self, entry: dict) -> tuple[dict | None, str]:
        """(payload, '') of an index entry whose file is intact, else (None, what is wrong with it)."""
        try:
            data = self.read_bytes(entry["file"])
        except (OSError, FileNotFoundError):
            return None, "missing"
        if len(data) != entry["size"] or hashlib.sha256(data).hexdigest() != entry["sha256"]:
            return None, f"damaged ({len(data)} bytes, expected {entry['size']}, or a different SHA-256)"
        try:
            payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as exc:
            return None, f"unreadable ({type(exc).__name__})"
        if not isinstance(payload, dict) or not isinstance(payload.get("components", {}), dict) \
                or not isinstance(payload.get("stage"), int) or not isinstance(payload.get("step"), int):
            return None, "not a genframe checkpoint (its contents have another shape)"
        if payload.get("format") != CHECKPOINT_FORMAT:
            return None, f"format {payload.get('format')!r}, this genframe reads format {CHECKPOINT_FORMAT}"
        return payload, ""
