"""What a trainer sees of its stage: the data, the device, a random generator, the components.

The stage context also owns what the engine drives around every training step: the batches and
the optimisers a trainer makes through it (staged for CUDA graphs, schedules stepped, learning
rates scaled after a rollback).
"""

from __future__ import annotations

from typing import TypeVar

import attrs
import torch

from genframe.build.context import BuildContext
from genframe.components.roles import Component
from genframe.errors import GenframeError
from genframe.ops import distributed
from genframe.ops.images import to_float
from genframe.training.batches import EpochBatches, gather_to
from genframe.training.optimisers import Optimisers

C = TypeVar("C", bound=Component)


@attrs.define
class StageContext:
    """Handed to ``Trainer.bind``: the stage's data, device, random generator and components.

    The batches and optimisers a trainer makes here are the engine's to drive around each step:
    it steps the learning-rate schedules after every step and, under ``cuda_graphs``, stages each
    step's batches and makes the optimisers capturable.
    """

    build: BuildContext
    components: dict[str, Component]
    stage: str
    stage_index: int
    generator: torch.Generator  # on ``device``; its state is checkpointed
    made_batches: list[EpochBatches] = attrs.field(factory=list)
    made_optimisers: list[Optimisers] = attrs.field(factory=list)

    @property
    def device(self) -> torch.device:
        return self.build.device

    @property
    def images(self) -> torch.Tensor:
        if self.build.images is None:
            raise GenframeError("this stage needs the training images, but none were loaded")
        return self.build.images

    def batch(self, indices: torch.Tensor) -> torch.Tensor:
        """Float images in [-1, 1] on the device at the given data set positions.

        For previews and whole-set passes; training steps use ``EpochBatches.images``, which
        never waits for the device when the images are streamed from host memory.
        """
        images = self.images
        if images.device == self.device:
            return to_float(images[indices])
        return to_float(gather_to(images, indices.cpu(), self.device))

    def batches(self, batch_size: int, per_step: int = 1) -> EpochBatches:
        """Batches of ``batch_size`` (the global batch: under torchrun each process gets its share).

        ``per_step``: how many of them one training step reads (a GAN's ``n_critic``).
        """
        world = distributed.current()
        usable = min(batch_size, self.build.num_examples)
        if usable % world.size:
            raise GenframeError(f"stages[{self.stage_index}].trainer.batch_size: {usable} does not split evenly "
                                f"over {world.size} processes; use a multiple of {world.size}")
        batches = EpochBatches(self.build.num_examples, batch_size, seed=self.build.seed * 7919 + self.stage_index,
                               device=self.device, world=world, images=self.build.images,
                               channels_last=self.build.channels_last, per_step=per_step)
        self.made_batches.append(batches)
        return batches

    def optimisers(self) -> Optimisers:
        """An empty set of optimisers whose schedules the engine steps after every training step."""
        optimisers = Optimisers()
        self.made_optimisers.append(optimisers)
        return optimisers

    def begin_step(self, step: int, staged: bool) -> None:
        """Before training step ``step``: with ``staged`` (CUDA graphs), copy its batches into place."""
        if staged:
            for batches in self.made_batches:
                batches.stage(step)

    def end_step(self) -> None:
        """After a training step: advance every learning-rate schedule."""
        for optimisers in self.made_optimisers:
            optimisers.step_schedules()

    def set_learning_rate_scale(self, scale: float) -> None:
        """Run the stage's optimisers with their learning rates ``scale`` times the spec's, schedules
        included (the engine does after a rollback from a non-finite loss)."""
        if not self.made_optimisers:
            raise GenframeError(f"stage {self.stage!r}: its trainer made no optimisers through "
                                "ctx.optimisers(), so its learning rates cannot be lowered; "
                                "use nonfinite: {action: stop}")
        for optimisers in self.made_optimisers:
            if scale != optimisers.learning_rate_scale:
                optimisers.scale(scale / optimisers.learning_rate_scale)

    def observe(self, logged: dict[str, float]) -> None:
        """The mean losses of a logging interval, for the schedules that follow them (the engine calls it)."""
        seen: set[int] = set()
        for optimisers in self.made_optimisers:
            for schedule in optimisers.schedules:
                if id(schedule) not in seen:
                    seen.add(id(schedule))
                    schedule.observe(logged)

    def component(self, name: str, role: type[C]) -> C:
        """A named component (already checked by the build to exist with the right role)."""
        comp = self.components[name]
        if not isinstance(comp, role):
            raise GenframeError(f"component {name!r} is a {comp.role}, not a {role.role}")
        return comp
