import pytest
import torch
from torch import nn

from genframe import GenframeError, SpecError
from genframe.api import load_system
from genframe.build.system import instantiate
from genframe.training.context import BuildContext
from genframe.components.registry import create_registry
from genframe_plugins.objectives import constraints
from genframe_plugins.objectives.constraints import (DRAGAN, R1, R2, Consistency, GradientPenalty, SpectralNorm,
                                          WeightClipping)
from genframe_plugins.networks.dcgan import DCGANCritic
from genframe_plugins.networks.resnets import ResNetCritic


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


def test_r2_is_r1_on_the_fakes(batch):
    real, fake = batch
    critic = HalfSquaredNorm()
    penalty = R2(gamma=4.0).penalty(critic, real, fake)
    assert penalty.item() == pytest.approx(2.0 * fake.flatten(1).square().sum(1).mean().item(), rel=1e-6)
    assert R2().penalty(LinearCritic(weight_of_norm(2.0)), real, fake).item() == pytest.approx(5 * 4.0, rel=1e-6)


@pytest.mark.parametrize("norm", [0.5, 3.0])
def test_dragan_of_a_linear_critic(batch, norm):
    real, fake = batch
    penalty = DRAGAN(weight=2.0).penalty(LinearCritic(weight_of_norm(norm)), real, fake)
    assert penalty.item() == pytest.approx(2.0 * (norm - 1) ** 2, rel=1e-6)


def test_dragan_perturbs_the_real_images_only(batch):
    real, fake = batch
    critic = HalfSquaredNorm()  # gradient x: the norm is that of the perturbed point
    torch.manual_seed(3)
    penalty = DRAGAN(c=0.5).penalty(critic, real, fake)
    torch.manual_seed(3)
    noise = torch.rand(real.shape)
    eps = torch.rand(4, 1, 1, 1)
    points = real + eps * 0.5 * real.std() * noise
    expected = 10 * (points.flatten(1).norm(dim=1) - 1).square().mean()
    assert penalty.item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("constraint", [R2(), DRAGAN(), Consistency(shift=1)], ids=["r2", "dragan", "consistency"])
