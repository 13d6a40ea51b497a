"""The adversarial trainer's wiring: labels of the conditional path, BEGAN's state, build-time checks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from genframe import GenframeError, SpecError
from genframe.training.context import BuildContext, EpochBatches, StageContext
from genframe_plugins.trainers.adversarial import Adversarial
from genframe_plugins.networks.began import AutoencoderCritic, BEGANGenerator
from genframe_plugins.objectives.divergences import BEGAN
from genframe_plugins.objectives.constraints import GradientPenalty, SpectralNorm
from genframe_plugins.objectives.divergences import Hinge
from genframe_plugins.networks.dcgan import DCGANCritic, DCGANGenerator
from genframe_plugins.trainers.optimisers import Adam, Constant
from genframe_plugins.networks.priors import Gaussian

CPU = torch.device("cpu")


def _context(components: dict, labels: torch.Tensor | None = None, n: int = 32) -> StageContext:
    torch.manual_seed(0)
    images = torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8)
    num_classes = int(labels.max()) + 1 if labels is not None else None
    build = BuildContext(num_examples=n, channels=1, image_size=8, device=CPU, images=images, labels=labels,
                         num_classes=num_classes)
    for c in components.values():
        c.setup(build)
    return StageContext(build=build, components=components, stage="s", stage_index=0,
                        generator=torch.Generator().manual_seed(1))


def _trainer(**kwargs) -> Adversarial:
    return Adversarial(optimizer=Adam(lr=1e-3, schedule=Constant()), **kwargs)


class LabelSpy:
    """Records the labels a network is called with (mixed into a generator or critic class)."""

    def forward(self, x, labels=None):
        self.seen.append(labels.clone())
        return super().forward(x, labels)


class SpyGenerator(LabelSpy, DCGANGenerator):
    pass


class SpyCritic(LabelSpy, DCGANCritic):
    pass


def test_labels_of_each_batch_reach_the_generator_critic_and_penalty():
    generator, critic = SpyGenerator(latent_dim=4, width=4, num_classes=3), SpyCritic(width=4, num_classes=3)
    generator.seen, critic.seen = [], []
    labels = torch.arange(32) % 3
    ctx = _context({"generator": generator, "critic": critic, "prior": Gaussian(dim=4)}, labels)
    trainer = _trainer(divergence=Hinge(), constraints=[GradientPenalty()], n_critic=2, batch_size=8, steps=1)
    trainer.bind(ctx)
    trainer.train_step(0)
    batches = EpochBatches(32, 8, seed=0, device=CPU)
    first, second = labels[batches.indices(0)], labels[batches.indices(1)]
    # critic steps: fakes for the batch's labels; generator step: the last critic batch's labels
    assert [t.tolist() for t in generator.seen] == [first.tolist(), second.tolist(), second.tolist()]
    # per critic step: real, fake, interpolates (gradient penalty); then the generator step's fakes
    assert [t.tolist() for t in critic.seen] == [first.tolist()] * 3 + [second.tolist()] * 4


def test_conditional_models_need_labelled_data_with_known_classes():
    components = {"generator": DCGANGenerator(latent_dim=4, width=4, num_classes=3),
                  "critic": DCGANCritic(width=4, num_classes=3), "prior": Gaussian(dim=4)}
    with pytest.raises(GenframeError, match="components.generator: num_classes is set but the data set has no labels"):
        _trainer().bind(_context(components))
    with pytest.raises(GenframeError, match=r"components.generator.num_classes: 3, but the data's labels go up to 4; "
                                            "set num_classes: 5"):
        _trainer().bind(_context(components, torch.arange(32) % 5))


def test_check_refuses_a_conditional_generator_with_an_unconditional_critic():
    trainer = _trainer(divergence=Hinge())
    components = {"generator": DCGANGenerator(num_classes=10), "critic": DCGANCritic(), "prior": Gaussian()}
    with pytest.raises(SpecError, match=r"^components.critic.num_classes: generator 'generator' has num_classes: 10 "
                                        "but the critic has None"):
        trainer.check(components, "stages[0].trainer")
    components["critic"] = AutoencoderCritic()  # no num_classes field: the critic itself is named
    with pytest.raises(SpecError, match=r"^components.critic: generator"):
        trainer.check(components, "stages[0].trainer")
    components["critic"] = DCGANCritic(num_classes=10)
    trainer.check(components, "stages[0].trainer")


def test_prepare_components_applies_the_constraints_to_the_critic():
    critic = DCGANCritic(width=4)
    components = {"generator": DCGANGenerator(latent_dim=4, width=4), "critic": critic, "prior": Gaussian(dim=4)}
    _context(components)
    _trainer(constraints=[SpectralNorm()]).prepare_components(components)
    assert nn.utils.parametrize.is_parametrized(critic.head, "weight")


class RecordingBEGAN(BEGAN):
    def update(self, real_scores, fake_scores):
        self.seen.append((real_scores, fake_scores))
        return super().update(real_scores, fake_scores)


def test_began_state_follows_the_steps_and_is_checkpointed():
    components = {"generator": BEGANGenerator(latent_dim=4, width=4),
                  "critic": AutoencoderCritic(latent_dim=4, width=4), "prior": Gaussian(dim=4)}
    divergence = RecordingBEGAN(gamma=0.5, lambda_k=0.1, k_init=0.5)
    divergence.seen = []
    trainer = _trainer(divergence=divergence, n_critic=1, batch_size=8, steps=3)
    trainer.bind(_context(components))
    k = 0.5
    for step in range(3):
        logs = trainer.train_step(step)
        real, fake = divergence.seen[-1]
        assert real.shape == (8,) and not real.requires_grad and not fake.requires_grad
        assert logs["generator"].item() == pytest.approx(fake.mean().item())  # the generator step's energies
        balance = 0.5 * real.mean().item() - fake.mean().item()
        k = min(max(k + 0.1 * balance, 0.0), 1.0)
        assert logs["k"].item() == pytest.approx(k, abs=1e-6)
        assert logs["convergence"].item() == pytest.approx(real.mean().item() + abs(balance), rel=1e-5)
    assert 0 < k < 1 and k != 0.5
    state = trainer.state_dict()
    assert state["divergence"]["k"].item() == pytest.approx(k, abs=1e-6)

    again = _trainer(divergence=BEGAN(gamma=0.5, lambda_k=0.1, k_init=0.5), n_critic=1, batch_size=8, steps=3)
    again.bind(_context(components))
    assert again.divergence.state_dict()["k"].item() == 0.5  # a stage starts from k_0
    again.load_state_dict(state)
    assert again.divergence.state_dict()["k"].item() == pytest.approx(k, abs=1e-6)
