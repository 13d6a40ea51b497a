"""Training batches: index batches drawn on the device, images gathered without host round trips."""

from __future__ import annotations

import torch

from genframe.errors import GenframeError
from genframe.ops import distributed
from genframe.ops.images import to_float


def move_to(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` (in host memory) on ``device``, without waiting for a CUDA device.

    Pinned memory is what makes a host-to-device copy asynchronous; PyTorch's caching host
    allocator keeps the pinned buffer from being reused before the copy has finished.
    """
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def gather_pinned(images: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``images[rows]`` (host memory) gathered straight into a pinned buffer: one host copy, and
    the buffer can be copied to a CUDA device asynchronously."""
    staged = torch.empty((rows.shape[0], *images.shape[1:]), dtype=images.dtype,
                         pin_memory=torch.cuda.is_available())
    return torch.index_select(images, 0, rows, out=staged)


def gather_to(images: torch.Tensor, rows: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``images[rows]`` (host memory) on ``device``, without waiting for a CUDA device."""
    if device.type != "cuda":
        return images[rows].to(device)
    return gather_pinned(images, rows).to(device, non_blocking=True)


class EpochBatches:
    """Index batches of one epoch after another, shuffled on the device without host round trips.

    The permutation of epoch ``e`` depends only on (seed, e), so the batch of any step is known
    from the step number alone: resuming needs no data-loader state. The last incomplete batch of
    an epoch is dropped so that every batch has the same shape (needed for CUDA graph capture).

    ``batch_size`` is the global batch; under ``torchrun`` every process draws the same
    permutation and :meth:`indices` gives this process its contiguous share of each batch.
    ``per_step`` is the number of batches one training step reads (a GAN's critic updates).

    With ``images`` given, :meth:`images` returns a step's batch as floats on ``device``. Images
    kept in host memory (a data set too large for the device) are gathered on the host with a
    host copy of the permutation, so the step never waits for the device, and copied from
    pinned memory asynchronously.

    Once :meth:`stage` has been called (``cuda_graphs``), a step's batches are read from fixed
    buffers that :meth:`stage` fills before the step, so that a captured step replays on new data.
    """

    def __init__(self, num_examples: int, batch_size: int, *, seed: int, device: torch.device,
                 world: distributed.World = distributed.SINGLE, images: torch.Tensor | None = None,
                 channels_last: bool = False, per_step: int = 1):
        self.num_examples = num_examples
        self.per_step = per_step
        self.batch_size = min(batch_size, num_examples)
        if self.batch_size % world.size:
            raise GenframeError(f"a batch of {self.batch_size} does not split evenly over {world.size} processes")
        self.local_batch_size = self.batch_size // world.size
        self.steps_per_epoch = num_examples // self.batch_size
        self.world = world
        self.seed = seed
        self.device = torch.device(device)
        self._images = images
        self._format = torch.channels_last if channels_last else torch.contiguous_format
        self._streamed = images is not None and images.device != self.device
        self._epoch = -1
        self._perm: torch.Tensor | None = None
        self._host_perm: torch.Tensor | None = None
        self._staged: torch.Tensor | None = None  # (per_step, local batch) indices of the staged step
        self._staged_images: torch.Tensor | None = None  # their uint8 images, when streamed from the host
        self._staged_step = -1

    def permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            # drawn where the images are, so that streamed batches are gathered without a device sync
            where = self._images.device if self._streamed else self.device
            gen = torch.Generator(device=where)
            gen.manual_seed(self.seed * 1_000_003 + epoch)
            perm = torch.randperm(self.num_examples, generator=gen, device=where)
            self._host_perm = perm if self._streamed else None
            self._perm = move_to(perm, self.device) if self._streamed else perm
            self._epoch = epoch
        assert self._perm is not None
        return self._perm

    def _rows(self, step: int) -> tuple[int, slice]:
        epoch, position = divmod(step, self.steps_per_epoch)
        start = position * self.batch_size + self.world.rank * self.local_batch_size
        return epoch, slice(start, start + self.local_batch_size)

    def stage(self, train_step: int) -> None:
        """Copy the indices (and streamed images) of training step ``train_step``'s batches into the
        fixed buffers that :meth:`indices` and :meth:`images` then return views of.

        A CUDA graph reads its inputs from fixed addresses: staging before every replay is what
        lets one captured step run on every batch. The copies are queued without waiting.
        """
        if self._staged is None:
            self._staged = torch.empty((self.per_step, self.local_batch_size), dtype=torch.int64, device=self.device)
            if self._streamed:
                assert self._images is not None
                self._staged_images = torch.empty((self.per_step, self.local_batch_size, *self._images.shape[1:]),
                                                  dtype=self._images.dtype, device=self.device)
        for slot in range(self.per_step):
            epoch, rows = self._rows(train_step * self.per_step + slot)
            self._staged[slot].copy_(self.permutation(epoch)[rows])
            if self._staged_images is not None:
                assert self._host_perm is not None and self._images is not None
                self._staged_images[slot].copy_(gather_pinned(self._images, self._host_perm[rows]),
                                                non_blocking=True)
        self._staged_step = train_step

    def _slot(self, step: int) -> int:
        slot = step - self._staged_step * self.per_step
        if not 0 <= slot < self.per_step:
            first = self._staged_step * self.per_step
            raise GenframeError(f"batch {step} was read during training step {self._staged_step}, which reads "
                                f"batches {first}..{first + self.per_step - 1}; a trainer reading several "
                                "batches per step must say so in ctx.batches(per_step=...)")
        return slot

    def indices(self, step: int) -> torch.Tensor:
        """Data set positions (on the device) of this process's examples in the batch of ``step``."""
        if self._staged is not None:
            return self._staged[self._slot(step)]
        epoch, rows = self._rows(step)
        return self.permutation(epoch)[rows]

    def images(self, step: int) -> torch.Tensor:
        """The images at :meth:`indices` (``step``) as floats in [-1, 1] on the device."""
        if self._images is None:
            raise GenframeError("these batches were made without images")
        if self._staged_images is not None:
            batch = self._staged_images[self._slot(step)]
        elif not self._streamed:
            batch = self._images[self.indices(step)]
        else:
            epoch, rows = self._rows(step)
            self.permutation(epoch)
            assert self._host_perm is not None
            batch = gather_to(self._images, self._host_perm[rows], self.device)
        return to_float(batch.contiguous(memory_format=self._format))

    def epoch_of(self, step: int) -> float:
        return step / self.steps_per_epoch
