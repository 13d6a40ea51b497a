"""Priors: shapes, reproducibility with a generator, and the moments of each distribution (fitted ones too)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from genframe import GenframeError
from genframe.components.registry import create_registry
from genframe_plugins.networks.priors import FittedGaussian, Gaussian, Sphere, Uniform

PRIORS = [Gaussian, Uniform, Sphere, FittedGaussian]


@pytest.mark.parametrize("cls", PRIORS)
def test_shape_dtype_and_reproducibility(cls):
    prior = cls(dim=5)
    a = prior.sample(7, generator=torch.Generator().manual_seed(3))
    b = prior.sample(7, generator=torch.Generator().manual_seed(3))
    c = prior.sample(7, generator=torch.Generator().manual_seed(4))
    assert a.shape == (7, 5) and a.dtype == torch.float32 and a.device.type == "cpu"
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("cls", PRIORS)
def test_zero_samples(cls):
    assert cls(dim=3).sample(0).shape == (0, 3)


@pytest.mark.parametrize("cls", PRIORS)
def test_dim_must_be_positive(cls):
    with pytest.raises(ValueError, match="dim"):
        cls(dim=0)


@pytest.mark.parametrize("cls", [Gaussian, Uniform, Sphere])
def test_without_a_dim_a_prior_waits_for_the_sampler_chain_to_size_it(cls):
    assert cls().dim is None
    with pytest.raises(GenframeError, match="dim is not set"):
        cls().sample(2)


def test_gaussian_moments():
    x = Gaussian(dim=8).sample(50_000, generator=torch.Generator().manual_seed(0))
    assert x.mean().abs().item() < 0.01
    assert abs(x.std().item() - 1.0) < 0.01
    cov = torch.cov(x.T)
    assert (cov - torch.eye(8)).abs().max().item() < 0.03


def test_uniform_range_and_moments():
    x = Uniform(dim=8).sample(50_000, generator=torch.Generator().manual_seed(0))
    assert x.min().item() >= -1.0 and x.max().item() <= 1.0
    assert x.min().item() < -0.999 and x.max().item() > 0.999
    assert x.mean().abs().item() < 0.01
    assert abs(x.var().item() - 1.0 / 3.0) < 0.01  # variance of U(-1, 1)


def test_sphere_unit_norm_and_uniform_directions():
    x = Sphere(dim=3).sample(50_000, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(x.norm(dim=1), torch.ones(50_000), atol=1e-6)
    assert x.mean(dim=0).abs().max().item() < 0.01
    # On the 2-sphere each coordinate is uniform on [-1, 1] (Archimedes), so its variance is 1/3.
    assert (x.var(dim=0) - 1.0 / 3.0).abs().max().item() < 0.01
    assert abs(x[:, 0].abs().mean().item() - 0.5) < 0.01


def test_sphere_directions_follow_the_gaussian_draw():
    z = Gaussian(dim=4).sample(6, generator=torch.Generator().manual_seed(9))
    s = Sphere(dim=4).sample(6, generator=torch.Generator().manual_seed(9))
    assert torch.allclose(s, z / z.norm(dim=1, keepdim=True), atol=1e-7)


def test_sphere_in_high_dimension_has_coordinates_of_variance_one_over_dim():
    dim = 64
    x = Sphere(dim=dim).sample(20_000, generator=torch.Generator().manual_seed(1))
    assert abs(x.var().item() - 1.0 / dim) < 0.05 / dim
    assert math.isclose(x.pow(2).sum(dim=1).mean().item(), 1.0, rel_tol=1e-6)


def test_registry_lists_priors():
    registry = create_registry()
    for cls, name in zip(PRIORS, ("gaussian", "uniform", "sphere", "fitted_gaussian")):
        assert registry.get("prior", name) is cls


def correlated_codes(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(codes, their true mean, their true covariance) from a known 3-d Gaussian with correlations."""
    mean = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    factor = torch.tensor([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [-0.3, 0.2, 0.4]], dtype=torch.float64)
    z = torch.randn(n, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return (mean + z @ factor.T).float(), mean, factor @ factor.T


def test_fitted_gaussian_takes_the_sample_moments_of_the_codes():
    codes, _, _ = correlated_codes(500)
    prior = FittedGaussian(dim=3, ridge=0.0)
    nll = prior.fit(codes)
    x = codes.double()
    torch.testing.assert_close(prior.mean.double(), x.mean(0), rtol=0, atol=1e-6)
    covariance = prior.scale_tril.double() @ prior.scale_tril.double().T
    torch.testing.assert_close(covariance, torch.from_numpy(np.cov(x.numpy(), rowvar=False)), rtol=1e-5, atol=1e-6)
    reference = -torch.distributions.MultivariateNormal(x.mean(0), covariance).log_prob(x).mean()
    assert nll.item() == pytest.approx(reference.item(), rel=1e-5)


def test_fitted_gaussian_samples_have_the_fitted_moments():
    codes, mean, covariance = correlated_codes(20_000)
    prior = FittedGaussian(dim=3)
    prior.fit(codes)
    samples = prior.sample(50_000, generator=torch.Generator().manual_seed(1)).double()
    assert (samples.mean(0) - mean).abs().max().item() < 0.03
    assert (torch.cov(samples.T) - covariance).abs().max().item() < 0.03


def test_fitted_gaussian_is_standard_normal_until_fitted_and_its_fit_is_in_the_state_dict():
    prior = FittedGaussian(dim=3)
    unfitted = prior.sample(4, generator=torch.Generator().manual_seed(2))
    assert torch.equal(unfitted, torch.randn(4, 3, generator=torch.Generator().manual_seed(2)))
    prior.fit(correlated_codes(100)[0])
    restored = FittedGaussian(dim=3)
    restored.load_state_dict(prior.state_dict())  # what checkpoints carry to genframe sample
    assert set(prior.state_dict()) == {"mean", "scale_tril"}
    assert torch.equal(restored.sample(5, generator=torch.Generator().manual_seed(3)),
                       prior.sample(5, generator=torch.Generator().manual_seed(3)))


def test_fitted_gaussian_projects_its_samples_like_the_codes():
    prior = FittedGaussian(dim=4, projection="sphere")
    prior.fit(torch.nn.functional.normalize(torch.randn(300, 4, generator=torch.Generator().manual_seed(4)), dim=1))
    assert torch.allclose(prior.sample(100).norm(dim=1), torch.ones(100), atol=1e-5)


def test_fitted_gaussian_errors_are_one_line():
    with pytest.raises(GenframeError, match="needs at least 2 codes of size 3 to fit, got shape \\(5, 2\\)"):
        FittedGaussian(dim=3).fit(torch.zeros(5, 2))
    flat = torch.zeros(10, 3)
    flat[:, 0] = torch.arange(10.0)  # variance along one axis only
    with pytest.raises(GenframeError, match="covariance is singular; raise ridge"):
        FittedGaussian(dim=3, ridge=0.0).fit(flat)
    FittedGaussian(dim=3, ridge=1e-6).fit(flat)  # the default ridge keeps it positive definite
