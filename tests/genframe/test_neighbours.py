import pytest
import torch

from genframe.ops.neighbours import nearest_neighbours

from .neighbour_cases import brute_force, near_ties, tie_gap


def check_tie_free(queries, candidates):
    """The two smallest reference distances of every query differ clearly: argmin is unambiguous."""
    assert tie_gap(queries, candidates) > 1e-6


@pytest.mark.parametrize("nq, nc, dim, chunk_q, chunk_c, rerank", [
    (50, 300, 16, None, None, 8),
    (50, 300, 16, 7, 23, 8),
    (50, 300, 16, 7, 23, 1),
    (1, 5, 3, 1, 2, 8),       # rerank larger than the candidate count
    (33, 129, 40, 32, 64, 3),
    (20, 64, 1, 6, 10, 8),
])
def test_matches_float64_brute_force(nq, nc, dim, chunk_q, chunk_c, rerank):
    gen = torch.Generator().manual_seed(nq * 1000 + nc + dim)
    queries = torch.randn(nq, dim, generator=gen)
    candidates = torch.randn(nc, dim, generator=gen)
    check_tie_free(queries, candidates)
    idx, dist = nearest_neighbours(queries, candidates, chunk_queries=chunk_q, chunk_candidates=chunk_c,
                                   rerank=rerank)
    ref_idx, ref_dist = brute_force(queries, candidates)
    assert idx.dtype == torch.int64 and idx.shape == (nq,)
    assert dist.dtype == torch.float32 and dist.shape == (nq,)
    assert torch.equal(idx, ref_idx)
    torch.testing.assert_close(dist.double(), ref_dist, rtol=1e-6, atol=1e-6)


def test_flattens_image_shaped_inputs_and_keeps_float64():
    gen = torch.Generator().manual_seed(3)
    queries = torch.randn(9, 3, 4, 4, generator=gen, dtype=torch.float64)
    candidates = torch.randn(40, 3, 4, 4, generator=gen, dtype=torch.float64)
    idx, dist = nearest_neighbours(queries, candidates, chunk_queries=4, chunk_candidates=11)
    ref_idx, ref_dist = brute_force(queries, candidates)
    assert dist.dtype == torch.float64
    assert torch.equal(idx, ref_idx)
    torch.testing.assert_close(dist, ref_dist)


def test_exact_match_has_zero_distance():
    gen = torch.Generator().manual_seed(4)
    candidates = torch.randn(30, 8, generator=gen)
    idx, dist = nearest_neighbours(candidates[[5, 17, 29]], candidates, chunk_candidates=8)
    assert idx.tolist() == [5, 17, 29]
    assert dist.tolist() == [0.0, 0.0, 0.0]


def test_reranking_fixes_float32_cancellation():
    num_queries, cluster = 40, 6
    queries, candidates = near_ties(num_queries, cluster)
    check_tie_free(queries, candidates)
    ref_idx, ref_dist = brute_force(queries, candidates)
    # the true neighbour is in the query's own cluster, which holds the only nearby candidates
    assert torch.equal(ref_idx // cluster, torch.arange(num_queries))

    plain, _ = nearest_neighbours(queries, candidates, rerank=1, chunk_queries=16, chunk_candidates=50)
    assert (plain != ref_idx).sum() >= num_queries // 4  # the plain fp32 expansion is often wrong

    idx, dist = nearest_neighbours(queries, candidates, rerank=8, chunk_queries=16, chunk_candidates=50)
    assert torch.equal(idx, ref_idx)
    torch.testing.assert_close(dist.double(), ref_dist, rtol=1e-6, atol=1e-6)


def test_empty_queries():
    idx, dist = nearest_neighbours(torch.empty(0, 4), torch.randn(3, 4))
    assert idx.shape == (0,) and dist.shape == (0,)


@pytest.mark.parametrize("queries, candidates, rerank, message", [
    (torch.randn(2, 3), torch.randn(4, 5), 8, "features"),
    (torch.randn(2, 3), torch.empty(0, 3), 8, "no candidates"),
    (torch.randn(2, 3), torch.randn(4, 3), 0, "rerank"),
    (torch.randn(2, 3), torch.arange(12).reshape(4, 3), 8, "float"),
])
def test_rejects_bad_arguments(queries, candidates, rerank, message):
    with pytest.raises(ValueError, match=message):
        nearest_neighbours(queries, candidates, rerank=rerank)
