import hashlib
import urllib.error

import fsspec
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from genframe import GenframeError, SpecError
from genframe.build.system import instantiate
from genframe.training.context import BuildContext
from genframe.components.registry import create_registry
from genframe_plugins.objectives import losses
from genframe_plugins.objectives.losses import L1, L2, VGG, Lap1, laplacian_pyramid


# ----------------------------------------------------------------- independent numpy reference


def np_blur(image, taps):
    """2-D blur of one (H, W) array with the outer product of ``taps``, reflect padding, loops."""
    kernel = np.outer(taps, taps) / np.sum(taps) ** 2
    r = len(taps) // 2
    padded = np.pad(image, r, mode="reflect")
    out = np.zeros_like(image)
    for y in range(image.shape[0]):
        for x in range(image.shape[1]):
            out[y, x] = np.sum(padded[y:y + 2 * r + 1, x:x + 2 * r + 1] * kernel)
    return out


def np_pyramid(image, levels, taps=(1, 4, 6, 4, 1)):
    bands, current = [], image
    while len(bands) < levels - 1 and min(current.shape) >= 3:
        coarse = np_blur(current, taps)[::2, ::2]
        up = np.zeros_like(current)
        for y in range(coarse.shape[0]):
            for x in range(coarse.shape[1]):
                up[2 * y, 2 * x] = coarse[y, x]
        bands.append(current - 4 * np_blur(up, taps))
        current = coarse
    bands.append(current)
    return bands


def np_lap1(x, y, levels, taps=(1, 4, 6, 4, 1)):
    per_image = []
    for n in range(x.shape[0]):
        total = 0.0
        for c in range(x.shape[1]):
            for j, band in enumerate(np_pyramid(x[n, c] - y[n, c], levels, taps)):
                total += 2.0 ** (2 * j) * np.abs(band).sum()
        per_image.append(total)
    return np.mean(per_image)


@pytest.fixture
def pair():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 12, 10, generator=gen, dtype=torch.float64) * 2 - 1
    y = torch.rand(2, 3, 12, 10, generator=gen, dtype=torch.float64) * 2 - 1
    return x, y


# ----------------------------------------------------------------- pixel losses


def test_l2_and_l1_closed_form():
    recon = torch.zeros(2, 3, 4, 4)
    target = torch.full((2, 3, 4, 4), 0.5)
    target[1] = -1.0  # second image: error 1 everywhere
    # per image: 48 pixels; image 0 errs by 0.5, image 1 by 1.0
    assert L2()(recon, target).item() == pytest.approx((48 * 0.25 + 48 * 1.0) / 2)
    assert L1()(recon, target).item() == pytest.approx((48 * 0.5 + 48 * 1.0) / 2)


def test_losses_are_float32_for_half_inputs():
    recon = torch.zeros(2, 1, 8, 8, dtype=torch.bfloat16)
    target = torch.full((2, 1, 8, 8), 0.25, dtype=torch.bfloat16)
    for loss in (L2(), L1(), Lap1()):
        assert loss(recon, target).dtype == torch.float32
    assert L1()(recon, target).item() == pytest.approx(64 * 0.25)


# ----------------------------------------------------------------- laplacian pyramid


def test_pyramid_matches_numpy_loops(pair):
    x, _ = pair
    bands = laplacian_pyramid(x, 4)
    assert [tuple(b.shape[-2:]) for b in bands] == [(12, 10), (6, 5), (3, 3), (2, 2)]
    for n in range(2):
        for c in range(3):
            for band, ref in zip(bands, np_pyramid(x[n, c].numpy(), 4)):
                np.testing.assert_allclose(band[n, c].numpy(), ref, rtol=1e-12, atol=1e-12)


def test_pyramid_reconstructs_the_image(pair):
    x, _ = pair
    bands = laplacian_pyramid(x, 4)
    taps = tuple(t / 16 for t in losses.BINOMIAL_5)
    image = bands[-1]
    for band in reversed(bands[:-1]):
        image = band + losses._expand(image, band.shape[-2:], taps)
    torch.testing.assert_close(image, x)


