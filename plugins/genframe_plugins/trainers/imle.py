"""IMLE: fit a map from noise to targets by nearest neighbours (image-space IMLE, GLANN's latent mapper)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from genframe import (Component, Encoder, Generator, LatentMapper, Optimizer, Prior, SpecError, StageContext, Trainer,
                      calibrate_batch_norm, component, gather_rows, hookimpl, nearest_neighbours, param, per_example,
                      ref)
from genframe_plugins.trainers._defaults import adam_defaults

#: Rows mapped at a time outside the steps (the pool, the calibration): bounds their memory.
_CHUNK = 4096


def _nearest(targets: torch.Tensor, samples: torch.Tensor) -> torch.Tensor:
    """Every target's nearest sample (the share of each process, gathered)."""
    return gather_rows(lambda start, stop: nearest_neighbours(targets[start:stop], samples)[0], len(targets))


def _distinct_nearest(targets: torch.Tensor, samples: torch.Tensor) -> torch.Tensor:
    """A sample for every target, no two alike: each target proposes its nearest free sample, the closest
    proposer of a sample takes it, and the others propose again among the samples still free.

    A greedy approximation of the assignment of least total distance; every round settles at least
    one target per proposed sample. Targets left when the samples run out take their nearest.
    """
    chosen = torch.empty(len(targets), dtype=torch.long, device=targets.device)
    free = torch.ones(len(samples), dtype=torch.bool, device=samples.device)
    waiting = torch.arange(len(targets), device=targets.device)
    while len(waiting) and bool(free.any()):
        keys = free.nonzero().squeeze(1)
        proposed = keys[_nearest(targets[waiting], samples[keys])]
        distance = (targets[waiting] - samples[proposed]).pow(2).sum(1)
        closest = distance.new_full((len(samples),), float("inf"))
        closest.scatter_reduce_(0, proposed, distance, "amin")
        order = torch.arange(len(waiting), device=targets.device)
        # the closest proposer wins; of equally close ones, the first
        first = torch.full((len(samples),), len(waiting), device=targets.device)
        first.scatter_reduce_(0, proposed, torch.where(distance <= closest[proposed], order, len(waiting)), "amin")
        wins = first[proposed] == order
        chosen[waiting[wins]] = proposed[wins]
        free[proposed[wins]] = False
        waiting = waiting[~wins]
    if len(waiting):
        chosen[waiting] = _nearest(targets[waiting], samples)
    return chosen


