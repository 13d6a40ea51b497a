"""What the sweep and table tests share: one-stage tiny specs, a cheap metric, a plugin that counts runs."""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path
from unittest import mock

import torch
import yaml

from genframe import Metric, component, hookimpl
from genframe.components.registry import create_registry

from ..conftest import TINY


@component("metric", "brightness_test")
class Brightness(Metric):
    """Mean pixel of samples drawn with fixed noise (test only): a deterministic function of the weights."""

    n: int = 8
    offset: float = 0.0  # added to the reading: a setting made as bad as a test needs

    def compute(self, sample, real_images, device):
        generator = torch.Generator(device=device).manual_seed(0)
        return {"brightness": float(sample(self.n, generator).mean()) + self.offset}


class Counter:
    """Counts the runs started; the runs whose folder ends with one of ``fail`` fail in training
    (see :func:`failing`: an observer's own exception would be isolated, not end the run)."""

    def __init__(self, fail: tuple[str, ...] = ()):
        self.started: list[str] = []
        self.fail = fail

    @hookimpl
    def genframe_components(self):
        return [Brightness]

    @hookimpl
    def genframe_run_started(self, run):
        self.started.append(run.url)


@contextlib.contextmanager
def failing(counter: Counter):
    """Within the block, the stages of runs in ``counter.fail``'s folders raise as a broken trainer would."""
    from genframe.training import engine

    original = engine._run_stage

    def run_stage(the_run, *args, **kwargs):
        if counter.fail and the_run.url.endswith(counter.fail):
            raise RuntimeError("simulated failure\nsecond line that the record must not keep")
        return original(the_run, *args, **kwargs)

    with mock.patch.object(engine, "_run_stage", run_stage):
        yield


def registry_with(counter: Counter):
    return create_registry([counter])


def tiny_one_stage(**generator) -> dict:
    """The GLO stage of the conftest's tiny GLANN, sampled from a Gaussian: two steps, well under a second."""
    spec = copy.deepcopy(TINY)
    spec["data"]["limit"] = 32
    del spec["components"]["mapper"]
    spec["components"]["noise"]["dim"] = 4
    spec["components"]["generator"].update(generator)
    spec["stages"] = spec["stages"][:1]
    spec["stages"][0]["trainer"]["epochs"] = 1
    spec["sampler"] = ["noise", "generator"]
    spec["evaluation"] = {"n_samples": 4, "metrics": [{"type": "brightness_test", "n": 8}]}
    return spec


def write_sweep(folder: Path, text: str, name: str = "sweep.yaml") -> str:
    """Two base specs (a, b) next to the sweep file, as the sweep refers to them."""
    (folder / "specs").mkdir(exist_ok=True)
    (folder / "specs" / "a.yaml").write_text(yaml.safe_dump(tiny_one_stage()))
    (folder / "specs" / "b.yaml").write_text(yaml.safe_dump(tiny_one_stage(width=4)))
    (folder / "sweeps").mkdir(exist_ok=True)
    path = folder / "sweeps" / name
    path.write_text(text)
    return str(path)


SEARCH = """
search:
  stages.0.trainer.optimizer.lr: {log_uniform: [1.0e-3, 1.0e-1]}
  stages.0.trainer.optimizer.betas.0: {uniform: [0.0, 0.9]}
"""


def run_test_sweep(folder: Path, text: str, failing_trial: str):
    """Write and run a sweep whose ``failing_trial`` fails: (sweep, out folder, counter, registry, result)."""
    from genframe.sweep.plan import load_sweep
    from genframe.sweep.run import run_sweep

    counter = Counter(fail=(failing_trial,))
    registry = registry_with(counter)
    sweep = load_sweep(write_sweep(folder, text), registry=registry)
    out = str(folder / "out")
    with failing(counter):
        return sweep, out, counter, registry, run_sweep(sweep, out, registry=registry)
