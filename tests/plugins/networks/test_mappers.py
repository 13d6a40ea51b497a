"""MLP latent mapper: GLANN's default architecture, parameter counts by hand, and its options."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from genframe import GenframeError
from genframe.training.context import BuildContext
from genframe.components.registry import create_registry
from genframe_plugins.networks.mappers import MLPMapper

CTX = BuildContext(num_examples=10, channels=1, image_size=28, device=torch.device("cpu"))


def built(**fields) -> MLPMapper:
    mapper = MLPMapper(**fields)
    mapper.setup(CTX)
    return mapper


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_glann_default_architecture():
    m = built()
    layers = list(m.net)
    assert [type(layer) for layer in layers] == [nn.Linear, nn.BatchNorm1d, nn.ReLU] * 2 + [nn.Linear]
    assert [(layer.in_features, layer.out_features) for layer in layers if isinstance(layer, nn.Linear)] == \
        [(32, 128), (128, 128), (128, 64)]
    # Hidden linears have no bias (batch norm shifts instead); the output layer keeps its bias.
    expected = 32 * 128 + 2 * 128 + 128 * 128 + 2 * 128 + 128 * 64 + 64
    assert n_params(m) == expected == 29248


def test_forward_shape_and_batch_dependence():
    torch.manual_seed(0)
    m = built(in_dim=5, out_dim=3, hidden=[7])
    noise = torch.randn(9, 5)
    out = m(noise)
    assert out.shape == (9, 3) and torch.isfinite(out).all()
    assert not torch.allclose(m(noise)[:2], m(noise[:2]))  # batch statistics in training mode
    m.eval()
    assert torch.allclose(m(noise)[:2], m(noise[:2]), atol=1e-6)  # running statistics when sampling


def test_without_batch_norm_and_with_leaky_relu():
    m = built(in_dim=4, out_dim=2, hidden=[6, 5], batch_norm=False, activation="leaky_relu")
    assert not any(isinstance(layer, nn.BatchNorm1d) for layer in m.net)
    leaky = [layer for layer in m.net if isinstance(layer, nn.LeakyReLU)]
    assert len(leaky) == 2 and leaky[0].negative_slope == 0.2
    assert n_params(m) == (4 * 6 + 6) + (6 * 5 + 5) + (5 * 2 + 2)
    with torch.no_grad():
        for layer in m.net:
            if isinstance(layer, nn.Linear):
                layer.weight.copy_(torch.eye(layer.out_features, layer.in_features))
                layer.bias.zero_()
    # Identity-like weights: negative inputs pass the two leaky layers scaled by 0.2 * 0.2.
    out = m(torch.tensor([[-1.0, 2.0, -3.0, 4.0]]))
    assert torch.allclose(out, torch.tensor([[-0.04, 2.0]]))


def test_no_hidden_layers_is_a_linear_map():
    m = built(in_dim=3, out_dim=2, hidden=[])
    assert len(m.net) == 1 and n_params(m) == 3 * 2 + 2
    x = torch.randn(4, 3)
    assert torch.allclose(m(x), x @ m.net[0].weight.T + m.net[0].bias)


def test_gradients_reach_every_parameter():
    m = built()
    m(torch.randn(8, 32)).pow(2).mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())


@pytest.mark.parametrize("hidden", [[0], [128, -1]])
def test_hidden_widths_must_be_positive(hidden):
    with pytest.raises(GenframeError, match=r"mlp_mapper: hidden must list layer widths >= 1"):
        MLPMapper(hidden=hidden)


def test_output_bias_can_be_dropped_as_in_the_official_glann_mapper():
    ctx = BuildContext(num_examples=4, channels=1, image_size=8, device=torch.device("cpu"), seed=0)
    with_bias, without = MLPMapper(hidden=[8]), MLPMapper(hidden=[8], output_bias=False)
    with_bias.setup(ctx)
    without.setup(ctx)
    assert with_bias.net[-1].bias is not None and without.net[-1].bias is None
    assert torch.equal(without(torch.zeros(3, 32)), torch.zeros(3, 64))  # batch norm'd zeros, then no offset


def test_bounds_and_config():
    with pytest.raises(ValueError, match="in_dim"):
        MLPMapper(in_dim=0)
    assert MLPMapper().config() == {"type": "mlp_mapper", "in_dim": 32, "out_dim": 64, "hidden": [128, 128],
                                    "batch_norm": True, "activation": "relu", "output_bias": True}
    assert MLPMapper().hidden is not MLPMapper().hidden  # no shared mutable default


def test_registry_lists_mapper():
    assert create_registry().get("latent_mapper", "mlp_mapper") is MLPMapper
