import math

import pytest
import torch

from genframe.build.system import instantiate
from genframe.components.registry import create_registry
from genframe_plugins.objectives import divergences
from genframe_plugins.objectives.divergences import (Hinge, LeastSquares, Minimax, NonSaturating, RaHinge,
                                                     RaLSGAN, RaSGAN, Wasserstein)

REAL = torch.tensor([1.0, -2.0])
FAKE = torch.tensor([0.5, 3.0])


def softplus(x):
    return math.log(1.0 + math.exp(x))


def test_wasserstein():
    div = Wasserstein()
    assert div.critic_loss(REAL, FAKE).item() == pytest.approx((0.5 + 3.0) / 2 - (1.0 - 2.0) / 2)  # 2.25
    assert div.generator_loss(REAL, FAKE).item() == pytest.approx(-1.75)


def test_hinge():
    # critic: mean(relu(1 - 1), relu(1 + 2)) + mean(relu(1 + 0.5), relu(1 + 3)) = 1.5 + 2.75
    assert Hinge().critic_loss(REAL, FAKE).item() == pytest.approx(4.25)
    assert Hinge().generator_loss(REAL, FAKE).item() == pytest.approx(-1.75)
    # margin 0.25: real 1.0 is beyond it (costs 0), real -2 costs 2.25; fakes cost 0.75 and 3.25
    assert Hinge(margin=0.25).critic_loss(REAL, FAKE).item() == pytest.approx(2.25 / 2 + 4.0 / 2)
    # scores beyond the margin give the critic no gradient
    real = torch.tensor([2.0, 0.5], requires_grad=True)
    Hinge().critic_loss(real, torch.tensor([-3.0])).backward()
    assert real.grad.tolist() == [0.0, -0.5]


def test_nonsaturating():
    div = NonSaturating()
    critic = (softplus(-1.0) + softplus(2.0)) / 2 + (softplus(0.5) + softplus(3.0)) / 2
    assert div.critic_loss(REAL, FAKE).item() == pytest.approx(critic)
    assert div.generator_loss(REAL, FAKE).item() == pytest.approx((softplus(-0.5) + softplus(-3.0)) / 2)
    # -log D(G(z)) with D = sigmoid
    d = 1 / (1 + math.exp(-0.5))
    assert div.generator_loss(torch.zeros(1), torch.tensor([0.5])).item() == pytest.approx(-math.log(d))


def test_minimax():
    div = Minimax()
    assert div.critic_loss(REAL, FAKE).item() == pytest.approx(NonSaturating().critic_loss(REAL, FAKE).item())
    assert div.generator_loss(REAL, FAKE).item() == pytest.approx(-(softplus(0.5) + softplus(3.0)) / 2)
    # log(1 - D(G(z))) with D = sigmoid
    d = 1 / (1 + math.exp(-0.5))
    assert div.generator_loss(torch.zeros(1), torch.tensor([0.5])).item() == pytest.approx(math.log(1 - d))


def test_generator_gradients_where_the_critic_rejects_fakes():
    # score -6: the critic is sure the image is fake. Minimax barely moves, nonsaturating does.
    for div, expected in ((Minimax(), -1 / (1 + math.exp(6))), (NonSaturating(), -1 / (1 + math.exp(-6)))):
        score = torch.tensor([-6.0], requires_grad=True)
        div.generator_loss(torch.zeros(1), score).backward()
        assert score.grad.item() == pytest.approx(expected, rel=1e-5)


def test_least_squares_default_coding():
    div = LeastSquares()
    # critic: 0.5 * mean((1-1)^2, (-2-1)^2) + 0.5 * mean((0.5-0)^2, (3-0)^2) = 2.25 + 2.3125
    assert div.critic_loss(REAL, FAKE).item() == pytest.approx(4.5625)
    # generator: 0.5 * mean((0.5-1)^2, (3-1)^2) = 1.0625
    assert div.generator_loss(REAL, FAKE).item() == pytest.approx(1.0625)


