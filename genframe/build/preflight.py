"""Preflight: everything a run will need from outside, fetched or checked in its first seconds.

A run that cannot finish should say so before it trains, not after: Inception weights that cannot
be downloaded used to surface at the final evaluation, after the whole training run. Every
component of a system (the data, the named components, each stage's trainer with what it holds,
the metrics with their feature extractors, the evaluation data) gets ``preflight()`` once, before
the run folder is created; ``genframe run`` (every process under ``torchrun``, the main one first),
``genframe sweep`` (once for all trials) and ``genframe validate --preflight`` call it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

from genframe.build.system import System, walk
from genframe.components.roles import Component
from genframe.errors import GenframeError
from genframe.storage import RunStorage


def components_of(system: System) -> Iterator[tuple[Component, str]]:
    """Every component of ``system``, nested ones included, with its spec path."""
    yield from walk(system.data, "data")
    if system.evaluation.data is not None:
        yield from walk(system.evaluation.data, "evaluation.data")
    for name, comp in system.components.items():
        yield from walk(comp, f"components.{name}")
    for stage in system.stages:
        yield from walk(stage.trainer, f"stages[{stage.index}].trainer")
    for i, metric in enumerate(system.evaluation.metrics):
        yield from walk(metric, f"evaluation.metrics[{i}]")


def preflight(system: System) -> None:
    """Call ``preflight()`` of every component once per distinct configuration; the first failure is
    one line naming the spec file and the component's path."""
    seen: set[tuple[str, str]] = set()
    for comp, path in components_of(system):
        key = (comp.role, json.dumps(comp.config(), sort_keys=True, default=str))
        if key in seen:
            continue
        seen.add(key)
        try:
            comp.preflight()
        except GenframeError as exc:
            raise GenframeError(f"{system.source}: {path}: {exc}") from None


def check_writable(url: str) -> None:
    """Write and remove a probe file under ``url``: a run folder there could be written."""
    storage = RunStorage(url)
    probe = f".genframe-probe-{uuid.uuid4().hex}"
    try:
        existed = storage.fs.exists(storage.root)
        storage.write_text(probe, "")
        storage.fs.rm(storage.path(probe))
        if not existed:
            storage.fs.rm(storage.root, recursive=True)
    except (OSError, ValueError, ImportError) as exc:
        raise GenframeError(f"--out {url}: cannot write there ({type(exc).__name__}: {exc})") from None
