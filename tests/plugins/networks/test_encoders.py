"""Convolutional encoders: sizes from the data, independence in eval mode, the VAE's reparameterised draw."""

from __future__ import annotations

import pytest
import torch

from genframe import GenframeError
from genframe.training.context import BuildContext
from genframe.components.registry import create_registry
from genframe_plugins.networks.encoders import ConvEncoder, GaussianEncoder
from genframe_plugins.networks.dcgan import DCGANCritic


def built(cls, side: int = 28, channels: int = 1, **fields):
    encoder = cls(**fields)
    encoder.setup(BuildContext(num_examples=4, channels=channels, image_size=side, device=torch.device("cpu")))
    return encoder


@pytest.mark.parametrize("side, channels", [(28, 1), (32, 3), (16, 1), (64, 3)])
def test_codes_have_the_spec_size_for_any_supported_image(side, channels):
    encoder = built(ConvEncoder, side, channels, dim=7, width=8)
    x = torch.rand(5, channels, side, side) * 2 - 1
    assert encoder.encode(x, torch.arange(5)).shape == (5, 7)


def test_the_encoder_mirrors_the_dcgan_critic():
    encoder = built(ConvEncoder, 28, dim=5, width=8, norm="none")
    critic = DCGANCritic(width=8)
    critic.setup(BuildContext(num_examples=4, channels=1, image_size=28, device=torch.device("cpu")))
    convs = [m for m in encoder.net if isinstance(m, torch.nn.Conv2d)]
    critic_convs = [m for m in critic.net if isinstance(m, torch.nn.Conv2d)]
    assert [c.weight.shape for c in convs] == [c.weight.shape for c in critic_convs]  # 1 -> 8 -> 16, 28 -> 7
    assert encoder.net[-1].weight.shape == (5, 16 * 7 * 7)


def test_batch_norm_in_eval_mode_encodes_each_image_independently():
    encoder = built(ConvEncoder, 16, dim=4, width=4)
    x = torch.randn(6, 1, 16, 16)
    encoder.train()
    encoder.encode(x * 3 + 1, torch.arange(6))  # moves the running statistics away from their start
    encoder.eval()
    with torch.no_grad():
        together = encoder.encode(x, torch.arange(6))
        alone = torch.cat([encoder.encode(x[i:i + 1], torch.arange(1)) for i in range(6)])
    torch.testing.assert_close(together, alone)


def test_deterministic_encoder_posterior_is_a_point_mass():
    encoder = built(ConvEncoder, 16, dim=3, width=4)
    x = torch.randn(2, 1, 16, 16)
    posterior = encoder.posterior(x, torch.arange(2), generator=torch.Generator().manual_seed(0))
    assert posterior.log_var is None
    assert torch.equal(posterior.sample, posterior.mean)
    assert not encoder.gaussian_posterior and encoder.encodes_new_images


def test_gaussian_encoder_draws_mean_plus_scaled_noise_from_the_given_generator():
    encoder = built(GaussianEncoder, 16, dim=3, width=4)
    assert encoder.gaussian_posterior and encoder.net[-1].out_features == 6
    x = torch.randn(5, 1, 16, 16)
    encoder.eval()
    posterior = encoder.posterior(x, torch.arange(5), generator=torch.Generator().manual_seed(7))
    raw = encoder.net(x)
    mean, log_var = raw[:, :3], raw[:, 3:]
    eps = torch.randn(5, 3, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(posterior.mean, mean)
    torch.testing.assert_close(posterior.log_var, log_var)
    torch.testing.assert_close(posterior.sample, mean + torch.exp(0.5 * log_var) * eps)
    torch.testing.assert_close(encoder.encode(x, torch.arange(5)), mean)  # the code of an image is the mean


def test_gradients_reach_the_encoder_through_the_draw():
    encoder = built(GaussianEncoder, 16, dim=2, width=4)
    posterior = encoder.posterior(torch.randn(3, 1, 16, 16), torch.arange(3), generator=torch.Generator())
    posterior.sample.square().sum().backward()
    last = encoder.net[-1].weight.grad
    assert last[:2].abs().sum() > 0 and last[2:].abs().sum() > 0  # both the mean and the log-variance rows


def test_unsupported_image_size_is_one_line():
    with pytest.raises(GenframeError, match="image_size 22 is not supported"):
        built(ConvEncoder, 22)


def test_config_and_registry():
    assert ConvEncoder().config() == {"type": "conv_encoder", "dim": 64, "channels": None, "image_size": None,
                                      "width": 64, "norm": "batch", "init": "dcgan"}
    registry = create_registry()
    assert registry.get("encoder", "conv_encoder") is ConvEncoder
    assert registry.get("encoder", "gaussian_encoder") is GaussianEncoder
