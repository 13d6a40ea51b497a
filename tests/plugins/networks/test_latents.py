"""GLO code table: PCA initialisation against a NumPy SVD, projections, gradients and re-projection."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genframe import GenframeError
from genframe.training.context import BuildContext
from genframe.components.registry import create_registry
from genframe_plugins.networks.latents import LatentCodes, principal_scores, project


def random_images(n: int, side: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 1, side, side), generator=torch.Generator().manual_seed(seed),
                         dtype=torch.uint8)


def built(images: torch.Tensor | None, seed: int = 0, num_examples: int | None = None, **fields) -> LatentCodes:
    codes = LatentCodes(**fields)
    n = images.shape[0] if images is not None else num_examples
    side = images.shape[-1] if images is not None else 4
    codes.setup(BuildContext(num_examples=n, channels=1, image_size=side, device=torch.device("cpu"),
                             seed=seed, images=images))
    return codes


def svd_scores(images: torch.Tensor, k: int) -> np.ndarray:
    """Reference PCA: the images as the models see them ([-1, 1]), centred, through NumPy's SVD."""
    x = images.flatten(1).double().numpy() * (2 / 255) - 1
    u, s, _ = np.linalg.svd(x - x.mean(axis=0), full_matrices=False)
    return u[:, :k] * s[:k]


def assert_equal_up_to_sign(actual: np.ndarray, reference: np.ndarray, atol: float) -> None:
    signs = np.sign((actual * reference).sum(axis=0))
    assert np.all(signs != 0)
    np.testing.assert_allclose(actual * signs, reference, atol=atol)


@pytest.mark.parametrize("n, side", [(40, 5), (12, 6)])  # more images than pixels, and fewer
def test_pca_init_matches_numpy_svd(n, side):
    images = random_images(n, side)
    codes = built(images, dim=8, projection="none").codes.detach().double().numpy()
    assert codes.shape == (n, 8)
    assert_equal_up_to_sign(codes, svd_scores(images, 8), atol=1e-4)


def test_pca_init_on_the_sphere_is_the_normalised_scores():
    images = random_images(30, 4)
    codes = built(images, dim=6).codes.detach()
    assert torch.allclose(codes.norm(dim=1), torch.ones(30), atol=1e-6)
    reference = svd_scores(images, 6)
    assert_equal_up_to_sign(codes.double().numpy(), reference / np.linalg.norm(reference, axis=1, keepdims=True),
                            atol=1e-5)


def test_pca_with_fewer_pixels_than_dim_pads_with_seeded_noise():
    images = random_images(30, 2)  # 4 pixels, 8-dimensional codes
    codes = built(images, seed=3, dim=8, projection="none").codes.detach()
    assert_equal_up_to_sign(codes[:, :4].double().numpy(), svd_scores(images, 4), atol=1e-4)
    padding = codes[:, 4:]
    # Noise at the average scale of the four components.
    assert 0.5 < padding.std().item() / codes[:, :4].std(dim=0).mean().item() < 1.5
    assert torch.equal(built(images, seed=3, dim=8, projection="none").codes, built(
        images, seed=3, dim=8, projection="none").codes)
    assert not torch.equal(padding, built(images, seed=4, dim=8, projection="none").codes[:, 4:])


def test_principal_scores_of_identical_images_pad_with_unit_noise():
    images = torch.full((5, 1, 1, 1), 7, dtype=torch.uint8)  # one pixel, no variance at all
    scores = principal_scores(images, 3, torch.Generator().manual_seed(0))
    assert scores.shape == (5, 3)
    assert scores[:, 0].abs().max().item() == 0 and scores[:, 1:].abs().min().item() > 0


def test_random_init_is_seeded_gaussian_then_projected():
    images = random_images(20, 4)
    plain = built(images, seed=5, dim=6, init="random", projection="none").codes.detach()
    expected = torch.randn(20, 6, generator=torch.Generator().manual_seed(5))
    assert torch.equal(plain, expected)
    sphere = built(images, seed=5, dim=6, init="random").codes.detach()
    assert torch.allclose(sphere, expected / expected.norm(dim=1, keepdim=True))


def test_sampling_only_setup_creates_a_zero_table_of_the_right_shape():
    codes = built(None, num_examples=11, dim=5)
    assert codes.codes.shape == (11, 5) and codes.codes.abs().max().item() == 0
    assert codes.state_dict()["codes"].shape == (11, 5)


def test_project_sphere_ball_none():
    x = torch.tensor([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]])
    assert torch.allclose(project(x, "sphere")[:2], torch.tensor([[0.6, 0.8], [0.6, 0.8]]))
    assert torch.equal(project(x, "sphere")[2], torch.zeros(2))  # no direction to keep: stays finite
    assert torch.allclose(project(x, "ball"), torch.tensor([[0.6, 0.8], [0.3, 0.4], [0.0, 0.0]]))
    assert project(x, "none") is x
    with pytest.raises(GenframeError, match="unknown kind 'cube'; allowed: sphere, ball, none"):
        project(x, "cube")


