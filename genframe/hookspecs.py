"""The whole plugin API of genframe: every hook a plugin may implement, declared once.

A plugin is a module (or object) with functions decorated by ``genframe.hookimpl`` whose names are
hook names below. Built-in plugins and third-party packages are found through the ``genframe``
entry-point group. Observer hooks receive plain data so that loggers need no knowledge of models.
"""

from __future__ import annotations

from typing import Any

import pluggy

PROJECT = "genframe"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def genframe_components() -> list[type]:
    """Return component classes (decorated with ``@genframe.component(role, name)``) to register.

    Example::

        @hookimpl
        def genframe_components():
            return [Hinge]
    """


@hookspec
def genframe_run_started(run: Any) -> None:
    """A run begins (or resumes). ``run`` has ``spec``, ``storage``, ``device`` and ``resumed``."""


@hookspec
def genframe_stage_started(run: Any, stage: str, index: int, total_steps: int, start_step: int) -> None:
    """A stage begins at ``start_step`` (non-zero when resuming) of ``total_steps``."""


@hookspec
def genframe_step_end(run: Any, stage: str, step: int, total_steps: int, losses: dict[str, float]) -> None:
    """Called at each logging interval with the mean losses since the previous one (host floats)."""


@hookspec
def genframe_evaluated(run: Any, stage: str, step: int, results: dict[str, float], images: dict[str, str]) -> None:
    """An evaluation finished: metric values and the run-relative paths of the images written."""


@hookspec
def genframe_stage_finished(run: Any, stage: str, index: int) -> None:
    """A stage completed all its steps."""


@hookspec
def genframe_run_finished(run: Any, status: str, error: str | None) -> None:
    """The run ended; ``status`` is ``completed``, ``failed`` or ``interrupted``."""
