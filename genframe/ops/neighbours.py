"""Exact nearest-neighbour search for large sets of vectors, chunked so that it fits in memory.

Several components need "which of these N candidates is closest to each query" at a scale where
the full (Q, N) distance matrix does not fit on the device: IMLE-style latent mappers match every
generated sample to a training code, and sample-quality checks look up the nearest training image.
Matrix products are the only fast way to do this on an accelerator, but the expansion they rely on,
||q - c||^2 = |q|^2 - 2 q.c + |c|^2, subtracts large, nearly equal numbers: in float32 (or TF32)
two candidates whose distances differ by less than ~1e-7 |q| |c| are ordered by rounding noise.
So the products only shortlist: each query keeps its ``rerank`` smallest expanded distances, and
the shortlist is then ranked again by computing ||q - c||^2 from the difference itself, in float64
where the device has it. The difference has no cancellation, so the winner is the true nearest
neighbour as long as it made the shortlist, which fails only when more than ``rerank``
candidates lie within rounding error of it.

On CUDA the shortlist comes from a fused Triton kernel (``genframe.ops._neighbours_triton``) that
keeps a running top-``rerank`` per query in registers and never writes the distance matrix. It
multiplies float32 inputs on TF32 tensor cores and ranks by distances truncated by at most 2^-16
of their value, so "rounding error" there means TF32's (about 1e-3 |q| |c|) rather than float32's;
the re-rank, and so the form of the guarantee, is the same.
"""

from __future__ import annotations

import functools
import math
from types import ModuleType

import torch
from genframe.ops import log

#: Bytes the distance block (and the shortlist's re-ranking) may use off-CUDA.
DEFAULT_BUDGET = 256 * 2**20
_MAX_QUERY_CHUNK = 8192
METHODS = ("auto", "matmul", "triton")
_TRITON_FAILED: list[str] = []  # why the kernel failed in this process, once it has


@functools.cache
def _triton_kernels() -> ModuleType | None:
    """The Triton kernel module, or None where triton does not import (CPU-only installs)."""
    try:
        from genframe.ops import _neighbours_triton
    except (ImportError, RuntimeError):  # no triton, or a triton build that fails to initialise
        return None
    return _neighbours_triton


