"""Priors: shapes, reproducibility with a generator, and the moments of each distribution."""

from __future__ import annotations

import math

import pytest
import torch

from genframe.registry import create_registry
from genframe_plugins.priors import Gaussian, Sphere, Uniform

PRIORS = [Gaussian, Uniform, Sphere]


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


def test_default_dim():
    assert Gaussian().dim == 64 and Gaussian().sample(2).shape == (2, 64)


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
    for cls, name in zip(PRIORS, ("gaussian", "uniform", "sphere")):
        assert registry.get("prior", name) is cls
