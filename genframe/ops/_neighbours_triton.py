"""Fused distance + running top-k shortlist for :func:`genframe.ops.neighbours.nearest_neighbours` (Triton).

The matmul path writes every (query, candidate) score to memory and reads it back for ``topk``; at
d=64 that traffic, not the arithmetic, sets its speed. Here each program owns ``BLOCK_Q`` queries
and a contiguous range of candidates, computes approximate squared distances
``|q|^2 + |c|^2 - 2 q.c`` tile by tile with ``tl.dot`` (float32 accumulation; TF32 products for
float32 inputs) and folds every tile into a shortlist of the ``K`` best candidates per query held
in registers. Only the (Q, splits * K) shortlists reach memory; the host merges the splits and
re-ranks exactly.

Ranking key: the float32 bits of the approximate distance as an int32, with its lowest
log2(BLOCK_N) mantissa bits replaced by the candidate's column in the tile. For distances >= 0
integer order is float order up to that truncation (relative 2^-(23 - log2 BLOCK_N), 2^-17 for 64
columns, far below TF32's error); negative values, which are rounding noise around 0, come before
all others. Keys in a row of a tile are distinct and one integer min yields both the best distance
and its column, which keeps the per-tile work small next to the dot.

Guarantee: the shortlist is the exact top-``K`` of all candidates by key (ties arbitrary), not a
per-tile minimum. A tile is folded in by moving each row's smallest remaining key into the row's
shortlist, replacing its largest, while it is smaller than that; keys leave the tile in increasing
order, so at most ``K`` rounds are needed, and usually none. A candidate is therefore dropped only
when ``K`` others have keys no larger, i.e. approximate distances within rounding error (TF32
products plus the truncation) of its own or smaller.

Import this module only where triton imports; set ``TRITON_INTERPRET=1`` before importing triton
to run the kernel on CPU tensors (tests).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

#: Largest shortlist the kernel keeps in registers.
MAX_K = 32
DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_BYTES_PER_SLOT = 4 + 8  # int32 key + int64 index
# Kernels are bound to the interpreter when they are defined, i.e. when this module is imported.
_INTERPRETING = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def interpreting() -> bool:
    """Whether the kernel runs in triton's CPU interpreter (on CPU tensors) rather than on a GPU."""
    return _INTERPRETING


