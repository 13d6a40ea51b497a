"""Reconstruct, restore and interpolate: codes recovered, PSNR improved, strips framed; the CLI for real."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genframe import GenframeError
from genframe.trained import applications as app
from genframe.api import train
from genframe.cli import main
from genframe.ops.images import to_float, to_uint8

from .test_cli import _one_line_error

TINY_DATA = {"type": "digits", "image_size": 8, "limit": 64}
GLO = {
    "name": "glo-tiny", "seed": 0, "device": "cpu", "data": TINY_DATA,
    "components": {
        "codes": {"type": "latent_codes", "dim": 4, "init": "pca"},
        "generator": {"type": "dcgan_generator", "latent_dim": 4, "width": 8},
        "gaussian": {"type": "fitted_gaussian", "dim": 4, "projection": "sphere"},
    },
    "stages": [
        {"name": "glo", "trainer": {"type": "autoencoding", "encoder": "codes", "epochs": 10, "batch_size": 16}},
        {"name": "fit", "trainer": {"type": "fit_prior", "prior": "gaussian", "encoder": "codes"}},
    ],
    "sampler": ["gaussian", "generator"], "evaluation": {"n_samples": 4}, "log_every": 20,
}
AE = {
    "name": "ae-tiny", "seed": 0, "device": "cpu", "data": TINY_DATA,
    "components": {
        "encoder": {"type": "conv_encoder", "dim": 4, "width": 8},
        "generator": {"type": "dcgan_generator", "latent_dim": 4, "width": 8},
        "prior": {"type": "gaussian", "dim": 4},
    },
    "stages": [{"name": "ae", "trainer": {"type": "autoencoding", "epochs": 10, "batch_size": 16,
                                          "encoder_optimizer": None}}],
    "sampler": ["prior", "generator"], "evaluation": {"n_samples": 4}, "log_every": 20,
}
FAST = app.Search(steps=200, lr=0.05, candidates=128)


def _train(spec: dict, folder) -> str:
    import yaml

    path = folder / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return train(str(path), out=str(folder / spec["name"])).url


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("applications")
    return {"glo": _train(GLO, folder), "ae": _train(AE, folder)}


def _generated(trained: app.Trained, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes, uint8 images) that the run's generator produced from codes on the encoder's set."""
    codes = trained.project(torch.randn(n, trained.generator.latent_dim, generator=torch.Generator().manual_seed(seed)))
    return codes, to_uint8(app.decode(trained, codes))


def test_reconstruction_recovers_the_code_that_produced_the_image(runs):
    trained = app.load(runs["glo"])
    assert not trained.encoder.encodes_new_images  # nothing to start from but sampled candidates
    codes, images = _generated(trained, 6, seed=1)
    found = app.reconstruct(trained, images, search=app.Search(steps=400, lr=0.02, candidates=256))
    assert torch.allclose(found.codes.norm(dim=1), torch.ones(6), atol=1e-5)  # on GLO's sphere
    assert (found.codes - codes).norm(dim=1).max().item() < 0.05
    assert found.psnr.min().item() > 35  # against images rounded to uint8


def test_reconstruction_reports_its_loss_and_psnr_per_image(runs):
    trained = app.load(runs["ae"])
    images = _generated(trained, 4, seed=2)[1]
    images[1] = 255 - images[1]  # an image the generator can hardly make
    found = app.reconstruct(trained, images, loss="l1", search=app.Search(steps=20))
    from genframe_plugins.objectives.losses import L1

    for i in range(4):
        expected = L1()(to_float(found.images[i:i + 1]), to_float(images[i:i + 1])).item()
        assert found.loss[i].item() == pytest.approx(expected, rel=0.02, abs=0.5)  # reported before rounding
        mse = (found.images[i].double() - images[i].double()).square().mean()
        assert found.psnr[i].item() == pytest.approx(10 * np.log10(255 ** 2 / mse.item()))
    assert found.psnr[1] < found.psnr[[0, 2, 3]].min()


