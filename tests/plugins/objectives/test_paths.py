"""Probability paths against hand-written formulas: the noisy point, the target, and a velocity that
is the time derivative of the path when the network's output is the right one."""

from __future__ import annotations

import math

import pytest
import torch

from genframe_plugins.objectives.paths import EDM, Linear, VPCosine

# float64 throughout: the finite differences below need the precision
DATA = torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.25, -0.75]], dtype=torch.float64)
NOISE = torch.tensor([[-0.3, 0.8, 1.1], [0.2, -1.4, 0.6]], dtype=torch.float64)


def test_linear_path_is_a_straight_line():
    path, t = Linear(), torch.tensor([0.25, 0.75], dtype=torch.float64)
    torch.testing.assert_close(path.noisy(DATA, NOISE, t), t[:, None] * DATA + (1 - t[:, None]) * NOISE)
    torch.testing.assert_close(path.target(DATA, NOISE, None, t), DATA - NOISE)
    torch.testing.assert_close(path.start(NOISE), NOISE)


def test_vp_cosine_path_matches_the_cosine_schedule():
    path, t = VPCosine(), torch.tensor([0.3, 0.9], dtype=torch.float64)
    s = 1e-4 + (0.999 - 1e-4) * (1 - t)  # diffusion time
    f = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    alpha_bar = torch.tensor([f(v) / f(0.0) for v in s.tolist()], dtype=torch.float64)
    expected = alpha_bar.sqrt()[:, None] * DATA + (1 - alpha_bar).sqrt()[:, None] * NOISE
    torch.testing.assert_close(path.noisy(DATA, NOISE, t), expected)
    torch.testing.assert_close(path.target(DATA, NOISE, expected, t), NOISE)  # noise prediction
    a0, s0 = path.scales(torch.tensor(0.0, dtype=torch.float64))
    assert a0 < 0.002 and abs(s0 - 1) < 1e-5  # t = 0 is (almost) pure noise


def test_edm_preconditioning_matches_karras_et_al():
    path = EDM()
    t = path.training_times(4, device=torch.device("cpu"), generator=torch.Generator().manual_seed(0))[:2].double()
    sigma = path.sigma(t)
    x = path.noisy(DATA, NOISE, t)
    torch.testing.assert_close(x, DATA + sigma[:, None] * NOISE)
    c_skip = 0.25 / (sigma ** 2 + 0.25)
    c_out = sigma * 0.5 / (sigma ** 2 + 0.25).sqrt()
    c_in = 1 / (sigma ** 2 + 0.25).sqrt()
    torch.testing.assert_close(path.target(DATA, NOISE, x, t), (DATA - c_skip[:, None] * x) / c_out[:, None])
    inputs, feature = path.network_input(x, t)
    torch.testing.assert_close(inputs, c_in[:, None] * x)
    torch.testing.assert_close(feature, sigma.log() / 4)
    # the schedule: sigma_max at t = 0, sigma_min at t = 1, rho-spaced between
    torch.testing.assert_close(path.sigma(torch.tensor([0.0, 1.0], dtype=torch.float64)),
                               torch.tensor([80.0, 0.002], dtype=torch.float64))
    mid = (80 ** (1 / 7) + 0.5 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    assert path.sigma(torch.tensor(0.5, dtype=torch.float64)).item() == pytest.approx(mid)


def test_edm_training_noise_levels_are_log_normal():
    path = EDM()
    t = path.training_times(200_000, device=torch.device("cpu"), generator=torch.Generator().manual_seed(0))
    log_sigma = path.sigma(t).log()
    inside = log_sigma[(log_sigma > math.log(0.01)) & (log_sigma < math.log(40))]  # away from the clamps
    assert log_sigma.median().item() == pytest.approx(-1.2, abs=0.02)
    assert inside.std().item() == pytest.approx(1.2, abs=0.05)


@pytest.mark.parametrize("path", [Linear(), VPCosine(), EDM()], ids=["linear", "vp_cosine", "edm"])
@pytest.mark.parametrize("time", [0.1, 0.5, 0.9])
def test_velocity_of_the_right_output_is_the_paths_derivative(path, time):
    # A network that outputs its target exactly moves x along the path itself: dx/dt = d/dt noisy(t).
    t = torch.tensor(time, dtype=torch.float64)
    x = path.noisy(DATA, NOISE, t)
    velocity = path.velocity(path.target(DATA, NOISE, x, t), x, t)
    h = 1e-6
    derivative = (path.noisy(DATA, NOISE, t + h) - path.noisy(DATA, NOISE, t - h)) / (2 * h)
    torch.testing.assert_close(velocity, derivative, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("path", [Linear(), VPCosine(), EDM()], ids=["linear", "vp_cosine", "edm"])
def test_renoising_gives_the_marginal_of_the_earlier_time(path):
    generator = torch.Generator().manual_seed(0)
    data = torch.full((200_000, 1), 0.7, dtype=torch.float64)
    t, earlier = torch.tensor(0.8, dtype=torch.float64), torch.tensor(0.6, dtype=torch.float64)
    x = path.noisy(data, torch.randn(data.shape, generator=generator, dtype=torch.float64), t)
    back = path.renoise(x, t, earlier, torch.randn(data.shape, generator=generator, dtype=torch.float64))
    a, s = path.scales(earlier)
    assert back.mean().item() == pytest.approx((a * 0.7).item(), abs=4 * s.item() / math.sqrt(len(data)))
    assert back.std().item() == pytest.approx(s.item(), rel=0.01)


@pytest.mark.parametrize("path", [Linear(), VPCosine(), EDM(sigma_data=0.5)], ids=["linear", "vp_cosine", "edm"])
def test_the_denoised_estimate_of_the_right_output_is_the_data(path):
    t = torch.tensor([0.2, 0.7], dtype=torch.float64)
    x = path.noisy(DATA, NOISE, t)
    torch.testing.assert_close(path.denoised(path.target(DATA, NOISE, x, t), x, t), DATA)


@pytest.mark.parametrize("path", [Linear(), VPCosine(), EDM(sigma_data=0.5)], ids=["linear", "vp_cosine", "edm"])
def test_time_of_inverts_the_noise_level(path):
    t = torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0], dtype=torch.float64)
    torch.testing.assert_close(path.time_of(path.sigma(t)), t, atol=1e-9, rtol=0)
    for sigma in (0.05, 1.0, 20.0):
        time, a, s = path.level(sigma)
        assert s / a == pytest.approx(sigma, rel=1e-9) and 0 <= time <= 1


