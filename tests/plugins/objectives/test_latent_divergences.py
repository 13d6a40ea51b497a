"""Latent divergences: KL against its closed form and a Monte-Carlo estimate, MMD against a naive double loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from genframe import GenframeError, Posterior, SpecError
from genframe.training.context import BuildContext, StageContext
from genframe.components.registry import create_registry
from genframe_plugins.networks.encoders import ConvEncoder, GaussianEncoder
from genframe_plugins.objectives.latent_divergences import KL, MMD, gaussian_kl, mmd_unbiased, prior_spread
from genframe_plugins.networks.priors import Gaussian, Sphere


def stage_context(components: dict) -> StageContext:
    build = BuildContext(num_examples=4, channels=1, image_size=16, device=torch.device("cpu"))
    for c in components.values():
        c.setup(build)
    return StageContext(build=build, components=components, stage="vae", stage_index=0,
                        generator=torch.Generator().manual_seed(0))


# --------------------------------------------------------------------------- KL


@pytest.fixture
def moments():
    gen = torch.Generator().manual_seed(0)
    mean = torch.randn(6, 3, generator=gen, dtype=torch.float64)
    log_var = torch.randn(6, 3, generator=gen, dtype=torch.float64) * 0.7
    return mean, log_var


def test_kl_matches_the_closed_form_written_with_standard_deviations(moments):
    mean, log_var = moments
    sigma = np.exp(0.5 * log_var.numpy())
    expected = (np.log(1.0 / sigma) + (sigma ** 2 + mean.numpy() ** 2) / 2.0 - 0.5).sum(axis=1)
    np.testing.assert_allclose(gaussian_kl(mean, log_var).numpy(), expected, rtol=1e-12)
    reference = torch.distributions.kl_divergence(
        torch.distributions.Normal(mean, torch.exp(0.5 * log_var)), torch.distributions.Normal(0.0, 1.0)).sum(1)
    torch.testing.assert_close(gaussian_kl(mean, log_var), reference)


def test_kl_matches_a_monte_carlo_estimate(moments):
    mean, log_var = moments[0][:2], moments[1][:2]
    q = torch.distributions.Normal(mean, torch.exp(0.5 * log_var))
    z = q.sample((200_000,))  # (samples, rows, dims)
    terms = (q.log_prob(z) - torch.distributions.Normal(0.0, 1.0).log_prob(z)).sum(-1)
    estimate, stderr = terms.mean(0), terms.std(0) / math.sqrt(terms.shape[0])
    exact = gaussian_kl(mean, log_var)
    assert torch.all((estimate - exact).abs() < 4 * stderr), (estimate, exact, stderr)


def test_kl_is_zero_exactly_at_the_prior():
    assert gaussian_kl(torch.zeros(4, 5), torch.zeros(4, 5)).abs().max().item() == 0


def test_kl_component_averages_over_the_batch(moments):
    mean, log_var = moments
    kl = KL(weight=2.0)
    value = kl(Posterior(sample=mean, mean=mean, log_var=log_var))
    torch.testing.assert_close(value, gaussian_kl(mean, log_var).mean())  # float64 moments stay float64
    assert kl.weight == 2.0  # the trainer applies the weight; the component returns the divergence


def test_kl_refuses_a_deterministic_encoder_at_build_time():
    encoder = ConvEncoder(dim=3, width=4)
    with pytest.raises(SpecError, match="kl needs an encoder with a Gaussian posterior .* but the encoder is a "
                                        "conv_encoder; use a gaussian_encoder") as info:
        KL().check(encoder, {"encoder": encoder}, "stages[0].trainer.latent_divergence")
    assert info.value.path == "stages[0].trainer.latent_divergence.type"
    gaussian = GaussianEncoder(dim=3, width=4)
    KL().check(gaussian, {"encoder": gaussian}, "stages[0].trainer.latent_divergence")


# --------------------------------------------------------------------------- MMD


def naive_mmd(x: np.ndarray, y: np.ndarray, kernel: str, bandwidths: list[float]) -> float:
    """Gretton et al.'s unbiased MMD^2 with explicit loops over pairs, in float64."""
    def k(a, b):
        d2 = float(((a - b) ** 2).sum())
        return sum(c / (c + d2) if kernel == "imq" else math.exp(-d2 / c) for c in bandwidths)

    n, m = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    return xx + yy - 2 * xy


@pytest.mark.parametrize("kernel", ["imq", "rbf"])
def test_mmd_matches_a_naive_double_loop(kernel):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(9, 4, generator=gen, dtype=torch.float64) + 0.5
    y = torch.randn(7, 4, generator=gen, dtype=torch.float64)
    bandwidths = [0.8, 4.0, 16.0]
    value = mmd_unbiased(x, y, kernel, bandwidths).item()
    assert value == pytest.approx(naive_mmd(x.numpy(), y.numpy(), kernel, bandwidths), rel=1e-10, abs=1e-12)


