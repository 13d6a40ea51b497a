"""Adversarial training: a generator against a critic, with any divergence and any Lipschitz constraints."""

from __future__ import annotations

from functools import partial
from typing import Callable

import attrs
import torch

from genframe import (Component, Critic, Divergence, Generator, GenframeError, LipschitzConstraint, Optimizer,
                      Prior, SpecError, StageContext, Trainer, component, hookimpl, param, per_example, ref)
from genframe_plugins.trainers._defaults import adam_defaults


@component("trainer", "adversarial")
class Adversarial(Trainer):
    """Generator against critic; the objective is a divergence component, the regularisers constraints.

    One step is ``n_critic`` critic updates, each on a fresh data batch, then one generator update.
    With a class-conditional generator and critic (both with ``num_classes``), each critic update
    scores the real batch and the fakes with the real batch's labels, and the generator update
    draws its fakes with the labels of the last critic batch, so both follow the data's class mix.
    """

    generator: str = ref("generator", "generator")
    critic: str = ref("critic", "critic")
    prior: str = ref("prior", "prior", read_only=True)
    divergence: Divergence = param(factory=lambda: {"type": "wasserstein"})
    constraints: list[LipschitzConstraint] = param(factory=list, help="Lipschitz constraints / regularisers")
    n_critic: int = param(5, ge=1, help="critic updates per generator update")
    batch_size: int = param(64, ge=1)
    steps: int = param(10000, ge=1, help="generator updates")
    optimizer: Optimizer = param(factory=adam_defaults(1e-4, (0.0, 0.9)), help="generator optimiser")
    critic_optimizer: Optimizer | None = param(None, help="critic optimiser (null: same settings as optimizer)")

    supports_cuda_graphs = True

    def check(self, components: dict[str, Component], path: str) -> None:
        generator, critic = components[self.generator], components[self.critic]
        if None not in (components[self.prior].dim, generator.latent_dim) and \
                components[self.prior].dim != generator.latent_dim:  # None: known after setup, checked again
            raise SpecError(f"prior {self.prior!r} draws {components[self.prior].dim}-d vectors but generator "
                            f"{self.generator!r} takes {generator.latent_dim}-d ones; make them equal",
                            path=f"components.{self.generator}.latent_dim")
        critic_path = f"components.{self.critic}"
        wanted, found = getattr(generator, "num_classes", None), getattr(critic, "num_classes", None)
        if wanted != found:
            field = ".num_classes" if "num_classes" in attrs.fields_dict(type(critic)) else ""
            raise SpecError(f"generator {self.generator!r} has num_classes: {wanted} but the critic has {found}; "
                            "a class-conditional GAN needs both conditioned on the same classes",
                            path=critic_path + field)
        self.divergence.check_critic(critic, critic_path, f"{path}.divergence")
        for i, constraint in enumerate(self.constraints):
            constraint.check_critic(critic, critic_path, f"{path}.constraints[{i}]")

    def prepare_components(self, components: dict[str, Component]) -> None:
        for constraint in self.constraints:
            constraint.apply(components[self.critic])

    def eager_components(self, components: dict[str, Component]) -> set[str]:
        return {self.critic} if any(c.differentiates_twice for c in self.constraints) else set()

    def bind(self, ctx: StageContext) -> None:
        self._ctx = ctx
        self._generator = ctx.component(self.generator, Generator)
        self._critic = ctx.component(self.critic, Critic)
        self._prior = ctx.component(self.prior, Prior)
        self._labels = self._class_labels(ctx)
        self._batches = ctx.batches(self.batch_size, per_step=self.n_critic)
        self.divergence.reset(ctx.device)
        for constraint in self.constraints:
            constraint.reset(ctx.device)
        self._optimisers = ctx.optimisers()
        trained = [p for p in self._generator.parameters() if p.requires_grad]  # not an EMA copy
        self._g_opt = self._optimisers.add("generator", self.optimizer, trained, self._batches, self.steps)
        self._d_opt = self._optimisers.add("critic", self.critic_optimizer or self.optimizer,
                                          self._critic.parameters(), self._batches, self.steps)

    def _class_labels(self, ctx: StageContext) -> torch.Tensor | None:
        """The data's labels when the models are class-conditional (checked against their classes)."""
        classes = self._generator.num_classes
        if not classes:
            return None
        if ctx.build.labels is None:
            raise GenframeError(f"components.{self.generator}: num_classes is set but the data set has no labels; "
                                "use a labelled data set or an unconditional generator and critic")
        if ctx.build.num_classes is not None and ctx.build.num_classes > classes:
            raise GenframeError(f"components.{self.generator}.num_classes: {classes}, but the data's labels go up "
                                f"to {ctx.build.num_classes - 1}; set num_classes: {ctx.build.num_classes}")
        return ctx.build.labels

    def total_steps(self) -> int:
        return self.steps

    def _scorer(self, labels: torch.Tensor | None) -> Callable[[torch.Tensor], torch.Tensor]:
        """The critic as a function of images, with the batch's labels bound when it is conditional."""
        return self._critic if labels is None else partial(self._critic, labels=labels)

    def _fakes(self, n: int, labels: torch.Tensor | None) -> torch.Tensor:
        noise = per_example(lambda m: self._prior.sample(m, device=self._ctx.device, generator=self._ctx.generator), n)
        return self._generator(noise) if labels is None else self._generator(noise, labels)

    def _critic_step(self, batch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                                torch.Tensor | None]:
        indices = self._batches.indices(batch)
        real = self._batches.images(batch)
        labels = None if self._labels is None else self._labels[indices]
        with torch.no_grad():
            fake = self._fakes(real.shape[0], labels)
        critic = self._scorer(labels)
        real_scores = critic(real)
        loss = self.divergence.critic_loss(real_scores, critic(fake))
        penalty = torch.zeros((), device=real.device)
        for constraint in self.constraints:
            term = constraint.penalty(critic, real, fake)
            if term is not None:
                penalty = penalty + term
        self._d_opt.zero_grad(set_to_none=True)
        (loss + penalty).backward()
        self._d_opt.step()
        for constraint in self.constraints:
            constraint.after_critic_step(self._critic)
        return loss.detach(), penalty.detach(), real, real_scores.detach(), labels

    def train_step(self, step: int) -> dict[str, torch.Tensor]:
        self._critic.requires_grad_(True)
        for k in range(self.n_critic):
            critic_loss, penalty, real, real_scores, labels = self._critic_step(step * self.n_critic + k)
        self._critic.requires_grad_(False)  # the generator step needs no critic weight gradients
        scorer = self._scorer(labels)
        if self.divergence.generator_reads_real:
            with torch.no_grad():  # the same real batch, scored by the critic after its last update
                real_scores = scorer(real)
        fake_scores = scorer(self._fakes(self._batches.local_batch_size, labels))
        generator_loss = self.divergence.generator_loss(real_scores, fake_scores)
        self._g_opt.zero_grad(set_to_none=True)
        generator_loss.backward()
        self._g_opt.step()
        self._generator.after_update()
        self._critic.requires_grad_(True)
        return {"critic": critic_loss, "penalty": penalty, "generator": generator_loss.detach(),
                **self.divergence.update(real_scores, fake_scores.detach())}

    def state_dict(self) -> dict:
        return {"optimisers": self._optimisers.state_dict(), "divergence": self.divergence.state_dict(),
                "constraints": [constraint.state_dict() for constraint in self.constraints]}

    def load_state_dict(self, state: dict) -> None:
        self._optimisers.load_state_dict(state["optimisers"])
        self.divergence.load_state_dict(state["divergence"])
        for constraint, saved in zip(self.constraints, state["constraints"]):
            constraint.load_state_dict(saved)


@hookimpl
def genframe_components():
    return [Adversarial]
