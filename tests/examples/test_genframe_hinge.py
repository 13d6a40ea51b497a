"""The example third-party package: pip-installed, found through the entry point, used by a spec."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import yaml

from genframe.api import load_system
from genframe.engine import run
from genframe.registry import create_registry
from genframe.storage import RunStorage

from ..conftest import REPO, SPECS


@pytest.fixture(scope="module")
def installed_hinge(tmp_path_factory):
    site = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(REPO / "examples" / "genframe-hinge")], check=True)
    return site


def test_installed_package_registers_hinge(installed_hinge, monkeypatch):
    monkeypatch.syspath_prepend(str(installed_hinge))
    registry = create_registry()
    info = registry.components["divergence"]["hinge"]
    assert (info.distribution, info.version) == ("genframe-hinge", "0.1.0")
    hinge = info.cls(margin=1.0)
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.25])
    # critic: mean(relu(1 - real)) + mean(relu(1 + fake)) = (0 + 0.5)/2 + (0 + 1.25)/2
    assert hinge.critic_loss(real, fake).item() == pytest.approx(0.875)
    assert hinge.generator_loss(fake).item() == pytest.approx(0.875)


def test_wgan_gp_spec_runs_with_hinge_by_one_override(installed_hinge, monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(installed_hinge))
    registry = create_registry()
    spec = yaml.safe_load((SPECS / "wgan_gp.yaml").read_text())
    path = tmp_path / "wgan.yaml"
    path.write_text(yaml.safe_dump(spec))
    overrides = ["stages.0.trainer.divergence.type=hinge", "data={type: digits, image_size: 16, limit: 64}",
                 "device=cpu", "stages.0.trainer.steps=3", "stages.0.trainer.batch_size=8",
                 "components.generator.width=8", "components.critic.width=8", "log_every=1"]
    system = load_system(str(path), overrides, registry)
    assert system.stages[0].trainer.divergence.type_name == "hinge"
    finished = run(system, out=str(tmp_path / "run"), registry=registry)
    log = RunStorage.open(finished.url).read_log()
    assert [r["step"] for r in log] == [1, 2, 3]
    assert all(r["critic"] >= 0 for r in log)  # a hinge critic loss is never negative
