"""VAE, WAE and GLO through the engine: exact resume with reparameterisation noise, latent terms, the vgg loss."""

from __future__ import annotations

import pytest

from genframe import SpecError
from genframe.api import load_system, train
from genframe.storage import RunStorage

from ...conftest import crash_and_resume
from ..objectives.test_losses import write_vgg_weights

VAE = {
    "name": "vae-tiny", "seed": 0, "device": "cpu",
    "data": {"type": "digits", "image_size": 8, "limit": 64},
    "components": {
        "encoder": {"type": "gaussian_encoder", "dim": 3, "width": 4},
        "generator": {"type": "dcgan_generator", "latent_dim": 3, "width": 4},
        "prior": {"type": "gaussian", "dim": 3},
    },
    "stages": [{"name": "vae", "trainer": {"type": "autoencoding", "latent_divergence": {"type": "kl"},
                                           "epochs": 3, "batch_size": 16, "encoder_optimizer": None}}],
    "sampler": ["prior", "generator"], "evaluation": {"n_samples": 4}, "log_every": 2, "checkpoint_every": 4,
}


def test_vae_resume_after_interruption_is_bit_identical(write_spec, tmp_path):
    """The reparameterisation noise comes from the stage's checkpointed generator, so replayed steps redraw it."""
    reference, resumed = crash_and_resume(write_spec(VAE), "vae", 6, tmp_path)
    logged = [(r["step"], r["kl"]) for r in RunStorage.open(resumed).read_log() if "kl" in r]
    assert logged == [(r["step"], r["kl"]) for r in RunStorage.open(reference).read_log() if "kl" in r]


def test_wae_logs_reconstruction_and_mmd_and_shrinks_the_mmd(write_spec, tmp_path):
    spec = {**VAE, "name": "wae-tiny"}
    spec["components"] = {**VAE["components"], "encoder": {"type": "conv_encoder", "dim": 3, "width": 4}}
    # Codes start near 0 (DCGAN's small initial weights): a larger learning rate spreads them in a few steps.
    spec["stages"] = [{"name": "wae", "trainer": {"type": "autoencoding", "epochs": 12, "batch_size": 16,
                                                  "optimizer": {"type": "adam", "lr": 1.0e-2},
                                                  "encoder_optimizer": None,
                                                  "latent_divergence": {"type": "mmd", "weight": 100.0}}}]
    spec["log_every"] = spec["checkpoint_every"] = 8
    finished = train(write_spec(spec), out=str(tmp_path / "run"))
    log = [r for r in RunStorage.open(finished.url).read_log() if r.get("stage") == "wae" and "mmd" in r]
    assert len(log) == 6
    for record in log:
        assert record["loss"] == pytest.approx(record["reconstruction"] + 100.0 * record["mmd"], rel=1e-5)
    assert log[-1]["mmd"] + log[-2]["mmd"] < 0.3 * (log[0]["mmd"] + log[1]["mmd"])


def test_kl_with_a_deterministic_encoder_is_refused_before_any_data_is_read(write_spec):
    spec = {**VAE, "components": {**VAE["components"], "encoder": {"type": "conv_encoder", "dim": 3, "width": 4}}}
    path = write_spec(spec)
    with pytest.raises(SpecError, match=r"stages\[0\]\.trainer\.latent_divergence\.type: kl needs an encoder "
                                        "with a Gaussian posterior"):
        load_system(path)


def test_glo_trains_with_the_vgg_loss_from_weights_the_test_made(write_spec, tmp_path):
    digest, _ = write_vgg_weights(tmp_path / "vgg16.pth")
    spec = {**VAE, "name": "glo-vgg", "components": {
        "codes": {"type": "latent_codes", "dim": 3, "init": "random"},
        "generator": {"type": "dcgan_generator", "latent_dim": 3, "width": 4},
        "prior": {"type": "sphere", "dim": 3}}}
    spec["stages"] = [{"name": "glo", "trainer": {
        "type": "autoencoding", "encoder": "codes", "epochs": 4, "batch_size": 16,
        "loss": {"type": "vgg", "weights": str(tmp_path / "vgg16.pth"), "sha256": digest, "levels": 2}}}]
    finished = train(write_spec(spec), out=str(tmp_path / "run"))
    losses = [r["loss"] for r in RunStorage.open(finished.url).read_log() if "loss" in r]
    assert len(losses) == 8 and losses[-1] < losses[0]
