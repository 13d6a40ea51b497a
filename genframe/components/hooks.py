"""Every hook a plugin may implement, declared once, and ``RunInfo``, what observer hooks receive.

A plugin is a module (or object) with functions decorated by ``genframe.hookimpl`` whose names are
hook names below. Built-in plugins and third-party packages are found through the ``genframe``
entry-point group. Observer hooks receive plain values so that loggers need no knowledge of models
or of the engine.
"""

from __future__ import annotations

import copy
import types
from typing import Any, Mapping

import attrs
import pluggy

from genframe.storage import RunStorage

PROJECT = "genframe"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


def _read_only(spec: Mapping[str, Any]) -> Mapping[str, Any]:
    return types.MappingProxyType(copy.deepcopy(dict(spec)))


@attrs.frozen
class RunInfo:
    """What observer hooks receive about a run: plain values, never the engine's live objects.

    The run folder is reached through its URL (``read_log``, ``read_bytes``, ``write_bytes``), as
    any process could, so an observer keeps working however the engine changes.
    """

    name: str
    url: str  # the run folder (a local path or any fsspec URL)
    spec: Mapping[str, Any] = attrs.field(converter=_read_only)  # resolved spec, every default written out
    device: str  # e.g. "cpu", "cuda:0"
    resumed: bool  # this process continues an earlier run
    resume_point: tuple[int, int] | None = None  # (stage index, step) of the checkpoint resumed from
    world_size: int = 1  # processes training the run (torchrun); observers are called on rank 0 only
    rank: int = 0

    @property
    def log_every(self) -> int:
        """Steps between ``genframe_step_end`` calls."""
        return int(self.spec["log_every"])

    def local_folder(self) -> str | None:
        """The run folder on the local disk, or None when it lives on another file system."""
        storage = RunStorage(self.url)
        protocols = storage.fs.protocol if isinstance(storage.fs.protocol, tuple) else (storage.fs.protocol,)
        return str(storage.root) if {"file", "local"} & set(protocols) else None

    def read_log(self) -> list[dict]:
        """The records of ``metrics.jsonl`` so far."""
        return RunStorage(self.url).read_log()

    def read_bytes(self, rel: str) -> bytes:
        return RunStorage(self.url).read_bytes(rel)

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write a file into the run folder (atomically: readers never see half of it)."""
        RunStorage(self.url).write_bytes(rel, data)


@hookspec
def genframe_components() -> list[type]:
    """Return component classes (decorated with ``@genframe.component(role, name)``) to register.

    Example::

        @hookimpl
        def genframe_components():
            return [Hinge]
    """


@hookspec
def genframe_run_started(run: RunInfo) -> None:
    """A run begins (or resumes); ``run`` describes it (see :class:`RunInfo`)."""


@hookspec
def genframe_stage_started(run: RunInfo, stage: str, index: int, total_steps: int, start_step: int) -> None:
    """A stage begins at ``start_step`` (non-zero when resuming) of ``total_steps``."""


@hookspec
def genframe_step_end(run: RunInfo, stage: str, step: int, total_steps: int, losses: dict[str, float]) -> None:
    """Called at each logging interval with the mean losses since the previous one (host floats)."""


@hookspec
def genframe_evaluated(run: RunInfo, stage: str, step: int, results: dict[str, float], images: dict[str, str]) -> None:
    """An evaluation finished: metric values and the run-relative paths of the images written."""


@hookspec
def genframe_stage_finished(run: RunInfo, stage: str, index: int) -> None:
    """A stage completed all its steps."""


@hookspec
def genframe_run_finished(run: RunInfo, status: str, error: str | None) -> None:
    """The run ended; ``status`` is ``completed``, ``pruned`` (its ``prune`` rule ended it early, see
    ``genframe.training.engine.run``), ``failed`` or ``interrupted``."""