@triton.jit
def _shortlist_kernel(q_ptr, c_ptr, q_sq_ptr, c_sq_ptr, out_key_ptr, out_idx_ptr,
                      num_queries, num_candidates, dim, stride_q, stride_c, split_len, out_stride,
                      K: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                      SINGLE_D: tl.constexpr, SCALE_Q: tl.constexpr, PRECISION: tl.constexpr):
    pid_q = tl.program_id(0)
    pid_s = tl.program_id(1)
    rows = pid_q * BLOCK_Q + tl.arange(0, BLOCK_Q)
    row_ok = rows < num_queries
    feats = tl.arange(0, BLOCK_D)
    q_rows = q_ptr + rows.to(tl.int64)[:, None] * stride_q
    q_sq = tl.load(q_sq_ptr + rows, mask=row_ok, other=0.0)
    if SINGLE_D:
        q_tile = tl.load(q_rows + feats[None, :], mask=row_ok[:, None] & (feats < dim)[None, :], other=0.0)
        if SCALE_Q:
            # -2 q is exact, so the dot lands directly on the squared distance
            q_tile = -(q_tile + q_tile)

    lo = pid_s * split_len
    hi = tl.minimum(lo + split_len, num_candidates)
    lane = tl.arange(0, BLOCK_N)
    slot = tl.arange(0, K)
    # keys of +inf: padding columns (|c|^2 = inf) and empty slots; they never enter a shortlist
    best_key = tl.full((BLOCK_Q, K), 0x7F800000, tl.int32)
    best_idx = tl.full((BLOCK_Q, K), -1, tl.int32)
    worst = tl.full((BLOCK_Q,), 0x7F800000, tl.int32)  # the shortlist's largest key per row
    for start in range(lo, hi, BLOCK_N):
        cols = start + lane
        col_ok = cols < hi
        c_sq = tl.load(c_sq_ptr + cols, mask=col_ok, other=float("inf"))
        c_rows = c_ptr + cols.to(tl.int64)[:, None] * stride_c
        if SINGLE_D:
            c_tile = tl.load(c_rows + feats[None, :], mask=col_ok[:, None] & (feats < dim)[None, :], other=0.0)
            if SCALE_Q:
                dist = tl.dot(q_tile, tl.trans(c_tile), q_sq[:, None] + c_sq[None, :], input_precision=PRECISION)
            else:
                acc = (q_sq[:, None] + c_sq[None, :]) * -0.5
                dist = tl.dot(q_tile, tl.trans(c_tile), acc, input_precision=PRECISION) * -2.0
        else:
            # accumulate -dist / 2 = q.c - (|q|^2 + |c|^2) / 2: the query rows are reloaded per block
            acc = (q_sq[:, None] + c_sq[None, :]) * -0.5
            for d0 in range(0, dim, BLOCK_D):
                f = d0 + feats
                q_part = tl.load(q_rows + f[None, :], mask=row_ok[:, None] & (f < dim)[None, :], other=0.0)
                c_part = tl.load(c_rows + f[None, :], mask=col_ok[:, None] & (f < dim)[None, :], other=0.0)
                acc = tl.dot(q_part, tl.trans(c_part), acc, input_precision=PRECISION)
            dist = acc * -2.0

        # Integer keys: the float bits of the approximate squared distance (ordered like the floats
        # when >= 0; the negative ones, rounding noise around 0, all come first) with the low
        # mantissa bits replaced by the column in the tile. Keys in a row are then distinct, and
        # one min reduction yields both the smallest distance and where it is.
        key = (dist.to(tl.int32, bitcast=True) & -BLOCK_N) | lane[None, :]
        low = tl.min(key, axis=1)
        enters = low < worst
        busy = tl.max(enters.to(tl.int32), axis=0)
        # Fold the tile in: move each row's smallest remaining key into its shortlist, replacing
        # the largest, while it beats that one. Keys leave the tile in increasing order, so K
        # rounds always suffice; they are unrolled behind uniform branches (usually all skipped)
        # because a while loop here would stop triton from software-pipelining the candidate loop.
        for _round in tl.static_range(K):
            if busy > 0:
                drop = tl.argmax(best_key, axis=1)
                put = enters[:, None] & (slot[None, :] == drop[:, None])
                best_key = tl.where(put, low[:, None], best_key)
                best_idx = tl.where(put, start + (low & (BLOCK_N - 1))[:, None], best_idx)
                worst = tl.max(best_key, axis=1)
                key = tl.where(key == low[:, None], 0x7FFFFFFF, key)
                low = tl.min(key, axis=1)
                enters = low < worst
                busy = tl.max(enters.to(tl.int32), axis=0)

    out = rows.to(tl.int64)[:, None] * out_stride + (pid_s * K + slot)[None, :]
    tl.store(out_key_ptr + out, best_key, mask=row_ok[:, None])
    tl.store(out_idx_ptr + out, best_idx.to(tl.int64), mask=row_ok[:, None])


