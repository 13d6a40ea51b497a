"""Epoch batching: deterministic shuffles, static shapes, and images read on or off the device."""

from __future__ import annotations

import pytest
import torch

from genframe.api import train
from genframe.training.context import EpochBatches
from genframe.errors import GenframeError
from genframe.ops.images import to_float
from genframe.storage import RunStorage


def _images(n: int = 50) -> torch.Tensor:
    return torch.randint(0, 256, (n, 1, 4, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def test_batches_depend_only_on_seed_and_step_and_have_one_shape():
    a = EpochBatches(50, 16, seed=1, device=torch.device("cpu"))
    b = EpochBatches(50, 16, seed=1, device=torch.device("cpu"))
    assert a.steps_per_epoch == 3  # the incomplete last batch of an epoch is dropped
    seen = [a.indices(step) for step in range(3)]
    assert all(s.shape == (16,) for s in seen)
    assert len(set(torch.cat(seen).tolist())) == 48  # an epoch visits examples without repeats
    assert torch.equal(b.indices(7), a.indices(7))  # random access: no iterator state to restore
    assert not torch.equal(a.indices(0), a.indices(3))  # the next epoch is another shuffle


def test_images_of_a_step_are_those_at_its_indices():
    images = _images()
    batches = EpochBatches(50, 16, seed=1, device=torch.device("cpu"), images=images)
    for step in (0, 4):
        assert torch.equal(batches.images(step), to_float(images[batches.indices(step)]))


def test_streamed_images_are_gathered_with_the_host_permutation():
    """The host path (images in host memory, training on a GPU), exercised on the CPU."""
    images = _images()
    resident = EpochBatches(50, 16, seed=1, device=torch.device("cpu"), images=images)
    streamed = EpochBatches(50, 16, seed=1, device=torch.device("cpu"), images=images)
    streamed._streamed = True  # what images kept off the training device select
    for step in (0, 2, 5):
        assert torch.equal(streamed.indices(step), resident.indices(step))
        assert torch.equal(streamed.images(step), resident.images(step))


@pytest.mark.parametrize("streamed", [False, True], ids=["resident", "streamed"])
def test_staged_batches_are_the_steps_batches_in_fixed_buffers(streamed):
    """What a replayed CUDA graph reads: each step's batches copied into the same memory."""
    images = _images()
    plain = EpochBatches(50, 16, seed=1, device=torch.device("cpu"), images=images, per_step=2)
    staged = EpochBatches(50, 16, seed=1, device=torch.device("cpu"), images=images, per_step=2)
    staged._streamed = streamed
    staged.stage(0)
    assert (staged._staged_images is not None) == streamed  # streamed images are copied in as well

    def buffers() -> tuple[int, int | None]:
        held = staged._staged_images
        return staged.indices(2 * staged._staged_step).data_ptr(), None if held is None else held.data_ptr()

    first = buffers()
    for step in (0, 1, 2, 7):  # a step's two batches can straddle an epoch (3 batches per epoch)
        staged.stage(step)
        for batch in (2 * step, 2 * step + 1):
            assert torch.equal(staged.indices(batch), plain.indices(batch))
            assert torch.equal(staged.images(batch), plain.images(batch))
        assert buffers() == first
    with pytest.raises(GenframeError, match=r"batch 3 was read during training step 7, which reads batches 14..15"):
        staged.indices(3)


@pytest.mark.cuda
def test_data_placement_host_streams_pinned_images_to_the_gpu(tiny_spec, write_spec, tmp_path):
    tiny_spec.update(device="cuda", data_placement="host")
    finished = train(write_spec(tiny_spec), out=str(tmp_path / "run"))
    assert finished.build_ctx.images.device.type == "cpu" and finished.build_ctx.images.is_pinned()
    log = RunStorage.open(finished.url).read_log()
    assert log and all(torch.isfinite(torch.tensor(r["loss"])) for r in log if "loss" in r)


@pytest.mark.cuda
def test_data_placement_auto_keeps_small_data_on_the_device(tiny_spec, write_spec, tmp_path):
    tiny_spec.update(device="cuda")
    finished = train(write_spec(tiny_spec), out=str(tmp_path / "run"))
    assert finished.build_ctx.images.device.type == "cuda"
