"""Time-conditioned U-Net: shapes for 28 to 64 px, zero start, conditioning on t and labels, size checks."""

from __future__ import annotations

import pytest
import torch

import genframe
from genframe import GenframeError
from genframe.components.registry import create_registry
from genframe_plugins.networks import unet as unet_module
from genframe_plugins.networks.unet import UNet, timestep_embedding


def ctx(channels: int, image_size: int) -> genframe.BuildContext:
    return genframe.BuildContext(num_examples=10, channels=channels, image_size=image_size,
                                 device=torch.device("cpu"))


def built(channels: int = 1, image_size: int = 28, **fields) -> UNet:
    torch.manual_seed(0)
    net = UNet(**{"width": 8, "blocks": 1, **fields})
    net.setup(ctx(channels, image_size))
    return net


def perturb_head(net: UNet) -> None:
    """Give the zero-initialised last convolution random weights, so the output depends on the input."""
    with torch.no_grad():
        net.head[-1].weight.normal_(0, 0.1)
        net.head[-1].bias.normal_(0, 0.1)


@pytest.mark.parametrize("channels, size, fields", [
    (1, 28, {}),
    (3, 32, {"attention": True}),
    (3, 48, {"multipliers": [1, 2, 2]}),
    (3, 64, {"multipliers": [1, 1, 2, 2], "blocks": 2, "num_classes": 4}),
])
def test_output_has_the_input_shape(channels, size, fields):
    net = built(channels, size, **fields)
    x = torch.randn(2, channels, size, size)
    out = net(x, torch.rand(2), torch.tensor([0, 1]) if "num_classes" in fields else None)
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_untrained_network_outputs_zero():
    net = built(3, 32, num_classes=3, attention=True)
    out = net(torch.randn(4, 3, 32, 32), torch.rand(4), torch.tensor([0, 1, 2, 3]))
    assert torch.equal(out, torch.zeros_like(out))


def test_output_depends_on_time_and_label():
    net = built(1, 28, num_classes=3)
    perturb_head(net)
    x = torch.randn(1, 1, 28, 28).expand(4, -1, -1, -1)
    with torch.no_grad():
        by_time = net(x, torch.tensor([0.0, 0.25, 0.5, 1.0]), torch.zeros(4, dtype=torch.long))
        by_label = net(x, torch.full((4,), 0.5), torch.tensor([0, 1, 2, 3]))  # 3 = num_classes: no class
        unlabelled = net(x[:1], torch.tensor([0.5]))
    for out in (by_time, by_label):  # clearly, not by rounding: the embedding survives the group norms
        assert all((out[0] - out[i]).abs().max() > 1e-3 for i in range(1, 4))
    assert torch.allclose(unlabelled[0], by_label[3], atol=1e-5)  # no labels given: the "no class" row
    assert net.class_embedding.num_embeddings == 4


def test_a_single_time_is_broadcast():
    net = built(1, 28)
    perturb_head(net)
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(net(x, torch.tensor(0.3)), net(x, torch.full((3,), 0.3)))


def test_gradients_reach_the_first_convolution():
    net = built(3, 32, attention=True)
    perturb_head(net)
    net(torch.randn(2, 3, 32, 32), torch.rand(2)).square().mean().backward()
    assert net.stem.weight.grad is not None and net.stem.weight.grad.abs().sum() > 0
    assert net.time_mlp[0].weight.grad.abs().sum() > 0


def test_groups_span_several_channels():
    assert [unet_module.group_norm(c).num_groups for c in (1, 3, 8, 12, 64, 128, 256, 9)] == [1, 1, 2, 3, 16, 32, 32, 1]


def test_timestep_embedding_distinguishes_nearby_times():
    emb = timestep_embedding(torch.tensor([0.0, 0.001, 1.0]), 9)
    assert emb.shape == (3, 9) and torch.equal(emb[:, -1], torch.zeros(3))
    assert (emb[0] - emb[1]).abs().max() > 0.1


@pytest.mark.parametrize("size, multipliers", [(30, [1, 2, 2]), (28, [1, 2, 2, 2])])
def test_sizes_that_do_not_halve_are_refused(size, multipliers):
    with pytest.raises(GenframeError, match="image_size") as info:
        built(1, size, multipliers=multipliers)
    assert str(multipliers) in str(info.value)


def test_explicit_shape_overrides_the_data_and_bad_multipliers_are_refused():
    torch.manual_seed(0)
    net = UNet(width=8, blocks=1, channels=3, image_size=32)
    net.setup(ctx(1, 30))
    assert net(torch.randn(1, 3, 32, 32), torch.rand(1)).shape == (1, 3, 32, 32)
    with pytest.raises(GenframeError, match="multipliers"):
        UNet(multipliers=[])
    with pytest.raises(GenframeError, match="multipliers"):
        UNet(multipliers=[1, 0])


def test_registered_as_a_time_network():
    registry = create_registry([unet_module], entry_points=False)
    cls = registry.get("time_network", "unet")
    assert cls is UNet and issubclass(cls, genframe.TimeNetwork)
    assert UNet().config() == {"type": "unet", "width": 64, "multipliers": [1, 2, 2], "blocks": 2,
                               "attention": False, "num_classes": None, "channels": None, "image_size": None,
                               "dropout": 0.0}
