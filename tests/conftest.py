"""Shared fixtures: the repository layout, real MNIST data when present, and tiny specs."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
SPECS = REPO / "specs"


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
