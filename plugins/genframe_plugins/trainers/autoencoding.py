"""Autoencoding: fit an encoder and a generator by reconstruction (GLO, AE; VAE and WAE add a latent term).

The four models differ only in their components: GLO's encoder is a per-image code table, the
others' a network (Gaussian for the VAE), and the VAE and WAE add a latent divergence (KL, MMD)
that pulls the codes towards a prior so that the prior can be sampled.
"""

from __future__ import annotations

import torch

from genframe import (Component, Encoder, Generator, LatentDivergence, Optimizer, ReconstructionLoss, SpecError,
                      StageContext, Trainer, component, hookimpl, param, ref)
from genframe_plugins.trainers._defaults import adam_defaults


@component("trainer", "autoencoding")
class Autoencoding(Trainer):
    """Fit an encoder and a generator so that generator(encoder(x)) reconstructs x (GLO, AE, VAE, WAE).

    The loss is the reconstruction loss plus ``weight`` times the latent divergence, when one is given.
    """

    encoder: str = ref("encoder", "encoder", help="the encoder (a per-image code table for GLO)")
    generator: str = ref("generator", "generator")
    loss: ReconstructionLoss = param(factory=lambda: {"type": "l2"}, help="reconstruction loss")
    latent_divergence: LatentDivergence | None = param(
        None, help="term pulling the codes towards a prior: kl (VAE), mmd (WAE); null: none (AE, GLO)")
    epochs: int = param(25, ge=1)
    batch_size: int = param(128, ge=1)
    optimizer: Optimizer = param(factory=adam_defaults(1e-3, (0.5, 0.999)), help="generator optimiser")
    encoder_optimizer: Optimizer | None = param(
        factory=adam_defaults(1e-2, (0.5, 0.999)), help="encoder/code optimiser (null: same settings as optimizer)")
    preview_count: int = param(32, ge=0, help="training images reconstructed at each evaluation")
    restart_optimizer: bool = param(False, help="forget the optimisers' moments at the start of every epoch "
                                                "(the official GLANN code builds new Adams each epoch)")

    supports_cuda_graphs = True

    def check(self, components: dict[str, Component], path: str) -> None:
        encoder, generator = components[self.encoder], components[self.generator]
        if generator.latent_dim is not None and encoder.dim != generator.latent_dim:  # None: checked after setup
            raise SpecError(f"encoder {self.encoder!r} makes {encoder.dim}-d codes but generator {self.generator!r} "
                            f"takes {generator.latent_dim}-d ones; make them equal",
                            path=f"components.{self.generator}.latent_dim")
        if self.latent_divergence is not None:
            self.latent_divergence.check(components[self.encoder], components, f"{path}.latent_divergence")

    def bind(self, ctx: StageContext) -> None:
        self._ctx = ctx
        self._encoder = ctx.component(self.encoder, Encoder)
        self._generator = ctx.component(self.generator, Generator)
        self.loss.setup(ctx.build)  # losses with weights (vgg) load them now, not at the first step
        if self.latent_divergence is not None:
            self.latent_divergence.bind(ctx)
        self._batches = ctx.batches(self.batch_size)
        self._optimisers = ctx.optimisers()
        self._optimisers.add("generator", self.optimizer, self._generator.parameters(), self._batches,
                            self.total_steps())
        self._optimisers.add("encoder", self.encoder_optimizer or self.optimizer, self._encoder.parameters(),
                            self._batches, self.total_steps())

    def total_steps(self) -> int:
        return self.epochs * self._batches.steps_per_epoch

    def _restarts(self, step: int) -> bool:
        return self.restart_optimizer and step > 0 and step % self._batches.steps_per_epoch == 0

    def replayable(self, step: int) -> bool:
        return not self._restarts(step)

    def train_step(self, step: int) -> dict[str, torch.Tensor]:
        if self._restarts(step):
            self._optimisers.restart()
        indices = self._batches.indices(step)
        images = self._batches.images(step)
        posterior = self._encoder.posterior(images, indices, generator=self._ctx.generator)
        reconstruction = self.loss(self._generator(posterior.sample), images)
        logged = {}
        loss = reconstruction
        if self.latent_divergence is not None:
            divergence = self.latent_divergence(posterior, self._ctx.generator)
            loss = reconstruction + self.latent_divergence.weight * divergence
            logged = {"reconstruction": reconstruction.detach(),
                      self.latent_divergence.type_name: divergence.detach()}
        self._optimisers.zero_grad()
        loss.backward()
        self._optimisers.step()
        self._encoder.after_update()
        self._generator.after_update()  # e.g. an EMA generator averages its weights
        return {"loss": loss.detach(), **logged}

    @torch.no_grad()
    def previews(self) -> dict[str, torch.Tensor]:
        n = min(self.preview_count, self._ctx.build.num_examples)
        if n == 0:
            return {}
        indices = torch.arange(n, device=self._ctx.device)
        images = self._ctx.batch(indices)
        modules = (self._encoder, self._generator)
        for module in modules:
            module.eval()
        try:
            recon = self._generator(self._encoder.encode(images, indices))
        finally:
            for module in modules:
                module.train()
        # originals and their reconstructions side by side
        return {"reconstructions": torch.stack([images, recon], 1).reshape(-1, *images.shape[1:])}

    def state_dict(self) -> dict:
        return {"optimisers": self._optimisers.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self._optimisers.load_state_dict(state["optimisers"])


@hookimpl
def genframe_components():
    return [Autoencoding]
