"""Every worked example of the plugin guide runs: each block is loaded as a plugin module, as a
package's entry point would load it, and trained or measured for real, with its numbers checked."""

from __future__ import annotations

import csv
import io
import json
import math
import re
import sys
import types
from pathlib import Path

import pytest
import torch

import genframe
from genframe.api import sample, train
from genframe.components.registry import create_registry
from genframe.trained.evaluate import evaluate_run

from ..conftest import REPO

GUIDE = REPO / "docs" / "plugins.md"


def examples() -> dict[str, str]:
    found = re.findall(r"<!-- example: (\w+) -->\n```python\n(.*?)```", GUIDE.read_text(), flags=re.S)
    return dict(found)


def load(kind: str) -> types.ModuleType:
    """The example as an importable module (attrs resolves annotations through sys.modules)."""
    name = f"plugin_guide_{kind}"
    module = types.ModuleType(name)
    sys.modules[name] = module
    exec(compile(examples()[kind], f"{GUIDE}:{kind}", "exec"), module.__dict__)
    return module


def gan_spec(**trainer) -> dict:
    return {
        "name": "guide", "seed": 0, "device": "cpu",
        "data": {"type": "digits", "image_size": 8, "limit": 64},
        "components": {"prior": {"type": "gaussian", "dim": 8},
                       "generator": {"type": "dcgan_generator", "latent_dim": 8, "width": 8},
                       "critic": {"type": "dcgan_critic", "width": 8}},
        "stages": [{"name": "gan", "trainer": {"type": "adversarial", "n_critic": 2, "batch_size": 16, "steps": 3,
                                               **trainer}}],
        "sampler": ["prior", "generator"], "evaluation": {"n_samples": 4}, "log_every": 1,
    }


def run(spec: dict, tmp_path: Path, *plugins) -> tuple[str, list[dict]]:
    path = tmp_path / "spec.yaml"
    path.write_text(json.dumps(spec))
    finished = train(str(path), out=str(tmp_path / "run"), registry=create_registry(list(plugins)))
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    return finished.url, [r for r in records if "event" not in r]


def test_the_guide_has_one_example_of_each_kind():
    assert sorted(examples()) == ["constraint", "divergence", "metric", "network", "observer", "trainer"]


def test_examples_import_only_the_public_api():
    for kind, code in examples().items():
        for module in re.findall(r"^(?:from|import) (genframe\S*)", code, flags=re.M):
            assert module == "genframe", (kind, module)


def test_divergence_example_matches_the_formula_and_trains(tmp_path):
    rsgan = load("divergence").RSGAN()
    real, fake = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 3.0])
    # -log sigmoid(C(x_r) - C(x_f)) for the critic, -log sigmoid(C(x_f) - C(x_r)) for the generator, pairwise
    softplus = lambda x: math.log1p(math.exp(x))  # noqa: E731
    assert rsgan.critic_loss(real, fake).item() == pytest.approx((softplus(-0.5) + softplus(5.0)) / 2)
    assert rsgan.generator_loss(real, fake).item() == pytest.approx((softplus(0.5) + softplus(-5.0)) / 2)
    _, log = run(gan_spec(divergence={"type": "rsgan"}), tmp_path, load("divergence"))
    assert [r["step"] for r in log] == [1, 2, 3] and all(math.isfinite(r["generator"]) for r in log)


def test_constraint_example_adds_its_penalty(tmp_path):
    drift = load("constraint").Drift(weight=0.5)
    critic = lambda x: x.sum(dim=(1, 2, 3))  # noqa: E731
    real = torch.ones(2, 1, 2, 2)
    assert drift.penalty(critic, real, -real).item() == pytest.approx(0.5 * 16.0)
    _, log = run(gan_spec(constraints=[{"type": "drift", "weight": 1.0}]), tmp_path, load("constraint"))
    assert all(r["penalty"] > 0 for r in log)


def test_network_example_sizes_itself_from_the_data(tmp_path):
    spec = gan_spec()
    spec["components"]["generator"] = {"type": "mlp_generator", "latent_dim": 8, "hidden": 16}
    url, log = run(spec, tmp_path, load("network"))
    assert len(log) == 3
    images, _ = sample(url, 2, registry=create_registry([load("network")]))
    assert images.shape == (2, 1, 8, 8)


def test_trainer_example_lowers_the_mmd(tmp_path):
    spec = gan_spec()
    spec["stages"] = [{"name": "gmmn", "trainer": {"type": "gmmn", "batch_size": 32, "steps": 30,
                                                   "optimizer": {"type": "adam", "lr": 3e-3}}}]
    spec["log_every"] = 10
    _, log = run(spec, tmp_path, load("trainer"))
    assert [r["step"] for r in log] == [10, 20, 30]
    assert log[-1]["mmd"] < log[0]["mmd"]


def test_metric_example_matches_brute_force(tmp_path):
    spec = gan_spec()
    spec["evaluation"] = {"n_samples": 4, "metrics": [{"type": "nn_distance", "n": 16}]}
    url, _ = run(spec, tmp_path, load("metric"))
    record = evaluate_run(url, registry=create_registry([load("metric")]))
    assert record["nn_distance"] > 0
    metric = load("metric").NearestTrainingDistance(n=5)
    real = torch.randint(0, 256, (7, 1, 4, 4), dtype=torch.uint8)
    fakes = torch.rand(5, 1, 4, 4) * 2 - 1
    value = metric.compute(lambda n, generator: fakes, real, torch.device("cpu"))["nn_distance"]
    brute = torch.cdist(fakes.flatten(1), genframe.to_float(real).flatten(1)).min(dim=1).values.mean().item()
    assert value == pytest.approx(brute, rel=1e-5)


def test_observer_example_writes_the_logged_losses(tmp_path):
    _, log = run(gan_spec(), tmp_path, load("observer"))
    rows = list(csv.DictReader(io.StringIO((tmp_path / "run" / "losses.csv").read_text())))
    assert [int(r["step"]) for r in rows] == [r["step"] for r in log]
    assert [float(r["critic"]) for r in rows] == pytest.approx([r["critic"] for r in log])