@component("trainer", "imle")
class IMLE(Trainer):
    """Implicit maximum likelihood (Li & Malik 2018): pull each target's nearest generated sample onto it.

    Every ``staleness`` epochs, ``sample_factor`` x N noise vectors are drawn and mapped; each target
    (a training image, or a learned code for GLANN) is paired with the exact nearest mapped sample
    (``pairing``), and the model then regresses those pairs. Unlike a GAN, every target is covered
    by some sample, so there is no mode dropping. The steps see only matched noise, so the model's batch-norm
    statistics are measured again on fresh prior noise at the end (``calibrate_statistics``).
    """

    model: str = ref(("latent_mapper", "generator"), "mapper",
                     help="what is fitted: a latent mapper (GLANN) or a generator (image-space IMLE)")
    prior: str = ref("prior", "prior", read_only=True, help="where the model's input noise comes from")
    targets: str = ref("encoder", "codes", also=("data",), read_only=True,
                       help="'data' for the training images, or an encoder whose codes of the data are fitted")
    epochs: int = param(50, ge=1)
    batch_size: int = param(128, ge=1)
    sample_factor: float = param(2.0, gt=0, help="noise samples drawn per target at each refresh")
    staleness: int = param(1, ge=1, help="epochs between refreshes of the nearest-neighbour pairing")
    noise: float = param(0.0, ge=0, help="std of Gaussian noise added to the selected inputs at each step")
    pool_statistics: Literal["running", "batch", "prior"] = param(
        "running", help="normalisation statistics when the pool is mapped: running (eval mode, as samples are "
                        "drawn), batch (train mode in chunks of batch_size, as in the steps) or prior (eval mode "
                        "with statistics measured on the pool itself, as calibrate_statistics leaves them)")
    calibrate_statistics: bool = param(
        True, help="after the last step, measure the model's batch-norm statistics on fresh prior noise, which is "
                   "what samples are drawn from: the running statistics of the steps come from the matched noise, "
                   "a biased selection of it")
    pairing: Literal["nearest", "distinct"] = param(
        "nearest", help="nearest: every target takes its nearest sample, so targets may share one and the model "
                        "is pulled towards their average; distinct: no two targets share a sample (each takes its "
                        "nearest sample that no closer target has taken; if samples run out, the rest share)")
    restart_optimizer: bool = param(False, help="forget the optimiser's moments at every refresh (the "
                                                "official GLANN code builds a new Adam each epoch)")
    optimizer: Optimizer = param(factory=adam_defaults(1e-3, (0.5, 0.999), weight_decay=1e-5))

    supports_cuda_graphs = True

    def check(self, components: dict[str, Component], path: str) -> None:
        model, prior = components[self.model], components[self.prior]
        takes = model.latent_dim if isinstance(model, Generator) else model.in_dim
        if None not in (prior.dim, takes) and prior.dim != takes:  # None: known after setup, checked again
            field = "latent_dim" if isinstance(model, Generator) else "in_dim"
            raise SpecError(f"prior {self.prior!r} draws {prior.dim}-d vectors but {self.model!r} takes {takes}-d "
                            "ones; make them equal", path=f"components.{self.model}.{field}")
        if isinstance(model, LatentMapper) and self.targets == "data":
            raise SpecError(f"{self.model!r} is a latent mapper, which makes codes, not images: fit it to an "
                            "encoder's codes, or fit a generator to the data", path=f"{path}.targets")
        if isinstance(model, LatentMapper) and components[self.targets].dim != model.out_dim:
            raise SpecError(f"{self.model!r} makes {model.out_dim}-d codes but encoder {self.targets!r} holds "
                            f"{components[self.targets].dim}-d ones; make them equal",
                            path=f"components.{self.model}.out_dim")

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
        self._optimisers = ctx.optimisers()
        self._optimisers.add("model", self.optimizer, self._model.parameters(), self._batches, self.total_steps())

    def total_steps(self) -> int:
        return self.epochs * self._batches.steps_per_epoch

    @torch.no_grad()
    def _refresh(self) -> None:
        """Re-draw the noise pool and pair every target with its nearest mapped sample.

        Under torchrun every process draws the same pool, maps a share of it and searches the
        neighbours of a share of the targets among all mapped samples; the shares are gathered, so
        every process ends with the whole pairing.
        """
        pool = self._pool()
        batch_statistics = self.pool_statistics == "batch"
        chunk = self.batch_size if batch_statistics else _CHUNK

        def mapped_rows(start: int, stop: int) -> torch.Tensor:
            # near-equal chunks: batch statistics of a last chunk of one row would be undefined
            parts = torch.tensor_split(pool[start:stop], max(1, -(-(stop - start) // chunk)))
            return torch.cat([self._model(part) for part in parts])

        keep = self.pool_statistics != "running"
        running = {name: b.clone() for name, b in self._model.named_buffers()} if keep else {}
        if self.pool_statistics == "prior":
            self._measure_statistics(pool)
        self._model.train(batch_statistics)
        try:
            mapped = gather_rows(mapped_rows, len(pool))
        finally:
            self._model.train()
            for name, buffer in self._model.named_buffers():  # the pool leaves the running statistics as they were
                if name in running:
                    buffer.copy_(running[name])
        targets, samples = self._targets.flatten(1), mapped.flatten(1)
        nearest = (_distinct_nearest if self.pairing == "distinct" else _nearest)(targets, samples)
        self._selected.copy_(pool[nearest])  # in place: replayed steps read it where they were captured
        if self.restart_optimizer:
            self._optimisers.restart()

    def _pool(self) -> torch.Tensor:
        count = max(1, int(round(self.sample_factor * self._targets.shape[0])))
        return self._prior.sample(count, device=self._ctx.device, generator=self._ctx.generator)

    def _measure_statistics(self, noise: torch.Tensor) -> None:
        """Set every batch norm's running statistics to those of ``noise`` passed through the model."""
        calibrate_batch_norm(self._model, torch.tensor_split(noise, max(1, -(-len(noise) // _CHUNK))))

    def _last(self, step: int) -> bool:
        return self.calibrate_statistics and step == self.total_steps() - 1

    def _refreshes(self, step: int) -> bool:
        epoch, position = divmod(step, self._batches.steps_per_epoch)
        return position == 0 and epoch % self.staleness == 0

    def replayable(self, step: int) -> bool:
        return not (self._refreshes(step) or self._last(step))

    def train_step(self, step: int) -> dict[str, torch.Tensor]:
        if self._refreshes(step):
            self._refresh()
        indices = self._batches.indices(step)
        inputs = self._selected[indices]
        if self.noise > 0:
            inputs = inputs + self.noise * per_example(
                lambda n: torch.randn((n, *inputs.shape[1:]), device=inputs.device, generator=self._ctx.generator),
                inputs.shape[0])
        loss = F.mse_loss(self._model(inputs), self._targets[indices])
        self._optimisers.zero_grad()
        loss.backward()
        self._optimisers.step()
        if isinstance(self._model, Generator):
            self._model.after_update()  # e.g. an EMA generator averages its weights
        if self._last(step):
            self._measure_statistics(self._pool())
        return {"loss": loss.detach()}

    def state_dict(self) -> dict:
        return {"optimisers": self._optimisers.state_dict(), "selected": self._selected.clone()}

    def load_state_dict(self, state: dict) -> None:
        self._optimisers.load_state_dict(state["optimisers"])
        self._selected.copy_(state["selected"])


@hookimpl
def genframe_components():
    return [IMLE]