def test_penalties_are_float32_under_autocast(batch, constraint):
    real, fake = batch
    critic = nn.Sequential(nn.Flatten(), nn.Linear(18, 1, bias=False), nn.Flatten(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        penalty = constraint.penalty(critic, real, fake)
    assert penalty.dtype == torch.float32


class PixelValues(nn.Module):
    """Scores the sorted pixel values: invariant to any permutation of pixels (flips, circular shifts)."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.linspace(-1, 1, 18))

    def forward(self, x):
        return x.flatten(1).sort(dim=1).values @ self.w


def test_consistency_is_zero_for_an_invariant_critic(batch):
    real, fake = batch
    cr = Consistency(flip=True, shift=2, padding="circular")
    assert cr.penalty(PixelValues(), real, fake).item() == pytest.approx(0.0, abs=1e-5)
    # the same critic is not invariant to replicated borders, and the term then trains it
    critic = PixelValues()
    penalty = Consistency(flip=False, shift=2, padding="replicate").penalty(critic, real * 3, fake)
    assert penalty.item() > 1e-3
    penalty.backward()
    assert critic.w.grad.abs().sum() > 0


def test_consistency_of_a_linear_critic_by_hand():
    x = torch.arange(9.0).view(1, 1, 3, 3)
    critic = LinearCritic(torch.ones(9))  # D(x) = sum of pixels
    torch.manual_seed(0)
    augmented = Consistency(flip=True, shift=1, padding="replicate").augment(x)
    penalty = Consistency(weight=2.0, flip=True, shift=1, padding="replicate")
    torch.manual_seed(0)
    assert penalty.penalty(critic, x, x).item() == pytest.approx(2.0 * (36.0 - augmented.sum().item()) ** 2)


@pytest.mark.parametrize("padding", ["replicate", "reflect", "circular"])
def test_augment_shifts_each_image_with_the_chosen_padding(padding):
    x = torch.arange(2 * 25, dtype=torch.float32).view(2, 1, 5, 5)
    torch.manual_seed(1)
    out = Consistency(flip=False, shift=2, padding=padding).augment(x)
    torch.manual_seed(1)
    dy, dx = torch.randint(-2, 3, (2, 2, 1))
    padded = nn.functional.pad(x, (2, 2, 2, 2), mode=padding)  # the same names as torch's padding modes
    for i in range(2):
        top, left = 2 - int(dy[i]), 2 - int(dx[i])
        torch.testing.assert_close(out[i], padded[i, :, top:top + 5, left:left + 5])


def test_shifts_beyond_the_image_are_refused():
    with pytest.raises(GenframeError, match="consistency constraint: shift 4 is not smaller than the image side 3; "
                                            "use shift: 2 or less"):
        Consistency(shift=4).augment(torch.zeros(1, 1, 3, 3))


def test_augment_flips_about_half_of_the_images():
    x = torch.randn(200, 1, 4, 4)
    out = Consistency(flip=True, shift=0).augment(x)
    flipped = torch.tensor([torch.equal(o, i.flip(-1)) for o, i in zip(out, x)])
    kept = torch.tensor([torch.equal(o, i) for o, i in zip(out, x)])
    assert bool((flipped | kept).all()) and 70 < int(flipped.sum()) < 130


def _setup(critic, size=16):
    critic.setup(BuildContext(num_examples=4, channels=1, image_size=size, device=torch.device("cpu")))
    return critic


def _sigma(module) -> float:
    """Largest singular value of the layer's normalised weight W / sigma(W), reshaped to a matrix."""
    return torch.linalg.matrix_norm(module.weight.flatten(1), ord=2).item()


@pytest.mark.parametrize("critic", [DCGANCritic(width=8, num_classes=3), ResNetCritic(width=8, num_classes=3)],
                         ids=["dcgan", "resnet"])
def test_spectral_norm_makes_every_layer_have_largest_singular_value_one(critic):
    torch.manual_seed(0)
    critic = _setup(critic)
    SpectralNorm().apply(critic)
    layers = [m for m in critic.modules() if isinstance(m, constraints.NORMALISED_LAYERS)]
    assert layers and all(nn.utils.parametrize.is_parametrized(m, "weight") for m in layers)
    assert any(isinstance(m, nn.Embedding) for m in layers)  # the projection too
    x, labels = torch.randn(4, 1, 16, 16), torch.tensor([0, 1, 2, 0])
    for _ in range(30):  # power iterations advance with each training-mode pass
        critic(x, labels)
    for m in layers:
        assert _sigma(m) == pytest.approx(1.0, abs=1e-2)
    SpectralNorm().apply(critic)  # a second constraint or stage leaves the layers as they are
    assert all(len(m.parametrizations.weight) == 1 for m in layers)


def test_spectral_norm_state_round_trips_through_a_state_dict():
    first, second = _setup(DCGANCritic(width=4)), _setup(DCGANCritic(width=4))
    for critic in (first, second):
        SpectralNorm().apply(critic)
    first(torch.randn(2, 1, 16, 16))
    second.load_state_dict(first.state_dict())  # fails on missing/unexpected keys
    assert any(k.endswith("_u") for k in first.state_dict())
    x = torch.randn(2, 1, 16, 16)
    torch.testing.assert_close(second.eval()(x), first.eval()(x))


@pytest.mark.parametrize("constraint", [GradientPenalty(), R1(), R2(), DRAGAN()],
                         ids=["gradient_penalty", "r1", "r2", "dragan"])
def test_gradient_penalties_refuse_batch_norm_critics(constraint):
    with pytest.raises(SpecError, match=rf"^components.d.norm: batch normalisation .* {constraint.type_name} "
                                        r"\(stages\[0\].trainer.constraints\[1\]\)"):
        constraint.check_critic(DCGANCritic(norm="batch"), "components.d", "stages[0].trainer.constraints[1]")
    for norm in ("layer", "none"):
        constraint.check_critic(DCGANCritic(norm=norm), "components.d", "stages[0].trainer.constraints[1]")
    for other in (WeightClipping(), SpectralNorm(), Consistency()):
        other.check_critic(DCGANCritic(norm="batch"), "components.d", "stages[0].trainer.constraints[1]")


def test_the_spec_validator_names_the_critics_norm(tmp_path):
    from ...conftest import SPECS

    spec = tmp_path / "spec.yaml"
    spec.write_text((SPECS / "wgan_gp.yaml").read_text().replace("norm: none", "norm: batch"))
    with pytest.raises(SpecError, match=r"spec.yaml: components.critic.norm: batch normalisation .* "
                                        r"gradient_penalty \(stages\[0\].trainer.constraints\[0\]\)"):
        load_system(str(spec))


def test_spec_building():
    registry = create_registry([constraints], entry_points=False)
    built = instantiate("constraint", {"type": "gradient_penalty", "mode": "one_sided"}, "c", "<test>", registry)
    assert isinstance(built, GradientPenalty) and (built.weight, built.mode) == (10.0, "one_sided")
    assert instantiate("constraint", {"type": "weight_clipping"}, "c", "<test>", registry).c == 0.01
    assert instantiate("constraint", {"type": "r1"}, "c", "<test>", registry).gamma == 10.0
    assert registry.names("constraint") == ["consistency", "dragan", "gradient_penalty", "r1", "r2",
                                            "spectral_norm", "weight_clipping"]
    cr = instantiate("constraint", {"type": "consistency", "flip": False}, "c", "<test>", registry)
    assert (cr.weight, cr.flip, cr.shift, cr.padding) == (10.0, False, 4, "replicate")