def _next_pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def default_config(dim: int, dtype: torch.dtype, shared_bytes: int = 227 * 1024) -> dict[str, int]:
    """Tile sizes for a feature count and input dtype that fit in ``shared_bytes`` of shared memory.

    Chosen offline by compiling for sm_90, not tuned on a GPU. Rows of up to 512 bytes keep the
    query block on chip for the whole candidate loop; wider ones, or ones that do not fit, loop
    over feature blocks. 128 x 64 score tiles with 8 warps take ~126 registers a thread and, for
    256-byte rows, 80 KiB of shared memory, so two programs share an H100 SM and one's tensor-core
    work can overlap the other's shortlist updates.
    """
    size = torch.empty((), dtype=dtype).element_size()
    full = max(16, _next_pow2(dim))
    widths = ([full] if full * size <= 512 else []) + [w for w in (256 // size, 128 // size) if w < full]
    config = {}
    for block_d in widths:
        for block_q, warps in ((128, 8), (64, 4)):
            for stages in (3, 2):
                q_bytes, c_bytes = block_q * block_d * size, 64 * block_d * size
                # pipelined buffers: candidate tiles, plus the query tiles when they are reloaded
                need = q_bytes + stages * c_bytes if block_d >= dim else stages * (q_bytes + c_bytes)
                config = {"block_q": block_q, "block_n": 64, "block_d": block_d, "num_warps": warps,
                          "num_stages": stages}
                if need <= shared_bytes - 2048:
                    return config
    return config


def _row_sq(x: torch.Tensor, max_bytes: int) -> torch.Tensor:
    """Squared norms of the rows in float32, a few rows at a time so the float32 copy stays small."""
    step = max(1, max_bytes // (4 * max(1, x.shape[1])))
    return torch.cat([x[s:s + step].float().square().sum(1) for s in range(0, x.shape[0], step)])


def shortlist(queries: torch.Tensor, candidates: torch.Tensor, keep: int, *, max_bytes: int,
              c_sq: torch.Tensor | None = None, splits: int | None = None, precision: str = "tf32",
              **config: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Approximate squared distances (float32) and indices (int64), (Q, keep) each, of the
    ``keep`` candidates with the smallest keys (see the module docstring) for every query.

    ``queries`` (Q, d) and ``candidates`` (N, d) share a dtype in :data:`DTYPES`; ``c_sq`` are the
    candidates' squared norms in float32, computed when not given. Candidates are cut into
    ``splits`` contiguous ranges searched by separate programs (default: enough programs to fill
    the device) whose shortlists are merged with ``topk`` on the keys, which is exact. Queries go
    through in chunks whose outputs take at most ``max_bytes``. ``precision`` is ``tl.dot``'s
    input precision for float32 ("tf32" or "ieee"); ``config`` overrides :func:`default_config`.
    Nothing waits for the device.
    """
    num_queries, dim = queries.shape
    num_candidates = candidates.shape[0]
    if queries.dtype != candidates.dtype or queries.dtype not in DTYPES:
        raise ValueError(f"triton shortlist needs matching float32/bfloat16/float16 inputs, got "
                         f"{queries.dtype} and {candidates.dtype}")
    if not 1 <= keep <= min(MAX_K, num_candidates):
        raise ValueError(f"keep must be in [1, min({MAX_K}, candidates)], got {keep}")
    device = queries.device
    props = torch.cuda.get_device_properties(device) if device.type == "cuda" else None
    shared = props.shared_memory_per_block_optin if props is not None else 227 * 1024
    cfg = {**default_config(dim, queries.dtype, shared), **config}
    block_q, block_n = cfg["block_q"], cfg["block_n"]
    if num_candidates >= 2**31 - block_n:
        raise ValueError(f"at most 2^31 - {block_n} candidates, got {num_candidates}")
    k = _next_pow2(keep)
    single = cfg["block_d"] >= dim  # the query block stays on chip for the whole candidate loop
    scale_q = single and queries.dtype != torch.float16  # -2 q could overflow float16
    queries = queries if queries.stride(-1) == 1 else queries.contiguous()
    candidates = candidates if candidates.stride(-1) == 1 else candidates.contiguous()
    c_sq = (_row_sq(candidates, max_bytes) if c_sq is None else c_sq.to(torch.float32)).contiguous()

    tiles = triton.cdiv(num_candidates, block_n)
    if splits is None:
        programs = 8 * props.multi_processor_count if props is not None else 1
        # Several waves of programs, so that the last, partial one costs little, but each program
        # still walks at least 16 tiles. Programs of one split run side by side (the query block
        # varies fastest), so the candidate tiles they read are shared through L2.
        splits = min(triton.cdiv(programs, triton.cdiv(max(num_queries, 1), block_q)), triton.cdiv(tiles, 16))
    split_len = triton.cdiv(tiles, max(1, min(splits, tiles))) * block_n
    splits = triton.cdiv(num_candidates, split_len)
    slots = splits * k

    values = torch.empty(num_queries, keep, dtype=torch.float32, device=device)
    indices = torch.empty(num_queries, keep, dtype=torch.int64, device=device)
    step = max(block_q, max_bytes // (_BYTES_PER_SLOT * slots) // block_q * block_q)
    for qs in range(0, num_queries, step):
        qb = queries[qs:qs + step]
        keys = torch.empty(qb.shape[0], slots, dtype=torch.int32, device=device)
        idx = torch.empty(qb.shape[0], slots, dtype=torch.int64, device=device)
        _shortlist_kernel[(triton.cdiv(qb.shape[0], block_q), splits)](
            qb, candidates, _row_sq(qb, max_bytes), c_sq, keys, idx, qb.shape[0], num_candidates, dim,
            qb.stride(0), candidates.stride(0), split_len, slots, K=k, BLOCK_Q=block_q, BLOCK_N=block_n,
            BLOCK_D=cfg["block_d"], SINGLE_D=single, SCALE_Q=scale_q, PRECISION=precision,
            num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
        if slots > keep:
            keys, pos = keys.topk(keep, dim=1, largest=False, sorted=False)
            idx = idx.gather(1, pos)
        values[qs:qs + step] = (keys & -block_n).view(torch.float32)
        indices[qs:qs + step] = idx.clamp_(min=0)  # an empty slot (-1) is kept only over +inf keys
    return values, indices
