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
import warnings
from typing import Any, Callable, Iterator

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from genframe.ops import distributed
from genframe.training.context import StageContext
from genframe.errors import GenframeError
from genframe.components.roles import Trainer

Outputs = dict[str, torch.Tensor]

#: Eager steps before the capture: lazily created state (optimiser moments, cuDNN plans) must exist
#: before a graph is recorded, and PyTorch asks for warm-up on a side stream.
WARMUP_STEPS = 3


class CaptureError(GenframeError):
    """A training step cannot be captured; the message names the setting to change."""


def resolve_mode(setting: bool | str, device: torch.device) -> str:
    """``off``, ``cuda`` or ``emulate`` for the spec's ``cuda_graphs`` on ``device``."""
    if setting is False:
        return "off"
    if setting == "emulate":
        return "emulate"
    if device.type != "cuda":
        print(f"genframe: warning: cuda_graphs: true has no effect on {device.type}; steps run eagerly",
              file=sys.stderr)
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
        self._graph: _CudaGraph | _RecordedGraph | None = None
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
            with _side_stream(self.ctx.device) if self.mode == "cuda" else contextlib.nullcontext():
                outputs = self.trainer.train_step(step)
        else:
            outputs = self._capture(step)
        self.ctx.end_step()
        return outputs

    def _capture(self, step: int) -> Outputs:
        graph = _CudaGraph(self.ctx) if self.mode == "cuda" else _RecordedGraph()
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
            print(f"genframe: {self.where}: step {step + 1} captured as {kind}; later steps replay it",
                  file=sys.stderr)
        return outputs


@contextlib.contextmanager
def _side_stream(device: torch.device) -> Iterator[None]:
    """Run the enclosed work on a fresh stream ordered after (and before) the current one."""
    main = torch.cuda.current_stream(device)
    side = torch.cuda.Stream(device)
    side.wait_stream(main)
    with torch.cuda.stream(side):
        yield
    main.wait_stream(side)


class _CudaGraph:
    """One step captured with ``torch.cuda.graph``; capturing also runs it once."""

    def __init__(self, ctx: StageContext):
        self._graph = torch.cuda.CUDAGraph()
        register = getattr(self._graph, "register_generator_state", None)
        if register is not None:  # newer torch registers generators by itself and deprecates the call
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                register(ctx.generator)

    def capture(self, step: Callable[[], Outputs]) -> Outputs:
        torch.cuda.synchronize()
        with torch.cuda.graph(self._graph, capture_error_mode="thread_local"):
            outputs = step()
        self._graph.replay()  # capture records without running: this is the step's work
        return outputs

    def replay(self) -> None:
        self._graph.replay()


#: Operations that read a tensor's value on the host, or whose output shape depends on values:
#: inside a CUDA graph they either fail or freeze what they saw at capture.
_HOST_READS = {
    torch.ops.aten._local_scalar_dense.default, torch.ops.aten.nonzero.default, torch.ops.aten.equal.default,
    torch.ops.aten.masked_select.default, torch.ops.aten._unique2.default, torch.ops.aten.unique_dim.default,
    torch.ops.aten.unique_consecutive.default, torch.ops.aten.repeat_interleave.Tensor,
}


class _Recorder(TorchDispatchMode):
    """Runs every operation as usual and records it, with the very tensors it read and wrote."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[Any, tuple, dict, Any]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _HOST_READS:
            raise CaptureError(f"the step reads a tensor's value on the host ({func.overloadpacket.__name__}), "
                               "which a CUDA graph cannot replay")
        out = func(*args, **kwargs)
        self.calls.append((func, args, kwargs, out))
        return out


class _RecordedGraph:
    """A CUDA graph's semantics on any device: replay re-runs the recorded operations on the same
    tensor objects and writes each result into the tensor the recording produced. Python code of
    the step does not run again, exactly as with a real graph."""

    def __init__(self) -> None:
        self._calls: list[tuple[Any, tuple, dict, Any]] = []

    def capture(self, step: Callable[[], Outputs]) -> Outputs:
        recorder = _Recorder()
        with recorder:
            outputs = step()
        self._calls = recorder.calls
        return outputs

    def replay(self) -> None:
        with torch.no_grad():
            for func, args, kwargs, recorded in self._calls:
                _write_into(recorded, func(*args, **kwargs))


def _write_into(recorded: Any, fresh: Any) -> None:
    if _is_work(fresh):
        fresh.wait()  # a collective (torchrun): its result must be in place before the next operation
    elif isinstance(recorded, torch.Tensor):
        if fresh is recorded or _same_memory(recorded, fresh):
            return  # an in-place operation, or a view of memory that is refreshed where it is written
        recorded.detach().copy_(fresh)
    elif isinstance(recorded, (list, tuple)):
        for old, new in zip(recorded, fresh):
            _write_into(old, new)


def _is_work(value: Any) -> bool:
    """Whether ``value`` is the handle of a running torch.distributed collective (operators return
    it as a TorchScript object)."""
    if not torch.distributed.is_available():
        return False
    if isinstance(value, torch.distributed.Work):
        return True
    return isinstance(value, torch.ScriptObject) and value._type().qualified_name().endswith("c10d.Work")


def _same_memory(a: torch.Tensor, b: torch.Tensor) -> bool:
    return (a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()
            and a.storage_offset() == b.storage_offset() and a.stride() == b.stride())


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
