"""What components and trainers see of a run: the data's shape, the device, other components."""

from __future__ import annotations

from typing import TypeVar

import attrs
import torch

from . import distributed
from .errors import GenframeError
from .images import to_float
from .roles import Component

C = TypeVar("C", bound=Component)


@attrs.define
class BuildContext:
    """Data facts components size themselves by. ``images`` is None when only sampling."""

    num_examples: int
    channels: int
    image_size: int
    device: torch.device
    seed: int = 0
    images: torch.Tensor | None = None  # uint8 (N, C, H, W) on ``device``
    labels: torch.Tensor | None = None  # int64 (N,) on ``device``, for class-conditional models
    num_classes: int | None = None  # classes in the labels (recorded, so sampling needs no data)


class EpochBatches:
    """Index batches of one epoch after another, shuffled on the device without host round trips.

    The permutation of epoch ``e`` depends only on (seed, e), so the batch of any step is known
    from the step number alone: resuming needs no data-loader state. The last incomplete batch of
    an epoch is dropped so that every batch has the same shape (needed for CUDA graph capture).

    ``batch_size`` is the global batch; under ``torchrun`` every process draws the same
    permutation and :meth:`indices` gives this process its contiguous share of each batch.
    """

    def __init__(self, num_examples: int, batch_size: int, *, seed: int, device: torch.device,
                 world: distributed.World = distributed.SINGLE):
        self.num_examples = num_examples
        self.batch_size = min(batch_size, num_examples)
        if self.batch_size % world.size:
            raise GenframeError(f"a batch of {self.batch_size} does not split evenly over {world.size} processes")
        self.local_batch_size = self.batch_size // world.size
        self.steps_per_epoch = num_examples // self.batch_size
        self.world = world
        self.seed = seed
        self.device = torch.device(device)
        self._epoch = -1
        self._perm: torch.Tensor | None = None

    def permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            gen = torch.Generator(device=self.device)
            gen.manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = torch.randperm(self.num_examples, generator=gen, device=self.device)
            self._epoch = epoch
        assert self._perm is not None
        return self._perm

    def indices(self, step: int) -> torch.Tensor:
        """Data set positions of this process's examples in the batch of ``step``."""
        epoch, position = divmod(step, self.steps_per_epoch)
        start = position * self.batch_size + self.world.rank * self.local_batch_size
        return self.permutation(epoch)[start:start + self.local_batch_size]

    def epoch_of(self, step: int) -> float:
        return step / self.steps_per_epoch


@attrs.define
class StageContext:
    """Handed to ``Trainer.bind``: the stage's data, device, random generator and components."""

    build: BuildContext
    components: dict[str, Component]
    stage: str
    stage_index: int
    generator: torch.Generator  # on ``device``; its state is checkpointed

    @property
    def device(self) -> torch.device:
        return self.build.device

    @property
    def images(self) -> torch.Tensor:
        if self.build.images is None:
            raise GenframeError("this stage needs the training images, but none were loaded")
        return self.build.images

    def batch(self, indices: torch.Tensor) -> torch.Tensor:
        """Float images in [-1, 1] for the given data set positions, converted on the device."""
        return to_float(self.images[indices])

    def batches(self, batch_size: int) -> EpochBatches:
        """Batches of ``batch_size`` (the global batch: under torchrun each process gets its share)."""
        world = distributed.current()
        usable = min(batch_size, self.build.num_examples)
        if usable % world.size:
            raise GenframeError(f"stages[{self.stage_index}].trainer.batch_size: {usable} does not split evenly "
                                f"over {world.size} processes; use a multiple of {world.size}")
        return EpochBatches(self.build.num_examples, batch_size,
                            seed=self.build.seed * 7919 + self.stage_index, device=self.device, world=world)

    def component(self, name: str, role: type[C]) -> C:
        """A named component (already checked by the build to exist with the right role)."""
        comp = self.components[name]
        if not isinstance(comp, role):
            raise GenframeError(f"component {name!r} is a {comp.role}, not a {role.role}")
        return comp
