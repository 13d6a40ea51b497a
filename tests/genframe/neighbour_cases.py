"""Reference search and hard cases shared by the nearest-neighbour tests (matmul and Triton paths)."""

from __future__ import annotations

import torch


def brute_force(queries: torch.Tensor, candidates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference: float64 distance matrix and its argmin."""
    q = queries.reshape(len(queries), -1).double()
    c = candidates.reshape(len(candidates), -1).double()
    d = torch.cdist(q, c).square()
    return d.argmin(1), d.min(1).values


def tie_gap(queries: torch.Tensor, candidates: torch.Tensor) -> float:
    """Smallest difference between a query's two nearest reference distances (argmin is clear if > 0)."""
    q = queries.reshape(len(queries), -1).double()
    c = candidates.reshape(len(candidates), -1).double()
    if len(c) < 2:
        return float("inf")
    two = torch.cdist(q, c).square().topk(2, dim=1, largest=False).values
    return (two[:, 1] - two[:, 0]).min().item()


def near_ties(num_queries: int = 40, cluster: int = 6, dim: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Queries among large-norm near-duplicate candidates, where the float32 expansion orders by noise.

    Every candidate is base + a small offset with |base| ~ 1e4, so |q|^2 - 2 q.c + |c|^2 subtracts
    numbers ~1e8 whose float32 spacing (~8) dwarfs the differences between a query's ``cluster``
    candidates (< 1); only an exact re-ranking of a shortlist recovers the true winner, which lies
    in the query's own cluster. The data are float32-representable, so errors come from the search.
    """
    gen = torch.Generator().manual_seed(5)
    bases = torch.randn(num_queries, dim, generator=gen, dtype=torch.float64)
    bases = 1e4 * bases / bases.norm(dim=1, keepdim=True)
    offsets = torch.randn(num_queries, cluster, dim, generator=gen, dtype=torch.float64) * 0.1
    candidates = (bases[:, None, :] + offsets).reshape(-1, dim).float()
    queries = (bases + 0.1 * torch.randn(num_queries, dim, generator=gen, dtype=torch.float64)).float()
    return queries, candidates
