"""DCGAN generator and critic: size plans, parameter counts worked out by hand, ranges and initialisation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from genframe import GenframeError
from genframe.training.context import BuildContext
from genframe.components.registry import create_registry
from genframe_plugins.networks.dcgan import DCGANCritic, DCGANGenerator, dcgan_init, halving_plan, stage_widths
from genframe_plugins.networks.resnets import DownBlock, ResNetCritic, ResNetGenerator, UpBlock


def ctx(channels: int = 1, image_size: int = 32) -> BuildContext:
    return BuildContext(num_examples=10, channels=channels, image_size=image_size, device=torch.device("cpu"))


def built(module, **kwargs):
    module.setup(ctx(**kwargs))
    return module


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("size, plan", [(6, (3, 1)), (8, (4, 1)), (14, (7, 1)), (16, (4, 2)), (24, (6, 2)),
                                        (28, (7, 2)), (32, (4, 3)), (48, (6, 3)), (64, (4, 4)), (128, (4, 5))])
def test_halving_plan(size, plan):
    assert halving_plan(size) == plan


@pytest.mark.parametrize("size", [2, 4, 5, 7, 9, 100, 36 * 5 + 1])
def test_unsupported_sizes_name_image_size(size):
    with pytest.raises(GenframeError, match=f"image_size {size} is not supported"):
        halving_plan(size)


def test_stage_widths_double_towards_the_base():
    assert stage_widths(64, 4) == [512, 256, 128, 64]
    assert stage_widths(8, 1) == [8]


def test_generator_parameter_count_by_hand():
    g = built(DCGANGenerator(latent_dim=8, width=8), image_size=32)
    # 32 = 4 * 2**3: widths 32, 16, 8 at 4x4, 8x8, 16x16, then the output layer to 32x32.
    linear = 8 * (32 * 4 * 4)            # no bias: batch norm follows
    bn = 2 * (32 + 16 + 8)
    convs = 32 * 16 * 16 + 16 * 8 * 16   # ConvTranspose2d(in, out, 4): in * out * 4 * 4, no bias
    out = 8 * 1 * 16 + 1                 # last layer keeps its bias
    assert n_params(g) == linear + bn + convs + out == 14577


def test_critic_parameter_count_by_hand():
    c = built(DCGANCritic(width=8), image_size=32)
    convs = (1 * 8 * 16 + 8) + (8 * 16 * 16 + 16) + (16 * 32 * 16 + 32)  # biases kept without norm
    linear = 32 * 4 * 4 + 1
    assert n_params(c) == convs + linear == 10937
    with_bn = built(DCGANCritic(width=8, norm="batch"), image_size=32)
    # Normalised convolutions drop their bias; batch norm adds a scale and a shift per channel.
    assert n_params(with_bn) == 10937 - 16 - 32 + 2 * (16 + 32)


@pytest.mark.parametrize("channels, size", [(1, 28), (3, 32), (3, 24), (1, 16), (1, 6)])
def test_generator_output_shape_and_range(channels, size):
    torch.manual_seed(0)
    g = built(DCGANGenerator(latent_dim=16, width=8), channels=channels, image_size=size)
    with torch.no_grad():
        g.net[-2].weight.mul_(1000)  # pre-activations far beyond Tanh's linear range
    x = g(torch.randn(5, 16))
    assert x.shape == (5, channels, size, size)
    assert x.min().item() >= -1.0 and x.max().item() <= 1.0
    assert x.abs().max().item() > 0.99
    g.eval()
    y = g(torch.randn(5, 16))
    assert y.abs().max().item() <= 1.0 and y.std().item() > 0


def test_explicit_fields_override_the_data():
    g = built(DCGANGenerator(latent_dim=4, width=4, channels=3, image_size=16), channels=1, image_size=32)
    assert g(torch.randn(2, 4)).shape == (2, 3, 16, 16)
    c = built(DCGANCritic(width=4, channels=3, image_size=16), channels=1, image_size=32)
    assert c(torch.randn(2, 3, 16, 16)).shape == (2,)


def test_generator_accepts_latent_maps():
    g = built(DCGANGenerator(latent_dim=4, width=4), image_size=16)
    g.eval()
    z = torch.randn(3, 4)
    assert torch.equal(g(z), g(z.view(3, 4, 1, 1)))


@pytest.mark.parametrize("norm", ["none", "batch", "layer"])
@pytest.mark.parametrize("channels, size", [(1, 28), (3, 32), (1, 8)])
def test_critic_scores_one_number_per_image(norm, channels, size):
    c = built(DCGANCritic(width=8, norm=norm), channels=channels, image_size=size)
    x = torch.rand(4, channels, size, size) * 2 - 1
    scores = c(x)
    assert scores.shape == (4,) and torch.isfinite(scores).all()
    scores.sum().backward()
    assert all(p.grad is not None for p in c.parameters())


def test_critic_norm_layers_skip_the_first_convolution():
    for norm, kind in (("batch", nn.BatchNorm2d), ("layer", nn.GroupNorm)):
        c = built(DCGANCritic(width=8, norm=norm), image_size=64)  # 4 convolutions
        layers = list(c.net)
        norms = [m for m in layers if isinstance(m, kind)]
        assert [m.num_features if norm == "batch" else m.num_channels for m in norms] == [16, 32, 64]
        assert isinstance(layers[0], nn.Conv2d) and isinstance(layers[1], nn.LeakyReLU)
        if norm == "layer":
            assert all(m.num_groups == 1 for m in norms)
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) for m in built(DCGANCritic(), image_size=64).modules())


def test_layer_norm_keeps_images_independent_and_batch_norm_does_not():
    torch.manual_seed(0)
    x = torch.rand(6, 1, 16, 16) * 2 - 1
    for norm in ("none", "layer"):
        c = built(DCGANCritic(width=4, norm=norm), image_size=16)
        assert torch.allclose(c(x)[:2], c(x[:2]), atol=1e-6)
    c = built(DCGANCritic(width=4, norm="batch"), image_size=16)
    assert not torch.allclose(c(x)[:2], c(x[:2]), atol=1e-4)


def test_layer_norm_normalises_over_channels_and_pixels():
    c = built(DCGANCritic(width=4, norm="layer", init="default"), image_size=16)
    hidden = c.net[:4](torch.rand(3, 1, 16, 16))  # conv, lrelu, conv, GroupNorm
    flat = hidden.flatten(1)
    assert torch.allclose(flat.mean(dim=1), torch.zeros(3), atol=1e-5)
    assert torch.allclose(flat.var(dim=1, unbiased=False), torch.ones(3), atol=1e-3)


def test_dcgan_init_statistics():
    torch.manual_seed(0)
    g = built(DCGANGenerator(latent_dim=64, width=32), image_size=32)
    weights = torch.cat([m.weight.flatten() for m in g.modules() if isinstance(m, (nn.ConvTranspose2d, nn.Linear))])
    assert abs(weights.mean().item()) < 1e-3 and abs(weights.std().item() - 0.02) < 1e-3
    bn = [m for m in g.modules() if isinstance(m, nn.BatchNorm2d)]
    scales = torch.cat([m.weight for m in bn])
    assert abs(scales.mean().item() - 1.0) < 0.01 and abs(scales.std().item() - 0.02) < 0.005
    assert all(m.bias.abs().max().item() == 0 for m in bn)
    assert g.net[-2].bias.abs().max().item() == 0

    c = built(DCGANCritic(width=32, norm="layer"), image_size=32)
    convs = [m for m in c.modules() if isinstance(m, nn.Conv2d)]
    assert abs(torch.cat([m.weight.flatten() for m in convs]).std().item() - 0.02) < 1e-3
    assert all(m.bias is None or m.bias.abs().max().item() == 0 for m in convs)


def test_default_init_is_pytorchs():
    torch.manual_seed(0)
    g = built(DCGANGenerator(latent_dim=8, width=16, init="default"), image_size=32)
    conv = g.net[4]  # ConvTranspose2d(64, 32, 4): PyTorch's fan-in is 32 * 4 * 4 = 512
    bound = 1 / 512 ** 0.5
    assert conv.weight.abs().max().item() <= bound
    assert abs(conv.weight.std().item() - bound / 3 ** 0.5) < 0.05 * bound
    assert torch.equal(g.net[2].weight, torch.ones(64))


def test_dcgan_init_ignores_layers_without_weights():
    net = nn.Sequential(nn.Linear(3, 3, bias=False), nn.ReLU(), nn.BatchNorm1d(3))
    dcgan_init(net)
    assert net[2].bias.abs().max().item() == 0


def test_setup_rejects_unsupported_data_size():
    with pytest.raises(GenframeError, match="image_size 30 is not supported"):
        built(DCGANGenerator(), image_size=30)
    with pytest.raises(GenframeError, match="image_size 9 is not supported"):
        built(DCGANCritic(image_size=9))


@pytest.mark.parametrize("norm, layer", [("batch", nn.BatchNorm2d), ("layer", nn.GroupNorm), ("none", None)])
def test_generator_normalisation_is_a_choice(norm, layer):
    net = built(DCGANGenerator(latent_dim=8, width=8, norm=norm), image_size=16).net
    norms = [m for m in net if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm))]
    assert [type(m) for m in norms] == ([layer] * 2 if layer else [])
    # a bias only where no batch norm follows to cancel it (the output layer always has one)
    convs = [m for m in net if isinstance(m, (nn.Linear, nn.ConvTranspose2d))]
    assert [m.bias is not None for m in convs] == [norm != "batch"] * 2 + [True]
    z = torch.randn(4, 8)
    images = net(z)
    assert images.shape == (4, 1, 16, 16) and images.abs().max() <= 1


def test_config_and_bounds():
    assert DCGANGenerator().config() == {"type": "dcgan_generator", "latent_dim": 64, "channels": None,
                                         "image_size": None, "width": 64, "init": "dcgan", "normalize_input": False,
                                         "norm": "batch", "num_classes": None, "embedding_dim": 32}
    with pytest.raises(ValueError, match="width"):
        DCGANCritic(width=0)


def test_registry_lists_networks():
    registry = create_registry()
    assert registry.get("generator", "dcgan_generator") is DCGANGenerator
    assert registry.get("critic", "dcgan_critic") is DCGANCritic


def test_normalize_input_makes_only_the_direction_matter():
    g = DCGANGenerator(latent_dim=8, width=8, normalize_input=True)
    g.setup(BuildContext(num_examples=10, channels=1, image_size=16, device=torch.device("cpu")))
    g.eval()
    z = torch.randn(4, 8)
    torch.testing.assert_close(g(z), g(3.0 * z))
    plain = DCGANGenerator(latent_dim=8, width=8)
    plain.setup(BuildContext(num_examples=10, channels=1, image_size=16, device=torch.device("cpu")))
    plain.load_state_dict(g.state_dict())
    plain.eval()
    torch.testing.assert_close(plain(torch.nn.functional.normalize(z, dim=1)), g(z))


# --------------------------------------------------------------------------- SN-GAN's ResNets


def test_resnet_generator_parameter_count_by_hand():
    g = built(ResNetGenerator(latent_dim=3, width=4), image_size=8)  # base 4, one up-sampling block
    linear = 3 * 64 + 64
    block = 8 + (4 * 4 * 9 + 4) + 8 + (4 * 4 * 9 + 4) + (4 * 4 + 4)  # BN, conv, BN, conv, 1x1 shortcut
    out = 8 + (4 * 9 + 1)
    assert n_params(g) == linear + block + out == 633


def test_resnet_critic_parameter_count_by_hand():
    c = built(ResNetCritic(width=4), image_size=8)  # no halving: first block, then two plain blocks
    first = (9 * 4 + 4) + (4 * 4 * 9 + 4) + (4 + 4)
    plain = 2 * (4 * 4 * 9 + 4)  # identity shortcut
    assert n_params(c) == first + 2 * plain + 4 == 792  # the score has no bias, as in SN-GAN


def test_resnets_at_32_px_follow_sngan():
    g = built(ResNetGenerator(latent_dim=16, width=8), channels=3, image_size=32)
    assert sum(isinstance(m, UpBlock) for m in g.modules()) == 3  # 4 -> 8 -> 16 -> 32
    x = g(torch.randn(2, 16))
    assert x.shape == (2, 3, 32, 32) and x.abs().max().item() <= 1.0
    c = built(ResNetCritic(width=8), channels=3, image_size=32)
    blocks = [m for m in c.modules() if isinstance(m, DownBlock)]
    assert [any(isinstance(layer, nn.AvgPool2d) for layer in b.residual) for b in blocks] == [True, True, False, False]
    assert c.net[:-1](x).shape == (2, 8, 8, 8)
    scores = c(x)
    assert scores.shape == (2,)
    scores.sum().backward()
    assert all(p.grad is not None for p in c.parameters())


def test_resnet_critic_sums_its_features_over_pixels():
    c = built(ResNetCritic(width=4), image_size=16)
    x = torch.randn(3, 1, 16, 16)
    torch.testing.assert_close(c(x), c.head(c.net(x).sum(dim=(2, 3))).squeeze(1))


@pytest.mark.parametrize("norm, kind", [("batch", nn.BatchNorm2d), ("layer", nn.GroupNorm)])
def test_resnet_critic_normalises_all_but_the_first_block(norm, kind):
    c = built(ResNetCritic(width=4, norm=norm), image_size=16)
    blocks = [m for m in c.modules() if isinstance(m, DownBlock)]
    assert [sum(isinstance(layer, kind) for layer in b.residual) for b in blocks] == [0, 2, 2]
    assert c.batch_coupling() == ("norm" if norm == "batch" else None)
    assert DCGANCritic(norm=norm).batch_coupling() == c.batch_coupling()


# --------------------------------------------------------------------------- class conditioning


@pytest.mark.parametrize("cls", [DCGANGenerator, ResNetGenerator])
def test_conditional_generators_append_a_label_embedding(cls):
    g = built(cls(latent_dim=4, width=4, num_classes=3, embedding_dim=2), image_size=8)
    g.eval()
    z = torch.randn(1, 4).expand(3, 4)
    labels = torch.tensor([0, 1, 2])
    out = g(z, labels)
    torch.testing.assert_close(out, g.net(torch.cat([z, g.embedding.weight[labels]], 1)))
    assert not torch.allclose(out[0], out[1])
    with pytest.raises(GenframeError, match="class-conditional .num_classes: 3. and needs labels"):
        g(z)


@pytest.mark.parametrize("critic", [DCGANCritic(width=4, num_classes=3), ResNetCritic(width=4, num_classes=3)],
                         ids=["dcgan", "resnet"])
def test_projection_critics_add_the_class_embeddings_inner_product(critic):
    c = built(critic, image_size=8)
    x, labels = torch.randn(4, 1, 8, 8), torch.tensor([2, 0, 1, 2])
    features = c.net(x) if isinstance(c, DCGANCritic) else c.net(x).sum(dim=(2, 3))
    expected = c.head(features).squeeze(1) + (c.embedding.weight[labels] * features).sum(1)
    torch.testing.assert_close(c(x, labels), expected)
    unconditional = built(type(critic)(width=4), image_size=8)
    assert unconditional.embedding is None and unconditional(x).shape == (4,)
