"""Denormal floats on the CPU: flushed to zero while genframe works, because computing with them is about 100x slower.

Weight decay drives the weights of units that never activate (and Adam's moments for them)
geometrically towards zero; once below float32's smallest normal number (1.2e-38) every matmul
touching them runs on the processor's slow path. A 512-wide IMLE mapper slowed from 115 to 5 steps
per second that way after 2,000 steps. Values that small never change a result that matters, so
runs and commands on the CPU flush them (``torch.set_flush_denormal``) and restore the default
(not flushing) when they finish: the flag is process state that other code relies on (hypothesis,
for one, refuses to run with it set).

The flag is per thread, and threads inherit it when they start: the command line sets it before
any work starts torch's worker threads, so they flush too; a run called from Python sets it for
its own thread.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

_depth = 0  # nested scopes (a command that starts a run): only the outermost restores the default


@contextmanager
def denormals_flushed(device: torch.device | str = "cpu") -> Iterator[bool]:
    """Flush denormals to zero inside the block when ``device`` is the CPU; yields whether they are flushed.

    On leaving the outermost such block the default (not flushing) comes back on the calling thread;
    torch offers no way to read the state it had before. Processors without the feature (not x86
    with SSE3 or ARM) are left as they are.
    """
    global _depth
    flushed = torch.device(device).type == "cpu" and torch.set_flush_denormal(True)
    _depth += flushed
    try:
        yield flushed
    finally:
        if flushed:
            _depth -= 1
            if _depth == 0:
                torch.set_flush_denormal(False)
