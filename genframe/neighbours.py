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
"""

from __future__ import annotations

import math

import torch

#: Bytes the distance block (and the shortlist's re-ranking) may use off-CUDA.
DEFAULT_BUDGET = 256 * 2**20
_MAX_QUERY_CHUNK = 8192


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
                       chunk_candidates: int | None = None, rerank: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Index and squared L2 distance of the nearest candidate row for every query row.

    ``queries`` (Q, ...) and ``candidates`` (N, ...) are float tensors on one device; dimensions
    after the first are flattened. Returns int64 indices (Q,) into ``candidates`` and the squared
    distances (Q,) in float32, or float64 when an input is float64.

    Work proceeds in blocks of ``chunk_queries`` x ``chunk_candidates`` (sized from the memory
    budget when not given); a running shortlist of the ``rerank`` best candidates per query is
    merged across candidate blocks with ``topk`` and re-ranked exactly (see the module docstring).
    Block boundaries are host integers and results go into preallocated outputs, so nothing waits
    for the device. ``rerank=1`` trusts the matrix-product ordering alone. ``chunk_candidates`` is
    raised to ``rerank`` if smaller, so that the first block already fills the shortlist.
    """
    if queries.device != candidates.device:
        raise ValueError(f"queries are on {queries.device} but candidates on {candidates.device}")
    if not (queries.is_floating_point() and candidates.is_floating_point()):
        raise ValueError(f"expected float tensors, got {queries.dtype} and {candidates.dtype}")
    if queries.dim() == 0 or candidates.dim() == 0:
        raise ValueError("queries and candidates need a leading dimension that counts the rows")
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
    default_q, default_c = _default_chunks(num_queries, num_candidates, max(dim, 1), keep, device)
    step_q = max(1, chunk_queries or default_q)
    step_c = max(keep, chunk_candidates or default_c)

    indices = torch.empty(num_queries, dtype=torch.int64, device=device)
    distances = torch.empty(num_queries, dtype=work, device=device)
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
        diff = c[best_idx].to(exact) - q[qs:qs + step_q].to(exact).unsqueeze(1)
        exact_sq = diff.square().sum(-1)
        winner_sq, winner = exact_sq.min(dim=1)
        indices[qs:qs + step_q] = best_idx.gather(1, winner.unsqueeze(1)).squeeze(1)
        distances[qs:qs + step_q] = winner_sq.to(work)
    return indices, distances
