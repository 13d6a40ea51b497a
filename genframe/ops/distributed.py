"""Data-parallel training under ``torchrun``: one process per device, the same run in every one.

Each process holds every component whole and trains on its shard of each global batch
(``batch_size`` in a spec is always the global batch). Three rules make a run with P processes
follow the single-process run with the same global batch:

- gradients are averaged across processes just before every optimiser step (a pre-step hook that
  every optimiser built by :func:`genframe.training.optimisers.build_optimizer` carries), so every process
  applies the same update to the same weights;
- random numbers drawn per example (noise for fakes, VAE reparameterisation, penalty
  interpolation weights...) are drawn for the whole global batch from generators whose states are
  equal in every process, and each process keeps its own rows (:func:`per_example`), so the
  numbers an example gets do not depend on the number of processes and the random states stay
  equal everywhere; a checkpoint therefore resumes under any number of processes;
- only rank 0 writes the run folder and calls observers; logged losses are averaged over ranks.

Averaging gradients at the optimiser step rather than wrapping modules in
``DistributedDataParallel`` keeps components unwrapped (checkpoints are the same as a
single-process run's) and works with the double backward of gradient penalties, which DDP's
gradient hooks do not support. It gives up DDP's overlap of communication with the backward pass.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Callable, Iterable

import attrs
import torch
import torch.distributed as dist

from genframe.errors import GenframeError
from genframe.ops import log


@attrs.frozen
class World:
    """This process's place among the processes of a run (rank 0 of 1 when not distributed)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = World()
#: How long a process waits in a collective: long enough for rank 0's evaluations.
COLLECTIVE_TIMEOUT = timedelta(hours=2)
_current = SINGLE
_owns_group = False  # whether join() created the process group (a caller's own group is left alone)
_warned_batch_norm = False


def current() -> World:
    """The world of the running training job."""
    return _current


def launched() -> bool:
    """Whether ``torchrun`` (or another launcher setting WORLD_SIZE) started several processes."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def join(device: torch.device) -> World:
    """Join the process group that the launcher describes in the environment, on ``device``'s backend.

    NCCL for CUDA devices, gloo otherwise. With no launcher this returns the single-process world.
    """
    global _current, _owns_group
    if not launched():
        _current = SINGLE
        return _current
    if not dist.is_available():
        raise GenframeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    if not dist.is_initialized():
        # rank 0 evaluates (FID, sample grids) while the others wait at their next collective
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=COLLECTIVE_TIMEOUT)
        _owns_group = True
    _current = World(rank=dist.get_rank(), size=dist.get_world_size(),
                     local_rank=int(os.environ.get("LOCAL_RANK", "0")))
    return _current


def leave() -> None:
    """Tear the process group down at the end of a run (it was created by :func:`join`)."""
    global _current, _owns_group
    if _owns_group and dist.is_initialized():
        dist.destroy_process_group()
    _current, _owns_group = SINGLE, False


def local_device(name: str) -> str:
    """The device of this process: ``cuda`` / ``auto`` mean the GPU numbered by LOCAL_RANK under a launcher."""
    if not launched():
        return name
    if name.startswith("cuda:"):
        raise GenframeError(f"device: {name!r} would put every process on one GPU; under torchrun each process "
                            "takes the GPU of its LOCAL_RANK: use device: cuda or auto (CUDA_VISIBLE_DEVICES "
                            "chooses the GPUs)")
    if name not in ("auto", "cuda"):
        return name
    if name == "auto" and not torch.cuda.is_available():
        return "cpu"
    return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"


def per_example(draw: Callable[[int], torch.Tensor], n: int) -> torch.Tensor:
    """``draw(n)`` for this process's ``n`` examples, taken as its rows of ``draw(n * world size)``."""
    world = _current
    if not world.active:
        return draw(n)
    return draw(n * world.size)[world.rank * n:(world.rank + 1) * n]


def sum_(tensor: torch.Tensor) -> torch.Tensor:
    """Replace ``tensor`` by its sum over processes, in place (a no-op in one process)."""
    if _current.active:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def average_(tensor: torch.Tensor) -> torch.Tensor:
    """Replace ``tensor`` by its mean over processes, in place (a no-op in one process)."""
    if _current.active:
        sum_(tensor).div_(_current.size)
    return tensor


def process_mean(tensor: torch.Tensor) -> torch.Tensor:
    """The mean of ``tensor`` over processes as a new tensor (for statistics that steer training)."""
    return average_(tensor.detach().clone()) if _current.active else tensor


#: Attribute of a table parameter holding the rows its gradient may be non-zero in this step.
_ROWS = "_genframe_rows_this_step"
_MIXED = object()  # the table was read twice in one step: exchange its whole gradient