def test_pyramid_levels_are_clipped(pair):
    x, _ = pair
    assert len(laplacian_pyramid(x, 50)) == 4  # 12x10 -> 6x5 -> 3x3 -> 2x2 cannot split further
    assert len(laplacian_pyramid(x, 1)) == 1 and laplacian_pyramid(x, 1)[0] is x


# ----------------------------------------------------------------- lap1


def test_lap1_matches_hand_computation(pair):
    x, y = pair
    expected = np_lap1(x.numpy(), y.numpy(), 4)
    got = Lap1()(x, y)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    custom = (1.0, 2.0, 3.0, 2.0, 1.0)
    assert Lap1(levels=3, kernel=custom)(x, y).item() == pytest.approx(
        np_lap1(x.numpy(), y.numpy(), 3, custom), rel=1e-6)


def test_lap1_of_a_constant_offset_is_its_residual():
    # Every band-pass level of a constant image is 0; only the 2x2 residual (level 3) remains, and
    # its weight 4^3 makes up for its 64 times fewer pixels: the loss equals the pixel L1.
    x = torch.zeros(1, 3, 16, 16)
    assert Lap1(levels=4)(x + 0.5, x).item() == pytest.approx(4.0 ** 3 * 3 * 2 * 2 * 0.5)
    assert Lap1(levels=4)(x + 0.5, x).item() == pytest.approx(L1()(x + 0.5, x).item())


def test_lap1_with_one_level_is_l1(pair):
    x, y = pair
    assert Lap1(levels=1)(x, y).item() == pytest.approx(L1()(x, y).item())


def test_lap1_backpropagates(pair):
    x, y = pair
    x = x.float().requires_grad_(True)
    Lap1()(x, y.float()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_spec_building_and_invalid_kernel():
    registry = create_registry([losses], entry_points=False)
    built = instantiate("reconstruction_loss", {"type": "lap1", "levels": 3, "kernel": [1, 2, 2, 2, 1]},
                        "loss", "<test>", registry)
    assert isinstance(built, Lap1) and built.kernel == (1, 2, 2, 2, 1)
    with pytest.raises(SpecError, match="kernel taps"):
        instantiate("reconstruction_loss", {"type": "lap1", "kernel": [1, -4, 6, 4, 1]}, "loss", "<test>",
                    registry)


# ----------------------------------------------------------------- VGG-16 perceptual loss


def write_vgg_weights(path) -> tuple[str, dict]:
    """Weights a test makes: VGG-16's layers up to conv3_2 (random), under torchvision's key names.

    Returns the file's SHA-256 and the state dict.
    """
    from torchvision.models.vgg import cfgs, make_layers

    torch.manual_seed(0)
    state = {f"features.{k}": v for k, v in make_layers(cfgs["D"])[:13].state_dict().items()}
    torch.save(state, path)
    return hashlib.sha256(path.read_bytes()).hexdigest(), state


@pytest.fixture(scope="module")
def vgg_weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("vgg") / "vgg16-made-by-the-test.pth"
    return (path, *write_vgg_weights(path))


def hand_vgg_loss(x, y, state, levels):
    """The loss written out with explicit convolutions: ImageNet input, conv1_2, conv2_2, conv3_2 (pre-ReLU)."""
    def conv(h, i):
        return F.conv2d(h, state[f"features.{i}.weight"], state[f"features.{i}.bias"], padding=1)

    def features(images):
        h = ((images.repeat(1, 3, 1, 1) + 1) / 2 - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) \
            / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        a = conv(F.relu(conv(h, 0)), 2)
        b = conv(F.relu(conv(F.max_pool2d(F.relu(a), 2), 5)), 7)
        c = conv(F.relu(conv(F.max_pool2d(F.relu(b), 2), 10)), 12)
        return [a, b, c][:levels]

    per_image = (x - y).abs().mean(dim=(1, 2, 3))
    for fx, fy in zip(features(x), features(y)):
        per_image = per_image + (fx - fy).abs().mean(dim=(1, 2, 3))
    return (per_image * x[0].numel()).mean()


@pytest.mark.parametrize("levels", [1, 3])
def test_vgg_matches_hand_computation(vgg_weights, pair, levels):
    path, digest, state = vgg_weights
    x, y = (t[:, :1, :8, :8].float() for t in pair)
    loss = VGG(weights=str(path), sha256=digest, levels=levels)
    torch.testing.assert_close(loss(x, y), hand_vgg_loss(x, y, state, levels), rtol=1e-5, atol=1e-4)
    assert loss(x, x).item() == 0


def test_vgg_without_feature_levels_is_l1_and_needs_no_weights(pair):
    x, y = pair
    assert VGG(levels=0)(x, y).item() == pytest.approx(L1()(x, y).item(), rel=1e-6)


def test_vgg_backpropagates_to_the_reconstruction_only(vgg_weights):
    path, digest, _ = vgg_weights
    loss = VGG(weights=str(path), sha256=digest)
    x = torch.zeros(2, 3, 16, 16, requires_grad=True)
    loss(x, torch.rand(2, 3, 16, 16) * 2 - 1).backward()
    assert x.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in loss._network(torch.device("cpu")).parameters())


