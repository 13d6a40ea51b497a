"""The floating-point precision a run computes in: the dtype new tensors get, and how low precision is widened.

A run's ``precision`` setting picks the dtype that parameters, image batches, noise draws and
losses are made in. ``fp64`` exists for reference runs: rounding errors of about 1e-16 instead of
1e-7 keep runs on different processors, BLAS code paths and thread counts within about 1e-12 of
one another for the first steps, where float32 runs of the same spec can already take different
nearest-neighbour pairings or fit visibly different near-singular Gaussians. The dtype is set as
torch's default dtype for the duration of the run (and restored after), so components that create
tensors without naming a dtype follow it; code that must compute in at least float32 (losses under
bf16 autocast, gradient norms) widens with :func:`at_least_float32`, which leaves float64 alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

#: The dtype of parameters and batches under each ``precision`` (bf16 autocasts on top of float32).
RUN_DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.float32, "fp64": torch.float64}


@contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """torch's default floating dtype is ``dtype`` inside the block, and what it was before after it."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """``x`` widened to float32 when it is in a lower precision (bfloat16, float16, or an integer
    type); float32 and float64 tensors are returned as they are, so a float64 run stays in float64."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()
