"""The Triton nearest-neighbour path: run by triton's CPU interpreter here, compared on a GPU where present.

The interpreter is chosen when triton is imported, so those cases run in one fresh subprocess
with TRITON_INTERPRET=1 (this process may already hold a compiled triton) that reports each case
as JSON. The interpreter multiplies in plain float32, not TF32, and cannot run bfloat16.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

pytest.importorskip("triton")

from genframe.ops.neighbours import nearest_neighbours

from ..conftest import REPO

# Some triton releases' CPU interpreters cannot run these cases at all, whatever the kernel: 3.0
# writes no result back into CPU tensors, and 3.6 under NumPy 2.4 or later fails on any loop whose
# bounds are kernel arguments. The subprocess first runs a probe kernel with such a loop and a
# store, and says so when the interpreter gets it wrong; the cases are then skipped.
_PROBE = textwrap.dedent(r'''
    import torch
    import triton
    import triton.language as tl

    @triton.jit
    def _count(out_ptr, stop):
        lanes = tl.arange(0, 2)
        total = tl.zeros((2,), dtype=tl.int32)
        for _ in range(0, stop, 2):
            total += 1
        tl.store(out_ptr + lanes, total)

    try:
        _out = torch.zeros(2, dtype=torch.int32)
        _count[(1,)](_out, 5)
        _problem = None if _out.tolist() == [3, 3] else f"a probe kernel stored {_out.tolist()}, not [3, 3]"
    except Exception as exc:
        _problem = f"a probe kernel failed: {type(exc).__name__}: {exc}"
    if _problem:
        print(f"UNSUPPORTED triton {triton.__version__}'s CPU interpreter cannot run these cases ({_problem})")
        raise SystemExit(0)
''')

_CASES = _PROBE + textwrap.dedent(r'''
    import json
    import torch
    from genframe.ops import _neighbours_triton as kernels
    from genframe.ops.neighbours import nearest_neighbours
    from tests.genframe.neighbour_cases import brute_force, near_ties, tie_gap

    def reference(q, c):
        idx, dist = brute_force(q, c)
        return idx, dist, tie_gap(q, c)

    def compare(q, c, **kw):
        ref_idx, ref_dist, gap = reference(q, c)
        assert gap > 1e-6, f"test data has a near-tie (gap {gap})"
        idx, dist = nearest_neighbours(q, c, method="triton", **kw)
        wrong = (idx != ref_idx).sum().item()
        err = (dist.double() - ref_dist).abs().max().item()
        ok = idx.dtype == torch.int64 and idx.shape == ref_idx.shape and wrong == 0 and err < 1e-4
        return ok, f"{wrong} wrong of {len(q)}, max distance error {err:.3g}"

    def data(nq, nc, dim, seed, dtype=torch.float32):
        gen = torch.Generator().manual_seed(seed)
        return torch.randn(nq, dim, generator=gen).to(dtype), torch.randn(nc, dim, generator=gen).to(dtype)

    def near_ties_need_rerank():
        q, c = near_ties()
        nq = len(q)
        ref_idx = reference(q, c)[0]
        plain, _ = nearest_neighbours(q, c, method="triton", rerank=1)
        top1_wrong = (plain != ref_idx).sum().item()
        ok, detail = compare(q, c, rerank=8)
        return ok and top1_wrong >= nq // 4, f"{detail}; rerank=1 gets {top1_wrong} wrong"

    def crowded_tile():
        # Each query's 8 nearest candidates are adjacent, so they share a tile: a per-tile minimum
        # would keep one of them, the running top-k must keep all 8 (also across 3 splits).
        gen = torch.Generator().manual_seed(6)
        nq, dim, k = 12, 24, 8
        q = torch.randn(nq, dim, generator=gen)
        far = 10 + torch.randn(300, dim, generator=gen)
        near = q[:, None, :] + 0.3 * torch.randn(nq, k, dim, generator=gen)
        c = torch.cat([far[:100], near.reshape(-1, dim), far[100:]])
        planted = (100 + torch.arange(nq * k).reshape(nq, k)).sort(1).values
        details, ok = [], True
        for cfg in ({}, {"block_q": 16, "block_n": 32, "splits": 3}):
            _, idx = kernels.shortlist(q, c, k, max_bytes=2**20, **cfg)
            same = torch.equal(idx.sort(1).values, planted)
            ok &= same
            details.append(f"{cfg}: {'all planted' if same else 'missed some'}")
        return ok, "; ".join(details)

    def small_blocks():
        # many programs, candidate splits merged on the host, tiles and splits with ragged ends
        q, c = data(45, 333, 20, 7)
        ref_idx = reference(q, c)[0]
        _, idx = kernels.shortlist(q, c, 8, max_bytes=2**20, block_q=16, block_n=32, splits=4)
        contains = (idx == ref_idx[:, None]).any(1).all().item()
        return contains, "exact winner in every shortlist" if contains else "winner missing"

    def exact_match():
        q, c = data(3, 40, 8, 8)
        idx, dist = nearest_neighbours(c[[5, 17, 39]], c, method="triton")
        return idx.tolist() == [5, 17, 39] and dist.tolist() == [0.0] * 3, f"{idx.tolist()} {dist.tolist()}"

    cases = {
        "ragged_shapes": lambda: compare(*data(37, 300, 20, 1)),
        "image_shaped_inputs": lambda: compare(*(t.reshape(len(t), 3, 2, 5) for t in data(33, 129, 30, 2))),
        "fewer_candidates_than_k": lambda: compare(*data(5, 3, 7, 3)),
        "one_feature": lambda: compare(*data(20, 64, 1, 4)),
        "feature_blocks_loop": lambda: compare(*data(20, 100, 150, 5), chunk_queries=7),
        "float16": lambda: compare(*data(30, 200, 24, 6, torch.float16)),
        "rerank_1_and_3": lambda: tuple(map(all, zip(compare(*data(30, 90, 16, 9), rerank=1),
                                                      compare(*data(30, 90, 16, 9), rerank=3)))),
        "small_blocks_and_splits": small_blocks,
        "crowded_tile": crowded_tile,
        "near_ties_need_rerank": near_ties_need_rerank,
        "exact_match": exact_match,
    }
    results = {}
    for name, case in cases.items():
        try:
            ok, detail = case()
        except Exception as exc:  # report, so that one broken case does not hide the others
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        results[name] = {"ok": bool(ok), "detail": str(detail)}
    print("RESULTS" + json.dumps(results))
''')
CASES = ["ragged_shapes", "image_shaped_inputs", "fewer_candidates_than_k", "one_feature", "feature_blocks_loop",
         "float16", "rerank_1_and_3", "small_blocks_and_splits", "crowded_tile", "near_ties_need_rerank",
         "exact_match"]


@pytest.fixture(scope="module")
def interpreted():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, "-c", _CASES], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=300, check=False)
    unsupported = [line for line in proc.stdout.splitlines() if line.startswith("UNSUPPORTED ")]
    if proc.returncode == 0 and unsupported:
        pytest.skip(unsupported[0][len("UNSUPPORTED "):])
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULTS")]
    assert proc.returncode == 0 and lines, f"interpreter run failed:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(lines[-1][len("RESULTS"):])


@pytest.mark.parametrize("case", CASES)
def test_interpreted_kernel_matches_float64_brute_force(interpreted, case):
    result = interpreted[case]
    assert result["ok"], result["detail"]


def test_auto_uses_matmul_off_cuda_and_method_is_checked():
    gen = torch.Generator().manual_seed(0)
    q, c = torch.randn(10, 6, generator=gen), torch.randn(50, 6, generator=gen)
    assert torch.equal(nearest_neighbours(q, c)[0], nearest_neighbours(q, c, method="matmul")[0])
    with pytest.raises(ValueError, match="method"):
        nearest_neighbours(q, c, method="faiss")
    with pytest.raises(ValueError, match="triton"):
        nearest_neighbours(q.double(), c.double(), method="triton")


@pytest.mark.cuda
@pytest.mark.parametrize("nq, nc, dim, dtype", [
    (3000, 50000, 64, torch.float32),
    (2500, 40000, 100, torch.float32),
    (1000, 20000, 3 * 16 * 16, torch.float32),
    (3000, 50000, 64, torch.float16),
    (3000, 50000, 64, torch.bfloat16),
    (7, 100000, 64, torch.float32),
])
def test_triton_matches_matmul_path_on_gpu(nq, nc, dim, dtype):
    gen = torch.Generator(device="cuda").manual_seed(nq + nc + dim)
    q = torch.randn(nq, dim, device="cuda", generator=gen).to(dtype)
    c = torch.randn(nc, dim, device="cuda", generator=gen).to(dtype)
    d = torch.cdist(q.double(), c.double()).square()
    two = d.topk(2, dim=1, largest=False).values
    clear = (two[:, 1] - two[:, 0]) > 1e-6  # compare where the winner is unambiguous
    tri_idx, tri_dist = nearest_neighbours(q, c, method="triton")
    mm_idx, mm_dist = nearest_neighbours(q, c, method="matmul")
    auto_idx, _ = nearest_neighbours(q, c)
    assert clear.float().mean() > 0.99
    assert torch.equal(tri_idx[clear], d.argmin(1)[clear])
    assert torch.equal(tri_idx[clear], mm_idx[clear])
    assert torch.equal(auto_idx, tri_idx)
    torch.testing.assert_close(tri_dist, mm_dist)


def test_auto_falls_back_to_matrix_products_when_the_kernel_fails(monkeypatch, capsys):
    from genframe.ops import neighbours

    class Broken:
        @staticmethod
        def shortlist(*args, **kwargs):
            raise RuntimeError("no kernel image is available for execution on the device")

    monkeypatch.setattr(neighbours, "_auto_prefers_triton", lambda q, c, keep: not neighbours._TRITON_FAILED)
    monkeypatch.setattr(neighbours, "_triton_kernels", lambda: Broken)
    monkeypatch.setattr(neighbours, "_TRITON_FAILED", [])
    gen = torch.Generator().manual_seed(0)
    q, c = torch.randn(30, 5, generator=gen), torch.randn(70, 5, generator=gen)
    expected = torch.cdist(q.double(), c.double()).argmin(1)
    for _ in range(2):
        indices, _ = nearest_neighbours(q, c)
        assert torch.equal(indices, expected)
    err = capsys.readouterr().err
    assert err.count("the fused nearest-neighbour kernel failed (RuntimeError: no kernel image") == 1
    with pytest.raises(RuntimeError, match="no kernel image"):  # asked for by name: no fallback
        monkeypatch.setattr(neighbours, "_triton_problem", lambda q, c, keep: None)
        nearest_neighbours(q, c, method="triton")