def test_noise_levels_run_from_the_start_to_the_clean_data():
    edm = EDM().noise_levels(8)
    assert len(edm) == 9 and edm[0] == pytest.approx(80) and edm[-2] == pytest.approx(0.002) and edm[-1] == 0
    linear = Linear().noise_levels(8)  # evenly spaced in t, from pure noise to the data
    assert linear[0] == math.inf and linear[-1] == 0 and linear[4] == pytest.approx(1.0)  # t = 1/2
    vp = VPCosine().noise_levels(8)  # Karras et al.'s schedule from 80, not from the path's 640
    assert vp[0] == pytest.approx(80) and vp[-1] == 0 and vp == sorted(vp, reverse=True)
    assert vp[-2] == pytest.approx(float(VPCosine().sigma(torch.tensor(1.0, dtype=torch.float64))))


@pytest.mark.parametrize("path, change, message", [
    (EDM, {"sigma_min": 80.0, "sigma_max": 0.002}, r"sigma_min \(80\) must be below sigma_max \(0.002\)"),
    (EDM, {"sigma_min": 1.0, "sigma_max": 1.0}, r"sigma_min \(1\) must be below sigma_max \(1\)"),
    (VPCosine, {"s_min": 0.9, "s_max": 0.1}, r"s_min \(0.9\) must be below s_max \(0.1\)"),
])
def test_a_path_whose_ends_are_reversed_or_equal_is_refused(path, change, message):
    with pytest.raises(ValueError, match=message):
        path(**change)


def test_edm_measures_sigma_data_on_the_data_unless_given():
    data = torch.full((10, 3), 0.5)
    data[:5] = -1.0
    measured = EDM()
    measured.fit(iter([data[:4], data[4:]]))
    assert measured.measured_sigma_data.item() == pytest.approx(math.sqrt((5 * 1.0 + 5 * 0.25) / 10))
    given = EDM(sigma_data=0.5)
    given.fit([data])
    assert given._scale() == 0.5 and "measured_sigma_data" not in dict(given.named_buffers())
