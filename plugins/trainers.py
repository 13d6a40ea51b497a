"""Training procedures. Models differ in their components, not here: three procedures cover them.

- ``autoencoding``: encoder + generator fitted by a reconstruction loss (GLO when the encoder is a
  per-image code table; AE/VAE/WAE when it is a network).
- ``imle``: implicit maximum likelihood: fit a map from noise to targets by nearest neighbours
  (GLANN's latent mapper when the targets are learned codes; IMLE itself on images).
- ``adversarial``: generator against critic, with any divergence and any Lipschitz constraints.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from genframe import (Critic, Divergence, Encoder, Generator, LipschitzConstraint, Optimizer, Prior,
                      ReconstructionLoss, Trainer, component, hookimpl, param, ref)
from genframe.context import EpochBatches, StageContext
from genframe.neighbours import nearest_neighbours
from genframe_plugins.optim import build_optimizer


def _adam(lr: float, betas: tuple[float, float], **extra: Any):
    """Default optimiser settings in spec form (built like any spec value)."""
    return lambda: {"type": "adam", "lr": lr, "betas": list(betas), **extra}


class _Optimised:
    """Bookkeeping shared by the procedures: optimisers with schedules, saved for resume."""

    def _init_optimisers(self) -> None:
        self._optimisers: dict[str, tuple[torch.optim.Optimizer, Any]] = {}

    def _add_optimiser(self, key: str, spec: Optimizer, params: Any, batches: EpochBatches,
                       total_steps: int, batches_per_step: int = 1) -> torch.optim.Optimizer:
        def when(step: int) -> tuple[float, float]:
            return batches.epoch_of(step * batches_per_step), step / max(1, total_steps)

        pair = build_optimizer(spec, params, when)
        self._optimisers[key] = pair
        return pair[0]

    def _step_schedules(self) -> None:
        for _, scheduler in self._optimisers.values():
            scheduler.step()

    def _optimiser_state(self) -> dict:
        return {k: {"optimizer": o.state_dict(), "scheduler": s.state_dict()} for k, (o, s) in self._optimisers.items()}

    def _load_optimiser_state(self, state: dict) -> None:
        for key, (opt, sched) in self._optimisers.items():
            opt.load_state_dict(state[key]["optimizer"])
            sched.load_state_dict(state[key]["scheduler"])


@component("trainer", "autoencoding")
class Autoencoding(Trainer, _Optimised):
    """Fit an encoder and a generator so that generator(encoder(x)) reconstructs x (GLO, AE)."""

    encoder: str = ref("encoder", "encoder", help="the encoder (a per-image code table for GLO)")
    generator: str = ref("generator", "generator")
    loss: ReconstructionLoss = param(factory=lambda: {"type": "l2"}, help="reconstruction loss")
    epochs: int = param(25, ge=1)
    batch_size: int = param(128, ge=1)
    optimizer: Optimizer = param(factory=_adam(1e-3, (0.5, 0.999)), help="generator optimiser")
    encoder_optimizer: Optimizer | None = param(
        factory=_adam(1e-2, (0.5, 0.999)), help="encoder/code optimiser (null: same settings as optimizer)")
    preview_count: int = param(32, ge=0, help="training images reconstructed at each evaluation")

    def bind(self, ctx: StageContext) -> None:
        self._ctx = ctx
        self._encoder = ctx.component(self.encoder, Encoder)
        self._generator = ctx.component(self.generator, Generator)
        self._batches = ctx.batches(self.batch_size)
        self._init_optimisers()
        self._add_optimiser("generator", self.optimizer, self._generator.parameters(), self._batches,
                            self.total_steps())
        self._add_optimiser("encoder", self.encoder_optimizer or self.optimizer, self._encoder.parameters(),
                            self._batches, self.total_steps())

    def total_steps(self) -> int:
        return self.epochs * self._batches.steps_per_epoch

    def train_step(self, step: int) -> dict[str, torch.Tensor]:
        indices = self._batches.indices(step)
        images = self._ctx.batch(indices)
        codes = self._encoder.encode(images, indices)
        loss = self.loss(self._generator(codes), images)
        for opt, _ in self._optimisers.values():
            opt.zero_grad(set_to_none=True)
        loss.backward()
        for opt, _ in self._optimisers.values():
            opt.step()
        self._step_schedules()
        self._encoder.after_update()
        return {"loss": loss.detach()}

    @torch.no_grad()
    def previews(self) -> dict[str, torch.Tensor]:
        n = min(self.preview_count, self._ctx.build.num_examples)
        if n == 0:
            return {}
        indices = torch.arange(n, device=self._ctx.device)
        images = self._ctx.batch(indices)
        self._generator.eval()
        try:
            recon = self._generator(self._encoder.encode(images, indices))
        finally:
            self._generator.train()
        # originals and their reconstructions side by side
        return {"reconstructions": torch.stack([images, recon], 1).reshape(-1, *images.shape[1:])}

    def state_dict(self) -> dict:
        return {"optimisers": self._optimiser_state()}

    def load_state_dict(self, state: dict) -> None:
        self._load_optimiser_state(state["optimisers"])


@component("trainer", "imle")
class IMLE(Trainer, _Optimised):
    """Implicit maximum likelihood (Li & Malik 2018): pull each target's nearest generated sample onto it.

    Every ``staleness`` epochs, ``sample_factor`` x N noise vectors are drawn and mapped; each target
    (a training image, or a learned code for GLANN) is paired with the exact nearest mapped sample,
    and the model then regresses those pairs. Unlike a GAN, every target is covered by some sample,
    so there is no mode dropping.
    """

    model: str = ref(("latent_mapper", "generator"), "mapper",
                     help="what is fitted: a latent mapper (GLANN) or a generator (image-space IMLE)")
    prior: str = ref("prior", "prior", help="where the model's input noise comes from")
    targets: str = ref("encoder", "codes", also=("data",),
                       help="'data' for the training images, or an encoder whose codes of the data are fitted")
    epochs: int = param(50, ge=1)
    batch_size: int = param(128, ge=1)
    sample_factor: float = param(2.0, gt=0, help="noise samples drawn per target at each refresh")
    staleness: int = param(1, ge=1, help="epochs between refreshes of the nearest-neighbour pairing")
    noise: float = param(0.0, ge=0, help="std of Gaussian noise added to the selected inputs at each step")
    optimizer: Optimizer = param(factory=_adam(1e-3, (0.5, 0.999), weight_decay=1e-5))

    def bind(self, ctx: StageContext) -> None:
        self._ctx = ctx
        self._model = ctx.components[self.model]
        self._prior = ctx.component(self.prior, Prior)
        if self.targets == "data":
            self._targets = ctx.batch(torch.arange(ctx.build.num_examples, device=ctx.device))
        else:
            self._targets = ctx.component(self.targets, Encoder).encode_all(ctx.images).detach()
        self._batches = ctx.batches(self.batch_size)
        self._selected = torch.zeros(self._targets.shape[0], self._prior.dim, device=ctx.device)
        self._init_optimisers()
        self._add_optimiser("model", self.optimizer, self._model.parameters(), self._batches, self.total_steps())

    def total_steps(self) -> int:
        return self.epochs * self._batches.steps_per_epoch

    @torch.no_grad()
    def _refresh(self) -> None:
        """Re-draw the noise pool and pair every target with its nearest mapped sample."""
        count = max(1, int(round(self.sample_factor * self._targets.shape[0])))
        pool = self._prior.sample(count, device=self._ctx.device, generator=self._ctx.generator)
        self._model.eval()
        try:
            mapped = torch.cat([self._model(chunk) for chunk in pool.split(4096)])
        finally:
            self._model.train()
        nearest, _ = nearest_neighbours(self._targets.flatten(1), mapped.flatten(1))
        self._selected = pool[nearest]

    def train_step(self, step: int) -> dict[str, torch.Tensor]:
        epoch, position = divmod(step, self._batches.steps_per_epoch)
        if position == 0 and epoch % self.staleness == 0:
            self._refresh()
        indices = self._batches.indices(step)
        inputs = self._selected[indices]
        if self.noise > 0:
            inputs = inputs + self.noise * torch.randn(inputs.shape, device=inputs.device,
                                                       generator=self._ctx.generator)
        loss = F.mse_loss(self._model(inputs), self._targets[indices])
        opt, _ = self._optimisers["model"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        self._step_schedules()
        return {"loss": loss.detach()}

    def state_dict(self) -> dict:
        return {"optimisers": self._optimiser_state(), "selected": self._selected}

    def load_state_dict(self, state: dict) -> None:
        self._load_optimiser_state(state["optimisers"])
        self._selected = state["selected"].to(self._ctx.device)


@component("trainer", "adversarial")
class Adversarial(Trainer, _Optimised):
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
    optimizer: Optimizer = param(factory=_adam(1e-4, (0.0, 0.9)), help="generator optimiser")
    critic_optimizer: Optimizer | None = param(None, help="critic optimiser (null: same settings as optimizer)")

    def bind(self, ctx: StageContext) -> None:
        self._ctx = ctx
        self._generator = ctx.component(self.generator, Generator)
        self._critic = ctx.component(self.critic, Critic)
        self._prior = ctx.component(self.prior, Prior)
        self._batches = ctx.batches(self.batch_size)
        for constraint in self.constraints:
            constraint.apply(self._critic)
        self._init_optimisers()
        self._g_opt = self._add_optimiser("generator", self.optimizer, self._generator.parameters(),
                                          self._batches, self.steps, self.n_critic)
        self._d_opt = self._add_optimiser("critic", self.critic_optimizer or self.optimizer,
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
        self._step_schedules()
        return {"critic": critic_loss, "penalty": penalty, "generator": generator_loss.detach()}

    def state_dict(self) -> dict:
        return {"optimisers": self._optimiser_state()}

    def load_state_dict(self, state: dict) -> None:
        self._load_optimiser_state(state["optimisers"])


@hookimpl
def genframe_components():
    return [Autoencoding, IMLE, Adversarial]