def test_least_squares_custom_coding():
    div = LeastSquares(a=-1.0, b=1.0, c=0.0)
    assert div.critic_loss(REAL, FAKE).item() == pytest.approx(0.5 * (0 + 9) / 2 + 0.5 * (2.25 + 16) / 2)
    assert div.generator_loss(REAL, FAKE).item() == pytest.approx(0.5 * (0.25 + 9) / 2)


# Relativistic average GANs (Jolicoeur-Martineau 2018), by hand for REAL = [1, -2], FAKE = [0.5, 3]:
# mean real -0.5, mean fake 1.75, so r = real - mean fake = [-0.75, -3.75], f = fake - mean real = [1, 3.5].


def test_rasgan():
    div = RaSGAN()
    critic = (softplus(0.75) + softplus(3.75)) / 2 + (softplus(1.0) + softplus(3.5)) / 2
    generator = (softplus(-1.0) + softplus(-3.5)) / 2 + (softplus(-0.75) + softplus(-3.75)) / 2
    assert div.critic_loss(REAL, FAKE).item() == pytest.approx(critic)
    assert div.generator_loss(REAL, FAKE).item() == pytest.approx(generator)


def test_ralsgan():
    div = RaLSGAN()
    # critic: mean (r - 1)^2 + mean (f + 1)^2; generator: mean (f - 1)^2 + mean (r + 1)^2
    assert div.critic_loss(REAL, FAKE).item() == pytest.approx((1.75**2 + 4.75**2) / 2 + (2.0**2 + 4.5**2) / 2)
    assert div.generator_loss(REAL, FAKE).item() == pytest.approx((0.0 + 2.5**2) / 2 + (0.25**2 + 2.75**2) / 2)


def test_rahinge():
    div = RaHinge()
    # critic: mean relu(1 - r) + mean relu(1 + f); generator: mean relu(1 - f) + mean relu(1 + r)
    assert div.critic_loss(REAL, FAKE).item() == pytest.approx((1.75 + 4.75) / 2 + (2.0 + 4.5) / 2)
    assert div.generator_loss(REAL, FAKE).item() == pytest.approx((0.0 + 0.0) / 2 + (0.25 + 0.0) / 2)
    assert RaHinge(margin=2.0).generator_loss(REAL, FAKE).item() == pytest.approx((1.0 + 0.0) / 2 + (1.25 + 0.0) / 2)


def test_relativistic_generator_gradient_flows_through_both_terms():
    # d/dfake_j of mean (f - 1)^2 is 2 (f_j - 1) / n = [0, 2.5]; through mean fake in r, mean (r + 1)^2
    # adds -mean(2 (r + 1)) / n = 1.25 to every fake score.
    fake = FAKE.clone().requires_grad_(True)
    RaLSGAN().generator_loss(REAL, fake).backward()
    torch.testing.assert_close(fake.grad, torch.tensor([1.25, 3.75]))
    assert RaLSGAN.generator_reads_real and not LeastSquares.generator_reads_real


def test_half_precision_scores_give_float32_losses():
    real, fake = REAL.to(torch.bfloat16), FAKE.to(torch.bfloat16)
    for div in (Wasserstein(), Hinge(), NonSaturating(), Minimax(), LeastSquares(), RaSGAN(), RaLSGAN(), RaHinge()):
        assert div.critic_loss(real, fake).dtype == torch.float32
        assert div.generator_loss(real, fake).dtype == torch.float32


def test_registered_names():
    registry = create_registry([divergences], entry_points=False)
    assert registry.names("divergence") == ["began", "hinge", "least_squares", "minimax", "nonsaturating", "rahinge",
                                            "ralsgan", "rasgan", "wasserstein"]
    built = instantiate("divergence", {"type": "least_squares", "c": 0.5}, "d", "<test>", registry)
    assert isinstance(built, LeastSquares) and (built.a, built.b, built.c) == (0.0, 1.0, 0.5)