def test_mmd_is_unbiased_for_equal_distributions_unlike_the_v_statistic():
    gen = torch.Generator().manual_seed(2)
    values, biased = [], []
    for _ in range(400):
        x, y = torch.randn(16, 3, generator=gen), torch.randn(16, 3, generator=gen)
        values.append(mmd_unbiased(x, y, "imq", [6.0]).item())
        both = torch.cat([x, y])
        kernel = 6.0 / (6.0 + torch.cdist(both, both).square())
        biased.append((kernel[:16, :16].mean() + kernel[16:, 16:].mean() - 2 * kernel[:16, 16:].mean()).item())
    values = np.array(values)
    assert abs(values.mean()) < 3 * values.std() / math.sqrt(len(values))
    assert (values < 0).any()  # an unbiased estimate of zero must go below it
    assert np.mean(biased) > 10 * values.std() / math.sqrt(len(values))


def test_mmd_grows_with_the_distance_between_distributions():
    gen = torch.Generator().manual_seed(3)
    y = torch.randn(200, 2, generator=gen)
    shifts = [0.0, 0.5, 1.0, 2.0]
    values = [mmd_unbiased(torch.randn(200, 2, generator=gen) + s, y, "imq", [4.0]).item() for s in shifts]
    assert values == sorted(values) and values[0] < 0.01 < values[1]


def test_mmd_component_compares_codes_with_samples_drawn_from_the_named_prior():
    encoder = ConvEncoder(dim=3, width=4)
    ctx = stage_context({"encoder": encoder, "p": Gaussian(dim=3)})
    mmd = MMD(prior="p", kernel="rbf", scales=[0.5, 2.0])
    mmd.bind(ctx)
    codes = torch.randn(8, 3, generator=torch.Generator().manual_seed(4)) * 2
    value = mmd(Posterior(sample=codes, mean=codes), torch.Generator().manual_seed(5))
    samples = torch.randn(8, 3, generator=torch.Generator().manual_seed(5))
    base = prior_spread(ctx.components["p"])
    expected = naive_mmd(codes.double().numpy(), samples.double().numpy(), "rbf", [0.5 * base, 2.0 * base])
    assert value.item() == pytest.approx(expected, rel=1e-4)


def test_mmd_gradient_pulls_codes_towards_the_prior():
    encoder = ConvEncoder(dim=2, width=4)
    ctx = stage_context({"encoder": encoder, "prior": Gaussian(dim=2)})
    mmd = MMD()
    mmd.bind(ctx)
    codes = (torch.randn(64, 2, generator=torch.Generator().manual_seed(6)) + 3.0).requires_grad_(True)
    mmd(Posterior(sample=codes, mean=codes), torch.Generator().manual_seed(7)).backward()
    assert codes.grad.mean(0).gt(0).all()  # descending the gradient moves the codes' centre towards 0


def test_prior_spread_is_the_mean_squared_distance_of_two_samples():
    assert prior_spread(Gaussian(dim=8)) == pytest.approx(16.0, rel=0.03)  # 2 d for N(0, I_d)
    assert prior_spread(Sphere(dim=8)) == pytest.approx(2.0, rel=0.03)  # E|x - y|^2 = 2 - 2 E<x, y> = 2


def test_mmd_default_bandwidths_are_wae_multiples_of_2_d():
    encoder = ConvEncoder(dim=8, width=4)
    ctx = stage_context({"encoder": encoder, "prior": Gaussian(dim=8)})
    mmd = MMD()
    mmd.bind(ctx)
    assert np.allclose(np.array(mmd._bandwidths) / np.array(mmd.scales), 16.0, rtol=0.03)
    fixed = MMD(base=3.0, scales=[1.0, 2.0])
    fixed.bind(ctx)
    assert fixed._bandwidths == [3.0, 6.0]


def test_mmd_checks_dimensions_and_scales():
    encoder = ConvEncoder(dim=3, width=4)
    with pytest.raises(SpecError, match="prior 'prior' draws 5-d samples but the encoder makes 3-d codes") as info:
        MMD().check(encoder, {"encoder": encoder, "prior": Gaussian(dim=5)}, "stages[0].trainer.latent_divergence")
    assert info.value.path == "stages[0].trainer.latent_divergence.prior"
    with pytest.raises(GenframeError, match="scales must list positive numbers"):
        MMD(scales=[1.0, 0.0])
    with pytest.raises(ValueError, match="at least two samples"):
        mmd_unbiased(torch.zeros(1, 2), torch.zeros(3, 2), "imq", [1.0])


def test_registry():
    registry = create_registry()
    assert registry.get("latent_divergence", "kl") is KL
    assert registry.get("latent_divergence", "mmd") is MMD
    assert MMD().config() == {"type": "mmd", "prior": "prior", "weight": 10.0, "kernel": "imq",
                              "scales": [0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0], "base": None}
