"""A system built on the meta device: every shape checked and the memory estimated, with no memory and no data.

``genframe validate`` and ``genframe run`` both call :func:`dry_run` before anything is allocated,
so that validation is a run minus training: a sampler chain whose parts do not fit, a generator
that cannot make the data's images, or a network too large for the device is refused with one
line, instead of failing in an allocator or deep inside a loss. Tensors on the meta device have
shapes and dtypes but no storage, so a billion-parameter mistake costs nothing to find.
"""

from __future__ import annotations

import copy
import os

import attrs
import torch

from genframe.build.prepare import prepare
from genframe.build.sampler import Sampler
from genframe.build.system import System
from genframe.components.roles import ModuleComponent
from genframe.errors import GenframeError

META = torch.device("meta")
#: Bytes of training state per parameter: the weight, its gradient and two Adam moments.
TRAINING_BYTES_PER_PARAMETER_BYTE = 4
#: Activations kept for the backward pass, as a multiple of the sampler chain's forward outputs
#: (the generator's own, a critic's or an encoder's pass over the same batch, and their gradients).
ACTIVATION_FACTOR = 3
DEFAULT_BATCH = 64


@attrs.frozen
class MemoryEstimate:
    parameters: int  # bytes of weights and buffers
    training: int  # bytes of weights, gradients and optimiser moments
    activations: int  # bytes of activations for the largest training batch
    batch: int

    @property
    def total(self) -> int:
        return self.training + self.activations


def human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.3g} {unit}"
        size /= 1024
    raise AssertionError


def dry_run(system: System, device: torch.device | None = None) -> MemoryEstimate | None:
    """Build ``system`` on the meta device and check it; with ``device``, refuse it when the estimated
    training memory exceeds what the device has free. None when the data set cannot say its shape
    without being read (then only the checks that need no data shape ran, at build time)."""
    planned = system.data.planned_shape()
    if planned is None:
        return None
    system = copy.deepcopy(system)  # built afresh on the meta device; the caller's system stays unbuilt
    count, channels, size = planned
    shape = {"num_examples": max(1, count or 1), "channels": channels, "image_size": size,
             "num_classes": None, "class_names": None}
    try:
        with torch.device(META):
            ctx = prepare(system, META, load_data=False, data_shape=shape)
    except GenframeError as exc:  # a component that cannot be built for this data names itself, not the file
        if str(exc).startswith(system.source):
            raise
        raise GenframeError(f"{system.source}: {exc}") from None
    except (RuntimeError, OverflowError, ValueError, TypeError) as exc:  # sizes beyond what a tensor can describe
        if isinstance(exc, TypeError) and "overflow" not in str(exc).lower():
            raise
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise GenframeError(f"{system.source}: the networks cannot be built at these sizes ({detail}); lower the "
                            "networks' widths or the image size") from None
    estimate = _estimate(system, ctx.channels * ctx.image_size ** 2)
    if device is not None:
        free = free_memory(device)
        if free is not None and estimate.total > free:
            raise GenframeError(
                f"{system.source}: training needs about {human(estimate.total)} ({human(estimate.training)} of "
                f"weights, gradients and optimiser state for {human(estimate.parameters)} of parameters, and "
                f"{human(estimate.activations)} of activations for a batch of {estimate.batch}) but {device} has "
                f"{human(free)} free; lower the networks' widths, the image size or the batch size")
    return estimate


def _estimate(system: System, pixels: int) -> MemoryEstimate:
    modules = [c for c in system.components.values() if isinstance(c, ModuleComponent)]
    parameters = sum(t.numel() * t.element_size() for m in modules for t in [*m.parameters(), *m.buffers()])
    trained = sum(p.numel() * p.element_size() for m in modules for p in m.parameters() if p.requires_grad)
    batch = max((int(s.trainer.config().get("batch_size") or DEFAULT_BATCH) for s in system.stages),
                default=DEFAULT_BATCH)
    outputs = _forward_outputs(system)
    activations = ACTIVATION_FACTOR * batch * max(outputs, 4 * pixels)
    return MemoryEstimate(parameters, parameters + (TRAINING_BYTES_PER_PARAMETER_BYTE - 1) * trained,
                          activations, batch)


def _forward_outputs(system: System) -> int:
    """Bytes every module of the sampler chain outputs for one example (measured on the meta device).

    Each module counts once: a flow's solver calls its network many times while sampling, but a
    training step runs it once.
    """
    total = 0
    counted: set[int] = set()

    def count(module, inputs, output) -> None:
        nonlocal total
        if isinstance(output, torch.Tensor) and not list(module.children()) and id(module) not in counted:
            counted.add(id(module))
            total += output.numel() * output.element_size()

    modules = [system.components[n] for n in system.sampler if isinstance(system.components[n], torch.nn.Module)]
    handles = [m.register_forward_hook(count) for module in modules for m in module.modules()]
    try:
        Sampler(system, META)(1)
    finally:
        for handle in handles:
            handle.remove()
    return total


def free_memory(device: torch.device) -> int | None:
    """Bytes free on ``device``: CUDA's own count, or the host's available memory for the CPU."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "cpu" and hasattr(os, "sysconf"):
        try:
            return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError):
            return None
    return None
