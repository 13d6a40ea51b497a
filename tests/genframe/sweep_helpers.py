"""What the sweep and table tests share: one-stage tiny specs, a cheap metric, a plugin that counts runs."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import yaml

from genframe import Metric, component, hookimpl
from genframe.components.registry import create_registry

from ..conftest import TINY


@component("metric", "brightness_test")
class Brightness(Metric):
    """Mean pixel of samples drawn with fixed noise (test only): a deterministic function of the weights."""

    n: int = 8

    def compute(self, sample, real_images, device):
        generator = torch.Generator(device=device).manual_seed(0)
        return {"brightness": float(sample(self.n, generator).mean())}


class Counter:
    """Counts the runs started, and makes the runs whose folder ends with one of ``fail`` raise."""

    def __init__(self, fail: tuple[str, ...] = ()):
        self.started: list[str] = []
        self.fail = fail

    @hookimpl
    def genframe_components(self):
        return [Brightness]

    @hookimpl
    def genframe_run_started(self, run):
        self.started.append(run.url)
        if run.url.endswith(self.fail):
            raise RuntimeError("simulated failure\nsecond line that the record must not keep")


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
    return sweep, out, counter, registry, run_sweep(sweep, out, registry=registry)