def test_project_norms_on_random_codes():
    x = torch.randn(1000, 16, generator=torch.Generator().manual_seed(0)) * 3
    assert torch.allclose(project(x, "sphere").norm(dim=1), torch.ones(1000), atol=1e-6)
    ball = project(x * torch.rand(1000, 1, generator=torch.Generator().manual_seed(1)) * 0.5, "ball")
    norms = ball.norm(dim=1)
    assert norms.max().item() <= 1 + 1e-6 and (norms < 0.99).any()


def test_ball_projection_leaves_short_codes_alone():
    images = random_images(25, 5)
    raw = built(images, dim=4, projection="none").codes.detach()
    ball = built(images, dim=4, projection="ball").codes.detach()
    norms = raw.norm(dim=1)
    assert (norms > 1).any()
    assert torch.allclose(ball[norms > 1].norm(dim=1), torch.ones(int((norms > 1).sum())), atol=1e-6)
    assert torch.equal(ball[norms <= 1], raw[norms <= 1])


def test_encode_gradients_and_after_update_reprojection():
    images = random_images(10, 4)
    codes = built(images, dim=3)
    idx = torch.tensor([4, 1, 4])
    batch = codes.encode(images[idx].float(), idx)
    assert torch.equal(batch, codes.codes[idx])
    batch.sum().backward()
    grad = codes.codes.grad
    assert grad[4].tolist() == [2.0, 2.0, 2.0] and grad[1].tolist() == [1.0, 1.0, 1.0]
    assert grad[0].abs().max().item() == 0
    with torch.no_grad():
        codes.codes -= 0.5 * grad
    assert abs(codes.codes[4].norm().item() - 1) > 0.1
    codes.after_update()
    assert torch.allclose(codes.codes.norm(dim=1), torch.ones(10), atol=1e-6)
    assert codes.codes.requires_grad and isinstance(codes.codes, torch.nn.Parameter)


def test_after_update_without_projection_changes_nothing():
    codes = built(random_images(6, 3), dim=2, projection="none")
    before = codes.codes.detach().clone()
    codes.after_update()
    assert torch.equal(codes.codes, before)


def test_encode_all_returns_a_snapshot_of_the_table():
    images = random_images(12, 4)
    codes = built(images, dim=5)
    table = codes.encode_all(images)
    assert torch.equal(table, codes.codes) and not table.requires_grad
    with torch.no_grad():
        codes.codes.add_(1.0)
    assert not torch.equal(table, codes.codes)
    with pytest.raises(GenframeError, match="holds codes for 12 images, asked for 3"):
        codes.encode_all(images[:3])


def test_posterior_without_noise_is_the_code_itself():
    codes = built(random_images(10, 4), dim=6)
    indices = torch.tensor([3, 1, 3])
    posterior = codes.posterior(torch.zeros(3, 1, 4, 4), indices, generator=torch.Generator().manual_seed(0))
    assert torch.equal(posterior.sample, codes.codes[indices]) and torch.equal(posterior.mean, codes.codes[indices])
    assert posterior.log_var is None


@pytest.mark.parametrize("noise", [0.05, 0.1])
def test_posterior_noise_is_seeded_projected_and_at_the_expected_angle(noise):
    """A unit code plus N(0, noise^2 I) in d dimensions has squared norm about 1 + d noise^2, so the
    projected draw keeps a cosine of about 1 / sqrt(1 + d noise^2) with its code."""
    dim, n = 64, 4000
    codes = built(None, num_examples=n, dim=dim, init="random", noise=noise)
    codes.codes.data.copy_(project(torch.randn(n, dim, generator=torch.Generator().manual_seed(1)), "sphere"))
    indices = torch.arange(n)
    images = torch.zeros(n, 1, 4, 4)
    first = codes.posterior(images, indices, generator=torch.Generator().manual_seed(7))
    again = codes.posterior(images, indices, generator=torch.Generator().manual_seed(7))
    assert torch.equal(first.sample, again.sample) and torch.equal(first.mean, codes.codes)
    eps = torch.randn(n, dim, generator=torch.Generator().manual_seed(7))
    assert torch.allclose(first.sample, project(codes.codes + noise * eps, "sphere"), atol=1e-6)
    assert torch.allclose(first.sample.norm(dim=1), torch.ones(n), atol=1e-5)
    cosine = (first.sample * codes.codes).sum(dim=1).mean().item()
    assert cosine == pytest.approx(1 / (1 + dim * noise ** 2) ** 0.5, abs=0.01)


def test_posterior_noise_reaches_the_code_table_gradient():
    codes = built(random_images(10, 4), dim=6, noise=0.1)
    posterior = codes.posterior(torch.zeros(4, 1, 4, 4), torch.arange(4), generator=torch.Generator().manual_seed(0))
    posterior.sample.sum().backward()
    assert codes.codes.grad[:4].abs().sum() > 0 and codes.codes.grad[4:].abs().sum() == 0


def test_config_and_registry():
    assert LatentCodes().config() == {"type": "latent_codes", "dim": 64, "projection": "sphere", "init": "pca",
                                      "noise": 0.0}
    assert create_registry().get("encoder", "latent_codes") is LatentCodes