def _memory_budget(device: torch.device) -> int:
    """Bytes one chunk may occupy: a share of the free memory on CUDA, a fixed amount elsewhere."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(min(max(free // 8, 64 * 2**20), 2 * 2**30))
    return DEFAULT_BUDGET


def _default_chunks(num_queries: int, num_candidates: int, dim: int, keep: int,
                    device: torch.device) -> tuple[int, int]:
    """Query and candidate chunk sizes that keep every temporary within the memory budget.

    The query chunk is bounded by the re-ranking step (its gathered shortlist is (chunk, keep, dim),
    held in the input dtype and as three float64 temporaries, ~28 bytes an element); the candidate
    chunk by the float32 distance block and by the candidate rows converted for the product.
    """
    budget = _memory_budget(device)
    queries = max(1, min(num_queries, _MAX_QUERY_CHUNK, budget // (28 * keep * dim)))
    candidates = max(1, min(num_candidates, budget // (4 * queries), budget // (8 * dim)))
    return queries, candidates


@torch.no_grad()
def nearest_neighbours(queries: torch.Tensor, candidates: torch.Tensor, *, chunk_queries: int | None = None,
                       chunk_candidates: int | None = None, rerank: int = 8,
                       method: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """Index and squared L2 distance of the nearest candidate row for every query row.

    ``queries`` (Q, ...) and ``candidates`` (N, ...) are float tensors on one device; dimensions
    after the first are flattened. Returns int64 indices (Q,) into ``candidates`` and the squared
    distances (Q,) in float32, or float64 when an input is float64.

    ``method`` says how the shortlist of the ``rerank`` candidates with the smallest expanded
    distances per query is found. Either way it is an exact top-``rerank`` of the distances as
    computed, then re-ranked exactly (see the module docstring): the winner is the true nearest
    neighbour unless more than ``rerank`` candidates lie within rounding error of it.

    * ``"matmul"``: blocks of ``chunk_queries`` x ``chunk_candidates`` (sized from the memory
      budget when not given) through ``addmm``, merged across candidate blocks with ``topk``.
      ``chunk_candidates`` is raised to ``rerank`` if smaller, so that the first block fills the
      shortlist. Float32 products follow ``torch.backends.cuda.matmul`` (full float32 by default).
    * ``"triton"``: the fused kernel of ``genframe.ops._neighbours_triton``, which never stores the
      distance matrix (CUDA tensors, or CPU ones under ``TRITON_INTERPRET=1``; float32, bfloat16 or
      float16 inputs of one dtype; ``rerank`` <= 32). Float32 products use TF32.
      ``chunk_candidates`` is ignored and ``chunk_queries`` only sizes the re-ranking steps.
    * ``"auto"`` (default): ``"triton"`` for CUDA tensors where it applies and triton imports,
      otherwise ``"matmul"``.

    Block boundaries are host integers and results go into preallocated outputs, so nothing waits
    for the device. ``rerank=1`` trusts the product ordering alone.
    """
    if queries.device != candidates.device:
        raise ValueError(f"queries are on {queries.device} but candidates on {candidates.device}")
    if not (queries.is_floating_point() and candidates.is_floating_point()):
        raise ValueError(f"expected float tensors, got {queries.dtype} and {candidates.dtype}")
    if queries.dim() == 0 or candidates.dim() == 0:
        raise ValueError("queries and candidates need a leading dimension that counts the rows")
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    q = queries.reshape(queries.shape[0], math.prod(queries.shape[1:]))
    c = candidates.reshape(candidates.shape[0], math.prod(candidates.shape[1:]))
    num_queries, dim = q.shape
    num_candidates = c.shape[0]
    if c.shape[1] != dim:
        raise ValueError(f"queries have {dim} features per row but candidates {c.shape[1]}")
    if num_candidates == 0:
        raise ValueError("no candidates to search")
    if rerank < 1:
        raise ValueError(f"rerank must be at least 1, got {rerank}")

    device = q.device
    work = torch.float64 if torch.float64 in (q.dtype, c.dtype) else torch.float32
    exact = torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64
    keep = min(rerank, num_candidates)
    fall_back = False  # whether a failing kernel may hand over to the matmul path (method="auto")
    if method == "triton":
        problem = _triton_problem(q, c, keep)
        if problem is not None:
            raise ValueError(f"method='triton' is unavailable: {problem}")
    elif method == "auto":
        method = "triton" if _auto_prefers_triton(q, c, keep) else "matmul"
        fall_back = True
    default_q, default_c = _default_chunks(num_queries, num_candidates, max(dim, 1), keep, device)
    step_q = max(1, chunk_queries or default_q)
    step_c = max(keep, chunk_candidates or default_c)

    indices = torch.empty(num_queries, dtype=torch.int64, device=device)
    distances = torch.empty(num_queries, dtype=work, device=device)
    if num_queries == 0:
        return indices, distances
    if method == "triton":
        kernels = _triton_kernels()
        assert kernels is not None
        try:
            _, shortlist = kernels.shortlist(q, c, keep, max_bytes=_memory_budget(device))
        except Exception as exc:  # a triton/driver combination that cannot compile the kernel
            if not fall_back:
                raise
            _TRITON_FAILED.append(f"{type(exc).__name__}: {exc}")
            log.warning(f"the fused nearest-neighbour kernel failed ({_TRITON_FAILED[0][:200]}); "
                        "using chunked matrix products from now on")
        else:
            for qs in range(0, num_queries, step_q):
                _rerank(q[qs:qs + step_q], c, shortlist[qs:qs + step_q], exact,
                        indices[qs:qs + step_q], distances[qs:qs + step_q])
            return indices, distances

    # |c|^2 once per candidate; |q|^2 is the same for every candidate of a query, so the shortlist
    # is chosen on |c|^2 - 2 q.c and never needs it.
    c_sq = torch.cat([c[s:s + step_c].to(work).square().sum(1) for s in range(0, num_candidates, step_c)])

    for qs in range(0, num_queries, step_q):
        qb = q[qs:qs + step_q].to(work)
        best_val: torch.Tensor | None = None
        best_idx: torch.Tensor | None = None
        for cs in range(0, num_candidates, step_c):
            cb = c[cs:cs + step_c].to(work)
            block = torch.addmm(c_sq[cs:cs + step_c], qb, cb.T, alpha=-2.0)
            val, idx = block.topk(min(keep, block.shape[1]), dim=1, largest=False, sorted=False)
            idx = idx + cs
            if best_val is not None and best_idx is not None:
                val = torch.cat([best_val, val], dim=1)
                idx = torch.cat([best_idx, idx], dim=1)
                val, pos = val.topk(keep, dim=1, largest=False, sorted=False)
                idx = idx.gather(1, pos)
            best_val, best_idx = val, idx
        assert best_idx is not None
        _rerank(q[qs:qs + step_q], c, best_idx, exact, indices[qs:qs + step_q], distances[qs:qs + step_q])
    return indices, distances


def _rerank(q: torch.Tensor, c: torch.Tensor, shortlist: torch.Tensor, exact: torch.dtype,
            indices: torch.Tensor, distances: torch.Tensor) -> None:
    """Write each query's shortlisted candidate nearest by ||q - c||^2 of the difference (no cancellation)."""
    diff = c[shortlist].to(exact) - q.to(exact).unsqueeze(1)
    winner_sq, winner = diff.square().sum(-1).min(dim=1)
    indices.copy_(shortlist.gather(1, winner.unsqueeze(1)).squeeze(1))
    distances.copy_(winner_sq)


def _auto_prefers_triton(q: torch.Tensor, c: torch.Tensor, keep: int) -> bool:
    """``method="auto"``: the fused kernel for CUDA tensors that it can take."""
    return q.device.type == "cuda" and _triton_problem(q, c, keep) is None


def _triton_problem(q: torch.Tensor, c: torch.Tensor, keep: int) -> str | None:
    """Why the Triton path cannot take these inputs, or None when it can."""
    kernels = _triton_kernels()
    if kernels is None:
        return "triton does not import"
    if _TRITON_FAILED:
        return f"the kernel failed earlier ({_TRITON_FAILED[0][:200]})"
    if q.device.type != "cuda" and not kernels.interpreting():
        return f"it needs CUDA tensors (or TRITON_INTERPRET=1), got {q.device}"
    if q.dtype != c.dtype or q.dtype not in kernels.DTYPES:
        return f"it needs float32, bfloat16 or float16 inputs of one dtype, got {q.dtype} and {c.dtype}"
    if keep > kernels.MAX_K:
        return f"it keeps at most {kernels.MAX_K} candidates per query, got rerank={keep}"
    return None