def batch_mean(tensor: torch.Tensor) -> torch.Tensor:
    """The mean of ``tensor``'s rows over the global batch (every process holds an equal share),
    differentiable: gradients flow to every process's rows, so that a loss reading a batch
    statistic (a relativistic divergence's mean score) trains as it would in one process."""
    local = tensor.mean(dim=0)
    if not _current.active:
        return local
    import torch.distributed.nn.functional as dist_nn

    return dist_nn.all_reduce(local, op=dist.ReduceOp.SUM) / _current.size


def rows_used(table: torch.Tensor, rows: torch.Tensor) -> None:
    """Declare that this step's gradient of ``table`` (one row per training example, such as GLO's
    codes) is zero outside ``rows``, this process's share of the batch.

    Under torchrun the averaging then exchanges those rows of every process (batch x d numbers)
    instead of all-reducing the whole N x d gradient; the result is the same, because the batches
    of the processes are disjoint. Call it where the rows are read with gradients enabled.
    """
    if not _current.active or not torch.is_grad_enabled() or not table.requires_grad:
        return
    table.__dict__[_ROWS] = rows if _ROWS not in table.__dict__ else _MIXED


def _average_rows(grad: torch.Tensor, rows: torch.Tensor) -> None:
    """Average a gradient that is non-zero only in ``rows`` of each process: gather those rows only."""
    size = _current.size
    rows = rows.to(grad.device)
    every_rows = [torch.empty_like(rows) for _ in range(size)]
    dist.all_gather(every_rows, rows.contiguous())
    local = grad[rows]
    every_values = [torch.empty_like(local) for _ in range(size)]
    dist.all_gather(every_values, local.contiguous())
    grad.zero_()
    grad.index_add_(0, torch.cat(every_rows), torch.cat(every_values)).div_(size)


def average_gradients(params: Iterable[torch.Tensor]) -> None:
    """Average the gradients of ``params`` over processes: one all-reduce per dtype, on a flat buffer,
    except for tables whose used rows were declared with :func:`rows_used`."""
    if not _current.active:
        return
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for p in params:
        rows = p.__dict__.pop(_ROWS, None)
        if p.grad is not None and rows is not None and rows is not _MIXED:
            _average_rows(p.grad, rows)
        elif p.grad is not None:
            by_dtype.setdefault(p.grad.dtype, []).append(p.grad)
    for grads in by_dtype.values():
        flat = average_(torch.cat([g.reshape(-1) for g in grads]))
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()


def average_gradients_hook(optimizer: torch.optim.Optimizer, args, kwargs) -> None:
    """``Optimizer.register_step_pre_hook`` form of :func:`average_gradients` for the optimiser's parameters."""
    average_gradients(p for group in optimizer.param_groups for p in group["params"])


def gather_rows(compute: Callable[[int, int], torch.Tensor], total: int) -> torch.Tensor:
    """All ``total`` rows of a result, each process computing ``compute(start, stop)`` for a share.

    For work that every process needs whole but that splits by rows (mapping a noise pool,
    nearest-neighbour search per target): P processes each do 1/P of it.
    """
    world = _current
    if not world.active:
        return compute(0, total)
    share = -(-total // world.size)
    start, stop = min(world.rank * share, total), min((world.rank + 1) * share, total)
    part = compute(start, stop)
    padded = part.new_zeros((share, *part.shape[1:]))
    padded[:part.shape[0]] = part
    pieces = [torch.empty_like(padded) for _ in range(world.size)]
    dist.all_gather(pieces, padded.contiguous())
    return torch.cat(pieces)[:total]


def broadcast_object(value):
    """Rank 0's ``value`` in every process (e.g. the run folder's name, which contains a time)."""
    if not _current.active:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if _current.active:
        dist.barrier()


def convert_batch_norm(module: torch.nn.Module, device: torch.device) -> None:
    """Make the batch-norm layers of ``module`` normalise over the global batch (CUDA only).

    ``SyncBatchNorm`` has no CPU kernel; on the CPU each process normalises its own shard, which
    changes results slightly against a single process, and a warning says so once.
    """
    if not _current.active or not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in module.modules()):
        return
    if device.type == "cuda":
        for name, child in list(module.named_children()):
            setattr(module, name, torch.nn.SyncBatchNorm.convert_sync_batchnorm(child))
        return
    global _warned_batch_norm
    if not _warned_batch_norm and _current.is_main:
        log.warning("batch normalisation runs per process on the CPU (SyncBatchNorm needs CUDA); "
                    "results differ slightly from one process with the same global batch")
    _warned_batch_norm = True