def test_an_encoder_that_can_encode_new_images_gives_the_starting_codes(runs):
    from genframe_plugins.objectives.losses import L2

    trained = app.load(runs["ae"])
    images = _generated(trained, 5, seed=3)[1]
    start = app.reconstruct(trained, images, search=app.Search(steps=0, candidates=1))
    with torch.no_grad():
        trained.encoder.eval()
        own = trained.encoder.encode(to_float(images), torch.arange(5))
    own_loss = torch.stack([L2()(app.decode(trained, own[i:i + 1]), to_float(images[i:i + 1]))
                            for i in range(5)])
    assert (start.loss <= own_loss + 1e-4).all()  # never worse than the encoder's own code
    assert torch.isclose(start.codes, own).all(dim=1).sum() >= 3  # which usually beats a random candidate
    refined = app.reconstruct(trained, images, search=FAST)
    assert refined.loss.mean() < start.loss.mean()


def test_restore_inpaints_the_missing_half_of_a_generated_image(runs):
    trained = app.load(runs["glo"])
    _, clean = _generated(trained, 6, seed=4)
    mask = torch.ones(clean.shape)
    mask[..., 4:, :] = 0
    observed = (clean * mask).to(torch.uint8)
    restored = app.restore(trained, observed, mask=mask, search=FAST).images
    assert torch.equal(restored[..., :4, :], clean[..., :4, :])  # observed pixels are kept
    before, after = app.psnr(observed, clean), app.psnr(restored, clean)
    assert (after > before + 10).all(), (before, after)


def test_restore_denoises_a_generated_image(runs):
    trained = app.load(runs["glo"])
    _, clean = _generated(trained, 6, seed=5)
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(6)) * 0.2 * 255
    noisy = (clean.float() + noise).round().clamp(0, 255).to(torch.uint8)
    restored = app.restore(trained, noisy, noise=0.2, search=FAST).images
    before, after = app.psnr(noisy, clean), app.psnr(restored, clean)
    assert (after > before + 5).all(), (before, after)


def test_restore_needs_an_observation_model(runs):
    trained = app.load(runs["glo"])
    images = _generated(trained, 1, seed=7)[1]
    with pytest.raises(GenframeError, match="give a mask .*, a noise level .*, or both"):
        app.restore(trained, images)
    with pytest.raises(GenframeError, match="noise must be a positive standard deviation"):
        app.restore(trained, images, noise=0.0)


def test_interpolation_between_learned_codes_of_training_images(runs):
    trained = app.load(runs["glo"])
    strips = app.interpolate(trained, pairs=3, steps=5, seed=0)
    assert strips.shape == (3, 5, 1, 8, 8) and strips.dtype == torch.uint8
    table = trained.encoder.codes.detach()
    picked = torch.randperm(64, generator=torch.Generator().manual_seed(0))[:6]
    ends = to_uint8(app.decode(trained, table[picked]))
    assert torch.equal(strips[:, 0], ends[0::2]) and torch.equal(strips[:, -1], ends[1::2])
    assert not torch.equal(strips[:, 1], strips[:, 0])


def test_interpolation_between_real_images_is_framed_by_them(runs):
    trained = app.load(runs["ae"])
    images = _generated(trained, 5, seed=8)[1]
    strips = app.interpolate(trained, images=images, pairs=8, steps=4, search=app.Search(steps=10))
    assert strips.shape == (2, 6, 1, 8, 8)  # two pairs from five images; originals at both ends
    assert torch.equal(strips[:, 0], images[0:4:2]) and torch.equal(strips[:, -1], images[1:4:2])


def test_interpolation_between_prior_samples_and_source_errors(runs):
    trained = app.load(runs["ae"])
    strips = app.interpolate(trained, source="auto", pairs=2, steps=3)
    assert strips.shape == (2, 3, 1, 8, 8)
    with pytest.raises(GenframeError, match="source codes needs a run with a code table"):
        app.interpolate(trained, source="codes")
    with pytest.raises(GenframeError, match="source images needs --images FILE"):
        app.interpolate(trained, source="images")
    with pytest.raises(GenframeError, match="--images needs at least two images"):
        app.interpolate(trained, images=_generated(trained, 1, seed=9)[1])


# --------------------------------------------------------------------------- command line


def _save(path, **arrays) -> str:
    np.savez(path, **arrays)
    return str(path)


