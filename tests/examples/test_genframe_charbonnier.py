"""The example third-party package: pip-installed, found through the entry point, used by a spec."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from genframe.api import load_system
from genframe.training.engine import run
from genframe.components.registry import create_registry
from genframe.storage import RunStorage

from ..conftest import REPO, SPECS


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory):
    site = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(REPO / "examples" / "genframe-charbonnier")], check=True)
    return site


def test_installed_package_registers_charbonnier(installed_plugin, monkeypatch):
    monkeypatch.syspath_prepend(str(installed_plugin))
    registry = create_registry()
    assert not registry.problems
    info = registry.components["reconstruction_loss"]["charbonnier"]
    assert (info.distribution, info.version) == ("genframe-charbonnier", "0.1.0")
    loss = info.cls(eps=0.5)
    x, y = torch.zeros(2, 1, 1, 2), torch.tensor([[[[0.0, 1.2]]], [[[0.5, 0.0]]]])
    # per image: sum over pixels of sqrt(err^2 + 0.25), then the batch mean
    expected = ((math.sqrt(0.25) + math.sqrt(1.44 + 0.25)) + (math.sqrt(0.5) + math.sqrt(0.25))) / 2
    assert loss(x, y).item() == pytest.approx(expected)


def test_quickstart_runs_with_the_plugin_by_one_override(installed_plugin, monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(installed_plugin))
    registry = create_registry()
    overrides = ["stages.0.trainer.loss={type: charbonnier}", "data.limit=128", "device=cpu",
                 "stages.0.trainer.epochs=2", "stages.1.trainer.epochs=1", "log_every=1"]
    system = load_system(str(SPECS / "quickstart.yaml"), overrides, registry)
    assert system.stages[0].trainer.loss.type_name == "charbonnier"
    finished = run(system, out=str(tmp_path / "run"), registry=registry)
    glo = [r["loss"] for r in RunStorage.open(finished.url).read_log() if r["stage"] == "glo"]
    assert len(glo) == 4
    # Charbonnier >= L1 >= 0, and a 16x16 image has 256 pixels each contributing at least eps
    assert all(value >= 256 * 1e-3 for value in glo)
