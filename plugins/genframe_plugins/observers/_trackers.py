"""What the experiment-tracker observers share: when they are on, the spec as parameters, the tracked run's id.

A tracker is opt-in, never on just because its package is installed: the spec lists it
(``trackers: [mlflow]``) or its own standard environment variable is set (``MLFLOW_TRACKING_URI``,
``WANDB_PROJECT``). The tracker's run id is kept in the run folder (``trackers.json``), so that
``genframe run --resume`` continues the same tracked run.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

from genframe import RunInfo, require

IDS = "trackers.json"


def enabled(run: RunInfo, name: str, environment: tuple[str, ...]) -> bool:
    return name in (run.spec.get("trackers") or ()) or any(os.environ.get(v) for v in environment)


def needed(name: str):
    """The tracker's package (its extra has its name), or one line saying which extra installs it."""
    return require(name, name, f"the {name} tracker")


def flat(spec: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """The spec as dotted parameters (``stages.0.trainer.optimizer.lr``), values as text."""
    out: dict[str, str] = {}
    items = spec.items() if isinstance(spec, Mapping) else enumerate(spec)
    for key, value in items:
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) or (isinstance(value, list) and any(isinstance(v, (Mapping, list))
                                                                           for v in value)):
            out.update(flat(value, f"{path}."))
        else:
            out[path] = json.dumps(value) if isinstance(value, (list, bool)) or value is None else str(value)
    return out


def remembered(run: RunInfo, name: str) -> str | None:
    """The id of the tracked run this run folder logged to before, if any."""
    try:
        return json.loads(run.read_bytes(IDS)).get(name)
    except (OSError, FileNotFoundError, ValueError):
        return None


def remember(run: RunInfo, name: str, run_id: str) -> None:
    try:
        ids = json.loads(run.read_bytes(IDS))
    except (OSError, FileNotFoundError, ValueError):
        ids = {}
    run.write_bytes(IDS, json.dumps({**ids, name: run_id}, indent=1).encode())


def last_protocol(run: RunInfo, stage: str, step: int) -> dict:
    """The protocol of the evaluation the engine just logged (observers receive the numbers only)."""
    for record in reversed(run.read_log()):
        if record.get("event") == "evaluation" and record["stage"] == stage and record["step"] == step:
            return record.get("protocol", {})
    return {}
