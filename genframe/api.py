"""The Python API behind the CLI: load a spec, train it, sample a finished run."""

from __future__ import annotations

from typing import Iterable

import torch

from genframe.build.system import System, build
from genframe.build.sampler import class_index, sample_images
from genframe.trained.loading import load_trained
from genframe.training.engine import Run, run
from genframe.components.registry import Registry, get_registry
from genframe.spec.load import load_spec
from genframe.storage import RunStorage


def load_system(spec_url: str, overrides: Iterable[str] = (), registry: Registry | None = None) -> System:
    """Read, override, validate and build a spec (no data is touched)."""
    registry = registry or get_registry()
    return build(load_spec(spec_url, overrides, registry), spec_url, registry)


def train(spec_url: str | None = None, *, overrides: Iterable[str] = (), out: str | None = None,
          device: str | None = None, resume: str | None = None, reuse: str | None = None,
          registry: Registry | None = None) -> Run:
    """Run a spec into a new run folder, or continue the run at ``resume`` (its own spec by default).

    ``reuse`` starts the new run from the finished leading stages it shares with that run (e.g. a
    GLANN mapper ablation on one trained GLO stage) instead of training them again.
    """
    registry = registry or get_registry()
    if spec_url is None:
        if resume is None:
            raise ValueError("give a spec, a run to resume, or both")
        spec_url = f"{resume.rstrip('/')}/spec.yaml"
        RunStorage.open(resume)  # clear error when the run folder does not exist
    system = load_system(spec_url, overrides, registry)
    return run(system, out=out, device=device, resume=resume, reuse=reuse, registry=registry)


def sample(run_url: str, n: int, *, seed: int = 0, label: int | str | None = None, device: str | None = None,
           checkpoint: str = "last", registry: Registry | None = None) -> tuple[torch.Tensor, str]:
    """(uint8 images (n, C, H, W), spec name) drawn from a run's sampler chain (``last`` or ``best`` weights).

    ``label`` (class-conditional runs) is a class number or one of the class names the run recorded.
    """
    system, dev = load_trained(run_url, device=device, registry=registry, checkpoint=checkpoint)
    if label is not None:
        names = RunStorage.open(run_url).data_shape().get("class_names")
        label = class_index(label, names)
    return sample_images(system, dev, n, seed, label), system.name
