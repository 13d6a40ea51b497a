"""Whole training steps as CUDA graphs (the spec's ``cuda_graphs``).

Small generative models are bound by the host: a WGAN-GP step launches hundreds of kernels, each
costing microseconds of Python and driver time, while the GPU finishes each in less. A CUDA graph
records a step's kernels once and replays them with one launch. Replay runs the same kernels on
the same memory, so everything a step reads must sit at fixed addresses and be updated in place:
batches are staged into fixed buffers before each replay (``EpochBatches.stage``), learning rates
live in device tensors (``Optimisers.make_capturable``), and trainers keep their state in tensors
they update with ``copy_`` (see ``Trainer.supports_cuda_graphs``).

``cuda_graphs: emulate`` replays recorded operations the same way on any device, one by one: far
slower than eager, it exists so that trainer authors (and the test suite) can check on a CPU that
a trainer is replay-safe, and that a replayed run trains exactly like an eager one.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Iterator

import torch

from genframe.ops import distributed
from genframe.ops.graphs import CaptureError, CudaGraph, RecordedGraph, side_stream
from genframe.training.context import StageContext
from genframe.components.roles import Trainer
from genframe.ops import log

Outputs = dict[str, torch.Tensor]

#: Eager steps before the capture: lazily created state (optimiser moments, cuDNN plans) must exist
#: before a graph is recorded, and PyTorch asks for warm-up on a side stream.
WARMUP_STEPS = 3


def resolve_mode(setting: bool | str, device: torch.device) -> str:
    """``off``, ``cuda`` or ``emulate`` for the spec's ``cuda_graphs`` on ``device``."""
    if setting is False:
        return "off"
    if setting == "emulate":
        return "emulate"
    if device.type != "cuda":
        log.warning(f"cuda_graphs: true has no effect on {device.type}; steps run eagerly")
        return "off"
    return "cuda"


class StepRunner:
    """Runs a stage's training steps: eagerly, or by replaying one captured step.

    Around every step the stage context stages batches (when replaying) and steps the schedules.
    The first ``WARMUP_STEPS`` replayable steps run eagerly, the next is captured, and every later
    replayable step replays it; the trainer's output tensors are then the graph's, overwritten by
    each replay, so callers must read (or add up) them before the next step.
    """

    def __init__(self, trainer: Trainer, ctx: StageContext, mode: str, where: str):
        self.trainer, self.ctx, self.mode, self.where = trainer, ctx, mode, where
        self._graph: CudaGraph | RecordedGraph | None = None
        self._outputs: Outputs = {}
        self._warm = 0
        self.captured_at: int | None = None  # the step that was captured (for tests and logs)
        if mode != "off":
            for optimisers in ctx.made_optimisers:
                optimisers.make_capturable(ctx.device)

    def __call__(self, step: int) -> Outputs:
        with _capturable_anywhere() if self.mode == "emulate" else contextlib.nullcontext():
            return self._step(step)

    def _step(self, step: int) -> Outputs:
        self.ctx.begin_step(step, staged=self.mode != "off")
        if self.mode == "off" or not self.trainer.replayable(step):
            outputs = self.trainer.train_step(step)
        elif self._graph is not None:
            self._graph.replay()
            outputs = self._outputs
        elif self._warm < WARMUP_STEPS:
            self._warm += 1
            with side_stream(self.ctx.device) if self.mode == "cuda" else contextlib.nullcontext():
                outputs = self.trainer.train_step(step)
        else:
            outputs = self._capture(step)
        self.ctx.end_step()
        return outputs

    def _capture(self, step: int) -> Outputs:
        graph = CudaGraph((self.ctx.generator,)) if self.mode == "cuda" else RecordedGraph()
        try:
            outputs = graph.capture(lambda: self.trainer.train_step(step))
        except CaptureError as exc:
            raise CaptureError(f"{self.where}: {exc}; set cuda_graphs: false") from None
        except torch.cuda.OutOfMemoryError:
            raise  # the engine's message: lower the batch size
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CaptureError(f"{self.where}: cuda_graphs could not capture a training step of trainer "
                               f"{self.trainer.type_name!r} ({first}); set cuda_graphs: false") from None
        if not all(isinstance(v, torch.Tensor) for v in outputs.values()):
            raise CaptureError(f"{self.where}: trainer {self.trainer.type_name!r} returned values that are not "
                               "tensors, which a replayed step cannot update; set cuda_graphs: false")
        self._graph, self._outputs, self.captured_at = graph, outputs, step
        kind = "a CUDA graph" if self.mode == "cuda" else "an emulated graph"
        if distributed.current().is_main:
            log.note(f"{self.where}: step {step + 1} captured as {kind}; later steps replay it")
        return outputs


@contextlib.contextmanager
def _capturable_anywhere() -> Iterator[None]:
    """Let ``capturable`` optimisers run on the CPU while emulating: their arithmetic is plain
    tensor code, but PyTorch only admits accelerators for them."""
    import torch.optim.optimizer as base

    if not hasattr(base, "_get_capturable_supported_devices"):
        yield  # an older torch: capturable optimisers then run on accelerators only
        return
    modules = [m for m in (sys.modules.get(f"torch.optim.{n}") for n in ("adam", "adamw", "rmsprop", "sgd"))
               if m is not None and hasattr(m, "_get_capturable_supported_devices")]
    original = base._get_capturable_supported_devices

    def devices(*args, **kwargs) -> list[str]:
        return [*original(*args, **kwargs), "cpu"]

    for module in modules:
        module._get_capturable_supported_devices = devices
    try:
        yield
    finally:
        for module in modules:
            module._get_capturable_supported_devices = original