def test_vgg_weights_from_any_fsspec_url(vgg_weights, pair):
    path, digest, _ = vgg_weights
    with fsspec.open("memory://genframe-tests/vgg.pth", "wb") as fh:
        fh.write(path.read_bytes())
    x, y = (t[:, :1].float() for t in pair)
    from_memory = VGG(weights="memory://genframe-tests/vgg.pth", sha256=digest)(x, y)
    assert from_memory.item() == VGG(weights=str(path), sha256=digest)(x, y).item()


def test_vgg_checks_the_sha256_of_the_weights(vgg_weights, pair):
    path, digest, _ = vgg_weights
    wrong = "0" * 64
    with pytest.raises(GenframeError, match=f"has SHA-256 {digest}, not the sha256 given .*use the loss lap1"):
        VGG(weights=str(path), sha256=wrong)(*pair)
    registry = create_registry([losses], entry_points=False)
    with pytest.raises(SpecError, match=r"loss: invalid parameters: vgg: sha256: required when weights is a path"):
        instantiate("reconstruction_loss", {"type": "vgg", "weights": str(path)}, "loss", "<test>", registry)
    with pytest.raises(SpecError, match="sha256: expected 64 hexadecimal digits"):
        instantiate("reconstruction_loss", {"type": "vgg", "sha256": "abc"}, "loss", "<test>", registry)


def test_vgg_reads_torchvisions_weights_through_its_api_from_the_hub_cache(vgg_weights, pair, tmp_path,
                                                                          monkeypatch):
    path, digest, _ = vgg_weights
    from torchvision.models import VGG16_Weights

    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / VGG16_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[1]).write_bytes(path.read_bytes())
    x, y = (t[:, :1].float() for t in pair)
    assert VGG(sha256=digest)(x, y).item() == VGG(weights=str(path), sha256=digest)(x, y).item()
    with pytest.raises(GenframeError, match="has SHA-256"):
        VGG(sha256="f" * 64)(x, y)


def test_missing_torchvision_weights_say_how_to_provide_them(tmp_path, monkeypatch):
    import torchvision.models._api

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network in this test")

    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)
    with pytest.raises(GenframeError) as info:
        VGG().setup(BuildContext(num_examples=1, channels=1, image_size=8, device=torch.device("cpu")))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("vgg: cannot load torchvision's ImageNet VGG-16 weights (URLError")
    assert f"put vgg16-397923af.pth (from https://download.pytorch.org/models/vgg16-397923af.pth) into " \
           f"{tmp_path / 'hub' / 'checkpoints'}" in message
    assert "set weights: to a path or URL of the file and sha256: to its SHA-256" in message
    assert message.endswith("or use the loss lap1, which needs no weights")


def test_vgg_refuses_other_channel_counts(vgg_weights):
    path, digest, _ = vgg_weights
    with pytest.raises(GenframeError, match="vgg: compares grey or RGB images, got 2 channels"):
        VGG(weights=str(path), sha256=digest)(torch.zeros(1, 2, 8, 8), torch.zeros(1, 2, 8, 8))
