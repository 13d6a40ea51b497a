"""Helpers shared by the timing benchmarks: genframe's own clock, modules built as the engine builds them.

genframe is timed from its run log (the wall clock at logging points, where the engine reads the
losses and so waits for the device), which leaves set-up and evaluation out; hand-written loops are
timed with ``time.perf_counter`` around a device synchronisation, so both clocks stop at the same
kind of point.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
import yaml
from genframe_plugins.data.datasets import MNIST, Digits

from genframe.api import train
from genframe.training.context import BuildContext
from genframe.spec.load import apply_overrides
from genframe.storage import RunStorage

REPO = Path(__file__).resolve().parent.parent


def shown(path: str) -> str:
    """``path`` relative to the repository when it lies inside, as results files record run folders."""
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return path


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def built(images: torch.Tensor, device: torch.device, *modules, seed: int = 0):
    """The modules sized for ``images`` (uint8, N x C x H x W) and moved to ``device``, as the engine prepares them."""
    ctx = BuildContext(num_examples=images.shape[0], channels=images.shape[1], image_size=images.shape[-1],
                       device=device, seed=seed, images=images)
    for module in modules:
        module.setup(ctx)
        module.to(device)
    return modules


def configured(cls, entry: dict):
    """A component built directly from a spec entry (``{"type": ..., field: value}``), for the hand-written side."""
    return cls(**{key: value for key, value in entry.items() if key != "type"})


def shipped_spec(name: str) -> dict:
    """A spec of ``specs/`` as a dict, so a benchmark runs the shipped settings rather than a copy of them."""
    return yaml.safe_load((REPO / "specs" / f"{name}.yaml").read_text())


def fast_overrides(spec: dict) -> list[str]:
    """``--set`` overrides that give ``spec`` genframe's fast settings: whole training steps replayed
    from a CUDA graph, and every Adam optimiser of its stages fused (one kernel, step count on the device)."""
    overrides = ["cuda_graphs=true"]
    for index, stage in enumerate(spec["stages"]):
        for key, value in stage["trainer"].items():
            if key.endswith("optimizer") and isinstance(value, dict) and value.get("type") == "adam":
                overrides.append(f"stages.{index}.trainer.{key}.fused=true")
    return overrides


def fast_settings(spec: dict) -> dict:
    """A copy of ``spec`` with :func:`fast_overrides` applied."""
    return apply_overrides(copy.deepcopy(spec), fast_overrides(spec), "fast settings")


def genframe_log(spec: dict, device: str) -> list[dict]:
    """Train ``spec`` in a scratch folder and return its logged steps (``step``, ``time`` in s since start)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "spec.yaml"
        path.write_text(yaml.safe_dump({**spec, "device": device}))
        finished = train(str(path), out=str(Path(tmp) / "run"))
        return [r for r in RunStorage.open(finished.url).read_log() if "event" not in r]


def stage_seconds(run_url: str) -> dict[str, float]:
    """Seconds each stage of a run took, from its log: from the previous stage's last logged step
    (or the run's start) to its own last one.

    A run started with ``--reuse`` holds the reused stages' records with their own run's clock; its
    first trained stage starts before they end on that clock, and is timed from the run's start.
    """
    firsts: dict[str, float] = {}
    ends: dict[str, float] = {}
    for record in RunStorage.open(run_url).read_log():
        if "event" not in record and "time" in record:
            firsts.setdefault(record["stage"], record["time"])
            ends[record["stage"]] = record["time"]
    seconds, previous = {}, 0.0
    for stage, end in ends.items():
        start = previous if previous <= firsts[stage] else 0.0
        seconds[stage], previous = round(end - start, 1), end
    return seconds


def log_intervals(log: list[dict], first_step: int) -> list[tuple[int, float]]:
    """(steps, seconds) between consecutive logging points from ``first_step`` on (the warm-up is before it)."""
    timed = [r for r in log if r["step"] >= first_step]
    return [(b["step"] - a["step"], b["time"] - a["time"]) for a, b in itertools.pairwise(timed)]


def timed_loop(device: torch.device, count: int, body) -> list[float]:
    """Seconds of each of ``count`` calls ``body(i)``, each measured between device synchronisations."""
    times = []
    for i in range(count):
        sync(device)
        start = time.perf_counter()
        body(i)
        sync(device)
        times.append(time.perf_counter() - start)
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


#: Where the shared data sets are (``--data-root``'s default): ``$GENFRAME_DATA``, else next to the repository.
DEFAULT_DATA_ROOT = os.environ.get("GENFRAME_DATA", "../shared/datasets")


def data_entry(kind: str, data_root: str, image_size: int, limit: int | None) -> dict:
    """The spec's ``data`` entry for MNIST (the IDX files under ``<data_root>/mnist``) or scikit-learn's digits.

    ``auto`` takes MNIST when its files are there and falls back to digits otherwise, saying so.
    """
    root = Path(data_root, "mnist").resolve()
    if kind == "auto":
        kind = "mnist" if any(root.glob("*idx3-ubyte*")) else "digits"
        if kind == "digits":
            print(f"MNIST not found under {root} (set --data-root or GENFRAME_DATA): using scikit-learn's digits")
    entry = {"type": kind, "image_size": image_size, **({"root": str(root)} if kind == "mnist" else {})}
    return {**entry, "limit": limit} if limit else entry


def load_images(entry: dict, device: torch.device) -> torch.Tensor:
    """The uint8 images a spec with this ``data`` entry trains on, on ``device``."""
    cls = MNIST if entry["type"] == "mnist" else Digits
    return configured(cls, entry).load()[0].to(device)


def environment(device: torch.device) -> dict:
    """What the figures were measured on."""
    return {"device": str(device), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "torch": torch.__version__, "platform": platform.platform(), "cpu_count": os.cpu_count(),
            "threads": torch.get_num_threads()}


def write_json(path: str, payload: dict) -> None:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {out}")
