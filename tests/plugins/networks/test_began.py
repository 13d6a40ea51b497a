"""BEGAN: losses and the k_t equilibrium update against hand computation; the autoencoder critic's energy."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from genframe import SpecError
from genframe.training.context import BuildContext
from genframe_plugins.networks.began import AutoencoderCritic, BEGANGenerator
from genframe_plugins.objectives.divergences import BEGAN
from genframe_plugins.networks.dcgan import DCGANCritic

REAL = torch.tensor([0.2, 0.4])  # L(x): mean 0.3
FAKE = torch.tensor([0.1, 0.3])  # L(G(z_D)): mean 0.2


def ctx(image_size: int) -> BuildContext:
    return BuildContext(num_examples=4, channels=1, image_size=image_size, device=torch.device("cpu"))


def test_losses_and_k_update_by_hand():
    div = BEGAN(gamma=0.5, lambda_k=0.1)
    assert div.critic_loss(REAL, FAKE).item() == pytest.approx(0.3)  # k_0 = 0
    assert div.generator_loss(REAL, FAKE).item() == pytest.approx(0.2)
    logs = div.update(REAL, torch.tensor([0.1]))
    # k_1 = 0 + 0.1 * (0.5 * 0.3 - 0.1) = 0.005;  M = 0.3 + |0.15 - 0.1| = 0.35
    assert logs["k"].item() == pytest.approx(0.005)
    assert logs["convergence"].item() == pytest.approx(0.35)
    assert div.critic_loss(REAL, FAKE).item() == pytest.approx(0.3 - 0.005 * 0.2)
    logs = div.update(REAL, torch.tensor([0.5]))
    # k_2 = 0.005 + 0.1 * (0.15 - 0.5) = -0.03, clipped to 0;  M = 0.3 + 0.35
    assert logs["k"].item() == 0.0
    assert logs["convergence"].item() == pytest.approx(0.65)


def test_k_is_clipped_to_one_and_starts_at_k_init():
    div = BEGAN(gamma=1.0, lambda_k=1.0, k_init=0.9)
    assert div.critic_loss(REAL, FAKE).item() == pytest.approx(0.3 - 0.9 * 0.2)
    assert div.update(torch.tensor([2.0]), torch.tensor([0.0]))["k"].item() == 1.0


def test_state_round_trip_and_reset():
    trained = BEGAN(lambda_k=0.1)
    trained.update(REAL, torch.tensor([0.0]))
    restored = BEGAN(lambda_k=0.1)
    restored.load_state_dict(trained.state_dict())
    assert restored.critic_loss(REAL, FAKE).item() == trained.critic_loss(REAL, FAKE).item() != pytest.approx(0.3)
    restored.reset(torch.device("cpu"))
    assert restored.critic_loss(REAL, FAKE).item() == pytest.approx(0.3)


def test_loss_gradients_follow_k():
    div = BEGAN(lambda_k=1.0)
    div.update(torch.tensor([1.0]), torch.tensor([0.25]))  # k = 0.5 * 1 - 0.25 = 0.25
    real, fake = REAL.clone().requires_grad_(True), FAKE.clone().requires_grad_(True)
    div.critic_loss(real, fake).backward()
    assert real.grad.tolist() == [0.5, 0.5] and fake.grad.tolist() == [-0.125, -0.125]


def test_autoencoder_critic_scores_the_mean_absolute_reconstruction_error():
    critic = AutoencoderCritic(latent_dim=8, width=4)
    critic.setup(ctx(16))
    x = torch.rand(3, 1, 16, 16) * 2 - 1
    expected = (x - critic.decoder(critic.encoder(x))).abs().mean(dim=(1, 2, 3))
    torch.testing.assert_close(critic(x), expected)
    assert critic(x).dtype == torch.float32 and (critic(x) >= 0).all()


def test_autoencoder_architecture_follows_the_paper():
    critic = AutoencoderCritic(latent_dim=8, width=4)
    critic.setup(ctx(32))  # base 4, three halvings
    convs = [m for m in critic.encoder if isinstance(m, nn.Conv2d)]
    # first conv, two per scale at 4 scales, one stride-2 conv per halving
    assert len(convs) == 1 + 2 * 4 + 3
    assert [m.out_channels for m in convs if m.stride == (2, 2)] == [8, 12, 16]  # linear growth n, 2n, 3n, 4n
    assert critic.encoder[-1].out_features == 8
    assert sum(isinstance(m, nn.Upsample) for m in critic.decoder) == 3
    assert critic.reconstruct(torch.zeros(2, 1, 32, 32)).shape == (2, 1, 32, 32)


def test_generator_is_the_decoder_shape_ending_in_a_convolution():
    critic, generator = AutoencoderCritic(latent_dim=8, width=4), BEGANGenerator(latent_dim=8, width=4)
    critic.setup(ctx(28))
    generator.setup(ctx(28))
    assert sum(p.numel() for p in generator.parameters()) == sum(p.numel() for p in critic.decoder.parameters())
    assert isinstance(generator.net[-1], nn.Conv2d)  # the paper's decoder: no squashing that could saturate
    generator.load_state_dict({f"net.{k}": v for k, v in critic.decoder.state_dict().items()})
    z = torch.randn(2, 8) * 100
    assert torch.equal(generator(z), critic.decoder(z)) and generator(z).shape == (2, 1, 28, 28)


def test_generator_with_tanh_output_is_bounded():
    generator = BEGANGenerator(latent_dim=8, width=4, output="tanh")
    generator.setup(ctx(28))
    x = generator(torch.randn(2, 8) * 100)
    assert x.shape == (2, 1, 28, 28) and x.abs().max().item() <= 1.0


def test_began_refuses_a_critic_without_energies():
    with pytest.raises(SpecError, match=r"^components.critic.type: stages\[0\].trainer.divergence \(began\) "
                                        r"needs reconstruction energies .* not dcgan_critic"):
        BEGAN().check_critic(DCGANCritic(), "components.critic", "stages[0].trainer.divergence")
    BEGAN().check_critic(AutoencoderCritic(), "components.critic", "stages[0].trainer.divergence")
