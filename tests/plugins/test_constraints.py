import pytest
import torch
from torch import nn

from genframe.build import instantiate
from genframe.registry import create_registry
from genframe_plugins import constraints
from genframe_plugins.constraints import R1, GradientPenalty, WeightClipping


class LinearCritic(nn.Module):
    """D(x) = w . x: its input gradient is w everywhere, so every norm is ||w||."""

    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(w.clone())

    def forward(self, x):
        return x.flatten(1) @ self.w


class HalfSquaredNorm(nn.Module):
    """D(x) = s/2 ||x||^2: its input gradient is s x, so norms depend on where it is evaluated."""

    def __init__(self):
        super().__init__()
        self.s = nn.Parameter(torch.tensor(1.0))

    def forward(self, x):
        return 0.5 * self.s * x.flatten(1).square().sum(1)


@pytest.fixture
def batch():
    gen = torch.Generator().manual_seed(0)
    return torch.randn(4, 2, 3, 3, generator=gen), torch.randn(4, 2, 3, 3, generator=gen)


def weight_of_norm(norm):
    w = torch.ones(18)
    return w * norm / w.norm()


@pytest.mark.parametrize("norm", [0.5, 1.0, 2.5])
def test_gradient_penalty_of_a_linear_critic(batch, norm):
    real, fake = batch
    critic = LinearCritic(weight_of_norm(norm))
    penalty = GradientPenalty().penalty(critic, real, fake)
    assert penalty.item() == pytest.approx(10 * (norm - 1) ** 2, rel=1e-6, abs=1e-6)
    one_sided = GradientPenalty(weight=3.0, mode="one_sided").penalty(critic, real, fake)
    assert one_sided.item() == pytest.approx(3 * max(0.0, norm - 1) ** 2, rel=1e-6, abs=1e-6)


def test_gradient_penalty_backpropagates_into_the_critic(batch):
    real, fake = batch
    w = weight_of_norm(2.0)
    critic = LinearCritic(w)
    GradientPenalty().penalty(critic, real, fake).backward()
    # d/dw 10 (||w|| - 1)^2 = 20 (||w|| - 1) w / ||w||
    torch.testing.assert_close(critic.w.grad, 20 * (2.0 - 1) * w / 2.0)


def test_gradient_penalty_interpolates_per_example(batch):
    real, fake = batch
    critic = HalfSquaredNorm()
    torch.manual_seed(7)
    penalty = GradientPenalty().penalty(critic, real, fake)
    torch.manual_seed(7)
    eps = torch.rand(4, 1, 1, 1)
    between = eps * real + (1 - eps) * fake
    expected = 10 * (between.flatten(1).norm(dim=1) - 1).square().mean()
    assert penalty.item() == pytest.approx(expected.item(), rel=1e-6)
    assert len(set(eps.flatten().tolist())) == 4


def test_gradient_penalty_does_not_reach_the_generator(batch):
    real, fake = batch
    fake = fake.clone().requires_grad_(True)
    GradientPenalty().penalty(HalfSquaredNorm(), real, fake).backward()
    assert fake.grad is None


def test_gradient_penalty_norm_is_float32_under_autocast(batch):
    real, fake = batch
    critic = nn.Sequential(nn.Flatten(), nn.Linear(18, 1, bias=False))
    with torch.no_grad():
        critic[1].weight.copy_(weight_of_norm(3.0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        penalty = GradientPenalty().penalty(critic, real, fake)
    assert penalty.dtype == torch.float32
    assert penalty.item() == pytest.approx(40.0, rel=2e-2)


def test_weight_clipping_bounds_every_parameter():
    critic = nn.Sequential(nn.Linear(5, 7), nn.Linear(7, 1))
    with torch.no_grad():
        critic[0].weight.uniform_(-1, 1)
        critic[0].weight[0, 0] = 0.004
    clip = WeightClipping(c=0.01)
    clip.after_critic_step(critic)
    for p in critic.parameters():
        assert p.abs().max().item() <= 0.01
    assert critic[0].weight[0, 0].item() == pytest.approx(0.004)
    assert (critic[0].weight.abs() == 0.01).sum() > 0
    assert clip.penalty(critic, torch.zeros(1, 5), torch.zeros(1, 5)) is None


def test_weight_clipping_applies_before_training():
    critic = nn.Linear(4, 1)
    with torch.no_grad():
        critic.weight.fill_(0.5)
    WeightClipping(c=0.02).apply(critic)
    assert torch.equal(critic.weight, torch.full((1, 4), 0.02))


def test_r1_closed_form(batch):
    real, fake = batch
    # linear critic: gamma/2 * ||w||^2, whatever the data
    assert R1().penalty(LinearCritic(weight_of_norm(3.0)), real, fake).item() == pytest.approx(5 * 9.0, rel=1e-6)
    # D = s/2 ||x||^2: gradient s x at the real points only
    critic = HalfSquaredNorm()
    penalty = R1(gamma=4.0).penalty(critic, real, fake)
    assert penalty.item() == pytest.approx(2.0 * real.flatten(1).square().sum(1).mean().item(), rel=1e-6)
    penalty.backward()  # d/ds 2 s^2 mean||x||^2 = 4 s mean||x||^2 at s = 1
    assert critic.s.grad.item() == pytest.approx(4.0 * real.flatten(1).square().sum(1).mean().item(), rel=1e-6)


def test_spec_building():
    registry = create_registry([constraints], entry_points=False)
    built = instantiate("constraint", {"type": "gradient_penalty", "mode": "one_sided"}, "c", "<test>", registry)
    assert isinstance(built, GradientPenalty) and (built.weight, built.mode) == (10.0, "one_sided")
    assert instantiate("constraint", {"type": "weight_clipping"}, "c", "<test>", registry).c == 0.01
    assert instantiate("constraint", {"type": "r1"}, "c", "<test>", registry).gamma == 10.0
