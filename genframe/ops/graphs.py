"""Recording a piece of GPU work once and replaying it: CUDA graphs, and their emulation on any device.

A CUDA graph records the kernels of a piece of work (a training step, a batch of samples through
the sampler chain) and replays them with one launch, which is what small models are bound by on a
GPU. Replay runs the same kernels on the same memory: inputs must be copied into the tensors the
recording read, and outputs are read from the tensors it wrote. :class:`RecordedGraph` gives the
same semantics on any device by replaying recorded operations one by one, so that code meant for
capture is tested on a CPU.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any, Callable, Iterator, TypeVar

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from genframe.errors import GenframeError

T = TypeVar("T")


class CaptureError(GenframeError):
    """Work cannot be captured; the message names the setting to change."""


@contextlib.contextmanager
def side_stream(device: torch.device) -> Iterator[None]:
    """Run the enclosed work on a fresh stream ordered after (and before) the current one."""
    main = torch.cuda.current_stream(device)
    side = torch.cuda.Stream(device)
    side.wait_stream(main)
    with torch.cuda.stream(side):
        yield
    main.wait_stream(side)


class CudaGraph:
    """Work captured with ``torch.cuda.graph``; capturing also runs it once.

    ``generators`` are the CUDA random generators the work draws from besides the default one,
    which replays then advance like eager calls would."""

    def __init__(self, generators: tuple[torch.Generator, ...] = ()):
        self._graph = torch.cuda.CUDAGraph()
        register = getattr(self._graph, "register_generator_state", None)
        if register is not None:  # newer torch registers generators by itself and deprecates the call
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for generator in generators:
                    register(generator)

    def capture(self, step: Callable[[], T]) -> T:
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


class RecordedGraph:
    """A CUDA graph's semantics on any device: replay re-runs the recorded operations on the same
    tensor objects and writes each result into the tensor the recording produced. Python code of
    the step does not run again, exactly as with a real graph."""

    def __init__(self) -> None:
        self._calls: list[tuple[Any, tuple, dict, Any]] = []

    def capture(self, step: Callable[[], T]) -> T:
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
