"""Adversarial training: a generator against a critic, with any divergence and any Lipschitz constraints."""

from __future__ import annotations

import torch

from genframe import (Critic, Divergence, Generator, LipschitzConstraint, Optimizer, Prior, Trainer,
                      component, hookimpl, param, ref)
from genframe.context import StageContext
from genframe.training import Optimisers
from genframe_plugins._defaults import adam_defaults


@component("trainer", "adversarial")
class Adversarial(Trainer):
    """Generator against critic; the objective is a divergence component, the regularisers constraints.

    One step is ``n_critic`` critic updates, each on a fresh data batch, then one generator update.
    """

    generator: str = ref("generator", "generator")
    critic: str = ref("critic", "critic")
    prior: str = ref("prior", "prior")
    divergence: Divergence = param(factory=lambda: {"type": "wasserstein"})
    constraints: list[LipschitzConstraint] = param(factory=list, help="Lipschitz constraints / regularisers")
    n_critic: int = param(5, ge=1, help="critic updates per generator update")
    batch_size: int = param(64, ge=1)
    steps: int = param(10000, ge=1, help="generator updates")
    optimizer: Optimizer = param(factory=adam_defaults(1e-4, (0.0, 0.9)), help="generator optimiser")
    critic_optimizer: Optimizer | None = param(None, help="critic optimiser (null: same settings as optimizer)")

    def bind(self, ctx: StageContext) -> None:
        self._ctx = ctx
        self._generator = ctx.component(self.generator, Generator)
        self._critic = ctx.component(self.critic, Critic)
        self._prior = ctx.component(self.prior, Prior)
        self._batches = ctx.batches(self.batch_size)
        for constraint in self.constraints:
            constraint.apply(self._critic)
        self._optimisers = Optimisers()
        self._g_opt = self._optimisers.add("generator", self.optimizer, self._generator.parameters(),
                                          self._batches, self.steps, self.n_critic)
        self._d_opt = self._optimisers.add("critic", self.critic_optimizer or self.optimizer,
                                          self._critic.parameters(), self._batches, self.steps, self.n_critic)

    def total_steps(self) -> int:
        return self.steps

    def _noise(self, n: int) -> torch.Tensor:
        return self._prior.sample(n, device=self._ctx.device, generator=self._ctx.generator)

    def _critic_step(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        real = self._ctx.batch(self._batches.indices(batch))
        with torch.no_grad():
            fake = self._generator(self._noise(real.shape[0]))
        loss = self.divergence.critic_loss(self._critic(real), self._critic(fake))
        penalty = torch.zeros((), device=real.device)
        for constraint in self.constraints:
            term = constraint.penalty(self._critic, real, fake)
            if term is not None:
                penalty = penalty + term
        self._d_opt.zero_grad(set_to_none=True)
        (loss + penalty).backward()
        self._d_opt.step()
        for constraint in self.constraints:
            constraint.after_critic_step(self._critic)
        return loss.detach(), penalty.detach()

    def train_step(self, step: int) -> dict[str, torch.Tensor]:
        self._critic.requires_grad_(True)
        for k in range(self.n_critic):
            critic_loss, penalty = self._critic_step(step * self.n_critic + k)
        self._critic.requires_grad_(False)  # the generator step needs no critic weight gradients
        fake_scores = self._critic(self._generator(self._noise(self._batches.batch_size)))
        generator_loss = self.divergence.generator_loss(fake_scores)
        self._g_opt.zero_grad(set_to_none=True)
        generator_loss.backward()
        self._g_opt.step()
        self._critic.requires_grad_(True)
        self._optimisers.step_schedules()
        return {"critic": critic_loss, "penalty": penalty, "generator": generator_loss.detach()}

    def state_dict(self) -> dict:
        return {"optimisers": self._optimisers.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self._optimisers.load_state_dict(state["optimisers"])


@hookimpl
def genframe_components():
    return [Adversarial]
