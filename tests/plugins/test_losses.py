import numpy as np
import pytest
import torch

from genframe import SpecError
from genframe.build import instantiate
from genframe.registry import create_registry
from genframe_plugins import losses
from genframe_plugins.losses import L1, L2, Lap1, laplacian_pyramid


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
