"""The adversarial specs train for real on the CPU (shrunk by overrides); divergences and constraints
swap by --set; EMA, BEGAN's k_t and spectral normalisation resume bit for bit; --label picks a class."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from genframe.api import load_system, sample, train
from genframe.cli import main
from genframe.build.sampler import Sampler
from genframe.trained.loading import load_trained
from genframe.ops.images import to_uint8
from genframe.storage import RunStorage

from ..conftest import SPECS, checkpoint_weights, crash_and_resume

#: 64 of scikit-learn's digits at 8 px (with their labels), two generator updates, a log line per step.
SHRINK = ["data={type: digits, image_size: 8, limit: 64}", "stages.0.trainer.steps=2",
          "stages.0.trainer.batch_size=16", "stages.0.trainer.n_critic=1", "evaluation={n_samples: 4}",
          "log_every=1"]
NARROW = ["components.generator.width=4", "components.critic.width=4"]
SPEC_OVERRIDES = {
    "dcgan": NARROW, "nsgan": NARROW, "lsgan": NARROW, "wgan": NARROW, "sngan": NARROW, "hinge": NARROW,
    "crgan": [*NARROW, "stages.0.trainer.constraints.1.shift=2"], "cgan": NARROW,
    "r1": ["components.generator.generator.width=4", "components.critic.width=4"],
    "began": ["components.generator.width=4", "components.critic.width=4", "components.critic.latent_dim=8",
              "components.generator.latent_dim=8", "components.prior.dim=8"],
}


def _log(run_url: str) -> list[dict]:
    return [r for r in RunStorage.open(run_url).read_log() if "event" not in r]


@pytest.mark.parametrize("name", sorted(SPEC_OVERRIDES))
def test_spec_trains_shrunk(name, tmp_path):
    finished = train(str(SPECS / f"{name}.yaml"), out=str(tmp_path / "run"), device="cpu",
                     overrides=[*SHRINK, *SPEC_OVERRIDES[name]])
    log = _log(finished.url)
    assert [r["step"] for r in log] == [1, 2]
    for record in log:
        assert all(math.isfinite(record[k]) for k in ("critic", "generator", "penalty"))
    if name == "began":
        assert all(0.0 <= r["k"] <= 1.0 and r["convergence"] > 0 for r in log)
    assert (tmp_path / "run" / "images" / "gan" / "samples-0000002.png").exists()
    images, _ = sample(finished.url, 3, seed=0)
    assert images.shape == (3, 1, 8, 8)


def test_every_spec_is_documented_and_starts_with_the_schema_line():
    for name in [*SPEC_OVERRIDES, "wgan_gp"]:
        lines = (SPECS / f"{name}.yaml").read_text().splitlines()
        assert lines[0] == "# yaml-language-server: $schema=../schemas/spec.schema.json"
        assert sum(line.startswith("# ") for line in lines[1:8]) >= 3, name  # the source and its settings


def test_wgan_spec_is_algorithm_1():
    trainer = load_system(str(SPECS / "wgan.yaml")).stages[0].trainer
    (clip,) = trainer.constraints
    assert (trainer.optimizer.type_name, trainer.optimizer.lr, clip.type_name, clip.c) == ("rmsprop", 5e-5,
                                                                                         "weight_clipping", 0.01)
    assert (trainer.batch_size, trainer.n_critic, trainer.divergence.type_name) == (64, 5, "wasserstein")


DIVERGENCES = ["wasserstein", "hinge", "nonsaturating", "minimax", "least_squares", "rasgan", "ralsgan", "rahinge"]
CONSTRAINTS = ["{type: gradient_penalty}", "{type: weight_clipping}", "{type: r1}", "{type: r2}", "{type: dragan}",
               "{type: consistency, shift: 2}", "{type: spectral_norm}"]


@pytest.mark.parametrize("override", [f"stages.0.trainer.divergence={{type: {d}}}" for d in DIVERGENCES] +
                         [f"stages.0.trainer.constraints=[{c}]" for c in CONSTRAINTS] +
                         ["stages.0.trainer.divergence={type: began}"])
def test_swap_divergence_or_constraint_by_override(override, tmp_path):
    swap = [override]
    if "began" in override:  # BEGAN scores are energies: it comes with its autoencoder critic
        swap += ["components.critic={type: autoencoder_critic, latent_dim: 8, width: 4}",
                 "stages.0.trainer.constraints=[]"]
    finished = train(str(SPECS / "hinge.yaml"), out=str(tmp_path / "run"), device="cpu",
                     overrides=[*SHRINK, *NARROW, *swap])
    log = _log(finished.url)
    assert len(log) == 2 and all(math.isfinite(r["critic"]) and math.isfinite(r["penalty"]) for r in log)
    uses_penalty = any(f"type: {t}" in override for t in ("gradient_penalty", "r1", "r2", "dragan", "consistency"))
    assert (log[0]["penalty"] > 0) == uses_penalty


TINY_GAN = {
    "name": "tiny-gan", "seed": 0, "device": "cpu",
    "data": {"type": "digits", "image_size": 8, "limit": 64},
    "components": {"prior": {"type": "gaussian", "dim": 4}},
    "stages": [{"name": "gan", "trainer": {"type": "adversarial", "n_critic": 2, "batch_size": 16, "steps": 7,
                                           "optimizer": {"type": "adam", "lr": 1.0e-3, "betas": [0.5, 0.9]}}}],
    "sampler": ["prior", "generator"],
    "evaluation": {"n_samples": 4},
    "log_every": 1,
    "checkpoint_every": 3,
}
RESUMED = {
    "began-ema-sn": {
        "generator": {"type": "ema", "decay": 0.9, "generator": {"type": "began_generator", "latent_dim": 4,
                                                                  "width": 4}},
        "critic": {"type": "autoencoder_critic", "latent_dim": 4, "width": 4},
        "trainer": {"divergence": {"type": "began", "lambda_k": 0.05}, "constraints": [{"type": "spectral_norm"}]},
    },
    "conditional-ema-sn-cr": {
        "generator": {"type": "ema", "decay": 0.9, "start": 2,
                      "generator": {"type": "dcgan_generator", "latent_dim": 4, "width": 4, "num_classes": 10}},
        "critic": {"type": "dcgan_critic", "width": 4, "num_classes": 10},
        "trainer": {"divergence": {"type": "hinge"},
                    "constraints": [{"type": "spectral_norm"}, {"type": "consistency", "shift": 2},
                                    {"type": "dragan"}]},
    },
}


@pytest.mark.parametrize("variant", sorted(RESUMED))
def test_resume_is_bit_identical(variant, write_spec, tmp_path):
    parts = RESUMED[variant]
    spec = {**TINY_GAN, "components": {**TINY_GAN["components"], "generator": parts["generator"],
                                       "critic": parts["critic"]}}
    spec["stages"] = [{**TINY_GAN["stages"][0], "trainer": {**TINY_GAN["stages"][0]["trainer"], **parts["trainer"]}}]
    reference, resumed = crash_and_resume(write_spec(spec), "gan", 5, tmp_path)
    expected = checkpoint_weights(reference)
    assert any(".average." in k for k in expected) and any(k.endswith("_u") for k in expected)
    strip = [{k: v for k, v in r.items() if k != "time"} for r in _log(reference)]
    assert [{k: v for k, v in r.items() if k != "time"} for r in _log(resumed)] == strip
    if variant.startswith("began"):
        assert len({r["k"] for r in strip}) > 1  # k_t moved, and was restored exactly


def test_sampling_uses_the_generator_average(write_spec, tmp_path):
    spec = {**TINY_GAN, "components": {**TINY_GAN["components"], **{
        "generator": RESUMED["began-ema-sn"]["generator"], "critic": {"type": "dcgan_critic", "width": 4}}}}
    finished = train(write_spec(spec), out=str(tmp_path / "run"))
    system, device = load_trained(finished.url)
    ema = system.components["generator"]
    assert ema.updates.item() == 7
    generator = torch.Generator().manual_seed(0)
    noise = system.components["prior"].sample(5, generator=generator)
    images = Sampler(system, device)(5, torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(images, ema.average.eval()(noise))
        assert not torch.allclose(images, ema.generator.eval()(noise))


def test_sample_label_gives_images_of_that_class(tmp_path, capsys):
    finished = train(str(SPECS / "cgan.yaml"), out=str(tmp_path / "run"), device="cpu",
                     overrides=[*SHRINK, *NARROW, "stages.0.trainer.steps=1"])
    # Make the generator class-separable: its output depends on the label only, not on the noise.
    storage = RunStorage.open(finished.url)
    checkpoint = storage.load_checkpoint()
    checkpoint["components"]["generator"]["net.0.weight"][:, :128] = 0.0
    storage.save_checkpoint(checkpoint)
    system, _ = load_trained(finished.url)
    generator = system.components["generator"].eval()
    with torch.no_grad():
        templates = to_uint8(generator(torch.zeros(10, 128), torch.arange(10))).float().flatten(1)
    assert torch.cdist(templates, templates).add(torch.eye(10) * 1e9).min() > 0  # ten distinct class images
    for label in (3, 7):
        out = tmp_path / f"label{label}.npz"
        assert main(["sample", finished.url, "--label", str(label), "--n", "6", "--seed", "1", "--out", str(out)]) == 0
        images = torch.from_numpy(np.load(out)["images"]).float().flatten(1)
        assert torch.cdist(images, templates).argmin(1).tolist() == [label] * 6
    assert main(["sample", finished.url, "--label", "10", "--out", str(tmp_path / "x.npz")]) == 1
    assert "--label 10: the generator knows classes 0..9" in capsys.readouterr().err
    assert storage.read_json("run.json")["data_shape"]["class_names"] == [str(d) for d in range(10)]
    assert main(["sample", finished.url, "--label", "seven", "--out", str(tmp_path / "x.npz")]) == 1
    assert ("--label 'seven': not a class of this run; the run's classes are 0, 1, 2, 3, 4, 5, 6, 7, 8, 9"
            in capsys.readouterr().err)
