"""The EMA generator: the average against hand computation, which weights each mode uses, what is saved."""

from __future__ import annotations

import torch
from torch import nn

from genframe.training.context import BuildContext, StageContext
from genframe_plugins.trainers.adversarial import Adversarial
from genframe_plugins.objectives.divergences import Wasserstein
from genframe_plugins.networks.ema import EMA
from genframe_plugins.networks.dcgan import DCGANCritic, DCGANGenerator
from genframe_plugins.trainers.optimisers import Adam, Constant
from genframe_plugins.networks.priors import Gaussian

CPU = torch.device("cpu")


def build_ctx(**extra) -> BuildContext:
    return BuildContext(num_examples=16, channels=1, image_size=8, device=CPU, **extra)


def built_ema(**kwargs) -> EMA:
    torch.manual_seed(0)
    ema = EMA(generator=DCGANGenerator(latent_dim=4, width=4), **kwargs)
    ema.setup(build_ctx())
    return ema


def _perturb(module: nn.Module) -> list[torch.Tensor]:
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p))
    return [p.clone() for p in module.parameters()]


def test_average_against_hand_computation():
    ema = built_ema(decay=0.9, start=1)
    w1 = _perturb(ema.generator)
    ema.after_update()  # update 1 <= start: the average copies the weights
    w2 = _perturb(ema.generator)
    ema.after_update()
    w3 = _perturb(ema.generator)
    ema.after_update()
    assert ema.updates.item() == 3
    for average, a, b, c in zip(ema.average.parameters(), w1, w2, w3):
        torch.testing.assert_close(average, 0.9 * (0.9 * a + 0.1 * b) + 0.1 * c)
        assert not average.requires_grad


def test_without_warm_up_the_first_update_averages():
    ema = built_ema(decay=0.75)
    initial = [p.clone() for p in ema.average.parameters()]
    live = _perturb(ema.generator)
    ema.after_update()
    for average, a, b in zip(ema.average.parameters(), initial, live):
        torch.testing.assert_close(average, 0.75 * a + 0.25 * b)


def test_buffers_are_copied_not_averaged():
    ema = built_ema(decay=0.9)
    ema.generator.train()(torch.randn(8, 4))  # batch norm statistics move
    ema.after_update()
    for average, live in zip(ema.average.buffers(), ema.generator.buffers()):
        assert torch.equal(average, live)
    assert ema.generator.net[2].running_mean.abs().sum() > 0


def test_training_mode_runs_the_live_weights_and_evaluation_mode_the_average():
    ema = built_ema(decay=0.5)
    _perturb(ema.generator)
    z = torch.randn(3, 4)
    ema.train()
    torch.testing.assert_close(ema(z), ema.generator(z))
    ema.eval()
    torch.testing.assert_close(ema(z), ema.average(z))
    assert not torch.allclose(ema(z), ema.generator(z))


def test_the_average_and_its_count_are_saved():
    ema = built_ema(decay=0.5)
    _perturb(ema.generator)
    ema.after_update()
    state = ema.state_dict()
    assert "updates" in state and any(k.startswith("average.") for k in state)
    fresh = built_ema(decay=0.5)
    fresh.load_state_dict(state)
    z = torch.randn(3, 4)
    torch.testing.assert_close(fresh.eval()(z), ema.eval()(z))
    assert fresh.updates.item() == 1


def test_latent_size_and_classes_are_the_wrapped_generators():
    ema = EMA(generator=DCGANGenerator(latent_dim=5, width=4, num_classes=3, embedding_dim=2))
    assert (ema.latent_dim, ema.num_classes) == (5, 3)
    ema.setup(build_ctx())
    labels = torch.tensor([0, 2])
    z = torch.randn(2, 5)
    torch.testing.assert_close(ema.eval()(z, labels), ema.average(z, labels))
    assert EMA(generator=DCGANGenerator()).num_classes is None


def test_adversarial_training_optimises_the_live_weights_and_updates_the_average():
    ema = EMA(generator=DCGANGenerator(latent_dim=4, width=4), decay=0.5)
    components = {"generator": ema, "critic": DCGANCritic(width=4), "prior": Gaussian(dim=4)}
    torch.manual_seed(0)
    build = build_ctx(images=torch.randint(0, 256, (16, 1, 8, 8), dtype=torch.uint8))
    for c in components.values():
        c.setup(build)
    initial = [p.clone() for p in ema.average.parameters()]
    trainer = Adversarial(divergence=Wasserstein(), n_critic=1, batch_size=8, steps=1,
                          optimizer=Adam(lr=1e-2, schedule=Constant()))
    trainer.bind(StageContext(build=build, components=components, stage="s", stage_index=0,
                              generator=torch.Generator().manual_seed(1)))
    optimised = {id(p) for group in trainer._g_opt.param_groups for p in group["params"]}
    assert optimised == {id(p) for p in ema.generator.parameters()}
    trainer.train_step(0)
    assert ema.updates.item() == 1
    for average, before, live in zip(ema.average.parameters(), initial, ema.generator.parameters()):
        torch.testing.assert_close(average, 0.5 * before + 0.5 * live)
    assert not all(torch.equal(a, b) for a, b in zip(initial, ema.generator.parameters()))