def test_cli_reconstruct_restore_interpolate(runs, tmp_path, capsys):
    trained = app.load(runs["glo"])
    images = _generated(trained, 4, seed=10)[1].numpy()
    given = _save(tmp_path / "in.npz", images=images)
    assert main(["reconstruct", runs["glo"], "--images", given, "--out", str(tmp_path / "rec.npz"),
                 "--png", str(tmp_path / "rec.png"), "--iterations", "50"]) == 0
    assert "reconstructed 4 images: mean l2 loss" in capsys.readouterr().out
    rec = np.load(tmp_path / "rec.npz")
    assert rec["images"].shape == images.shape and rec["codes"].shape == (4, 4)
    assert rec["loss"].shape == (4,) and rec["psnr"].shape == (4,)
    assert (tmp_path / "rec.png").read_bytes()[:4] == b"\x89PNG"

    np.save(tmp_path / "mask.npy", np.tril(np.ones((8, 8), dtype=np.uint8)))  # a plain .npy works too
    assert main(["restore", runs["glo"], "--images", given, "--mask", str(tmp_path / "mask.npy"),
                 "--out", str(tmp_path / "res.npz"), "--iterations", "20"]) == 0
    assert np.load(tmp_path / "res.npz")["images"].shape == images.shape
    assert main(["restore", runs["glo"], "--images", given, "--noise", "0.1", "--out", str(tmp_path / "den.npz"),
                 "--iterations", "20"]) == 0

    assert main(["interpolate", runs["glo"], "--out", str(tmp_path / "codes.png"), "--pairs", "2",
                 "--steps", "4"]) == 0
    assert main(["interpolate", runs["glo"], "--images", given, "--out", str(tmp_path / "real.png"),
                 "--iterations", "10"]) == 0
    from PIL import Image

    assert Image.open(tmp_path / "codes.png").size == (4 * 10 + 2, 2 * 10 + 2)  # 8 px images, 2 px padding
    assert Image.open(tmp_path / "real.png").size == (10 * 10 + 2, 2 * 10 + 2)  # 8 steps + the two originals


def test_cli_errors_are_one_line(runs, tmp_path, capsys):
    wrong = _save(tmp_path / "wrong.npz", images=np.zeros((2, 1, 16, 16), dtype=np.uint8))
    assert _one_line_error(capsys, ["reconstruct", runs["glo"], "--images", wrong, "--out", str(tmp_path / "o.npz")]) \
        == f"--images {wrong}: images are (1, 16, 16) (C, H, W) but the run's generator makes (1, 8, 8)"
    floats = _save(tmp_path / "floats.npz", images=np.zeros((2, 1, 8, 8), dtype=np.float32))
    assert "expected uint8 images" in _one_line_error(
        capsys, ["reconstruct", runs["glo"], "--images", floats, "--out", str(tmp_path / "o.npz")])
    named = _save(tmp_path / "named.npz", pictures=np.zeros((2, 1, 8, 8), dtype=np.uint8))
    assert _one_line_error(capsys, ["reconstruct", runs["glo"], "--images", named, "--out", str(tmp_path / "o.npz")]) \
        == f"--images {named}: the .npz file has no 'images' array (it has: pictures)"
    good = _save(tmp_path / "good.npz", images=np.zeros((2, 1, 8, 8), dtype=np.uint8))
    assert _one_line_error(capsys, ["restore", runs["glo"], "--images", good, "--out", str(tmp_path / "o.npz")]) \
        == "restore: give --mask FILE (inpainting), --noise SIGMA (denoising), or both"
    np.save(tmp_path / "bad-mask.npy", np.ones((3, 3)))
    assert "does not fit images of shape (2, 1, 8, 8)" in _one_line_error(
        capsys, ["restore", runs["glo"], "--images", good, "--mask", str(tmp_path / "bad-mask.npy"),
                 "--out", str(tmp_path / "o.npz")])
    np.save(tmp_path / "grey-mask.npy", np.full((8, 8), 0.5))
    assert "values must be 0 (missing) or 1 (observed)" in _one_line_error(
        capsys, ["restore", runs["glo"], "--images", good, "--mask", str(tmp_path / "grey-mask.npy"),
                 "--out", str(tmp_path / "o.npz")])
    assert "cannot read" in _one_line_error(
        capsys, ["interpolate", runs["glo"], "--images", str(tmp_path / "absent.npz"),
                 "--out", str(tmp_path / "i.png")])
    assert "source codes needs a run with a code table" in _one_line_error(
        capsys, ["interpolate", runs["ae"], "--source", "codes", "--out", str(tmp_path / "i.png")])
