"""Shared fixtures: the repository layout, real MNIST data when present, and tiny specs."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, settings

REPO = Path(__file__).resolve().parent.parent
SPECS = REPO / "specs"

# Property tests: CI runs a derandomised profile sized to its time budget; `--hypothesis-profile=fuzz`
# searches far longer with fresh random cases (see docs/user-guide.md, "Bad input").
_PROFILE = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("ci", max_examples=60, derandomize=True, print_blob=True, **_PROFILE)
settings.register_profile("fuzz", max_examples=1500, print_blob=True, **_PROFILE)
settings.load_profile("ci")


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("cuda") and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")


def data_root() -> Path:
    """``$GENFRAME_DATA`` or the shared data sets next to the repository."""
    env = os.environ.get("GENFRAME_DATA")
    return Path(env) if env else REPO.parent / "shared" / "datasets"


@pytest.fixture
def mnist_root() -> Path:
    root = data_root() / "mnist"
    if not any(root.glob("*idx3-ubyte*")):
        pytest.skip(f"MNIST IDX files not found under {root} (set GENFRAME_DATA)")
    return root


def load_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


TINY = {
    "name": "tiny",
    "seed": 0,
    "device": "cpu",
    "data": {"type": "digits", "image_size": 8, "limit": 64},
    "components": {
        "codes": {"type": "latent_codes", "dim": 4, "init": "random"},
        "generator": {"type": "dcgan_generator", "latent_dim": 4, "width": 8},
        "noise": {"type": "gaussian", "dim": 3},
        "mapper": {"type": "mlp_mapper", "in_dim": 3, "out_dim": 4, "hidden": [8]},
    },
    "stages": [
        {"name": "glo", "trainer": {"type": "autoencoding", "encoder": "codes", "generator": "generator",
                                    "epochs": 3, "batch_size": 16}},
        {"name": "mapper", "trainer": {"type": "imle", "model": "mapper", "prior": "noise", "targets": "codes",
                                       "epochs": 2, "batch_size": 16}},
    ],
    "sampler": ["noise", "mapper", "generator"],
    "evaluation": {"n_samples": 4},
    "log_every": 2,
    "checkpoint_every": 4,
}


@pytest.fixture
def tiny_spec() -> dict:
    """A two-stage GLANN on 64 digits at 8 px: a few dozen steps, well under a second per stage."""
    return copy.deepcopy(TINY)


@pytest.fixture
def write_spec(tmp_path):
    def write(spec: dict, name: str = "spec.yaml") -> str:
        path = tmp_path / name
        path.write_text("# yaml-language-server: $schema=../schemas/spec.schema.json\n" + yaml.safe_dump(spec))
        return str(path)
    return write


class SimulatedCrash(BaseException):
    """Raised by an observer to stop a run at a chosen step, as a crash would: a BaseException, like
    the interrupt of a killed process, since an observer's ordinary exceptions are isolated and end
    nothing."""


def checkpoint_weights(run_url: str) -> dict:
    """Every component tensor of a run's newest checkpoint, keyed ``<component>.<parameter>``."""
    from genframe.storage import RunStorage

    checkpoint = RunStorage.open(run_url).load_checkpoint()
    return {f"{c}.{k}": v for c, state in checkpoint["components"].items() for k, v in state.items()}


def crash_and_resume(spec_path: str, stage: str, step: int, out) -> tuple[str, str]:
    """Train ``spec_path`` uninterrupted, and again crashing at (``stage``, ``step``) then resuming.

    Returns the two run folders (reference, resumed) and asserts that their final weights are
    bit-identical; callers add checks of their own (logs, component state).
    """
    import torch

    from genframe import hookimpl
    from genframe.api import load_system, train
    from genframe.training.engine import run
    from genframe.components.registry import create_registry

    class Crasher:
        @hookimpl
        def genframe_step_end(self, run, stage, step, total_steps, losses):
            if (stage, step) == (crash_stage, crash_step):
                raise SimulatedCrash(f"simulated crash at {stage} {step}")

    crash_stage, crash_step = stage, step
    reference = train(spec_path, out=str(out / "reference")).url
    crashing = create_registry([Crasher()])
    with pytest.raises(SimulatedCrash):
        run(load_system(spec_path, registry=crashing), out=str(out / "interrupted"), registry=crashing)
    resumed = train(resume=str(out / "interrupted")).url
    expected, got = checkpoint_weights(reference), checkpoint_weights(resumed)
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected), "resumed run differs from uninterrupted run"
    return reference, resumed
