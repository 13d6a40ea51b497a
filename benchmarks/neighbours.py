"""Nearest-neighbour search speed: chunked matmul path against the fused Triton kernel, one process.

The workload is the IMLE / GLANN latent mapper's (60,000 targets x 600,000 samples, d=64,
float32). Measured in the same run: (a) the device's TF32 matmul peak (large square matmul,
median of CUDA-event timings) as the yardstick, (b) ``nearest_neighbours(method="matmul")``
(with TF32 allowed, the same product precision as the kernel), (c) ``method="triton"``, end to
end (shortlist + exact re-rank), and its shortlist step alone (the kernel and the merge of its
candidate splits); ``--sweep`` times that step at other tile sizes. Effective TFLOP/s counts the 2 Q N d
flops of the products. Correctness: the two paths' indices are compared with each other, and
with float64 brute force on a subset of the queries.

    python benchmarks/neighbours.py --device cuda [--out benchmarks/results/neighbours.json]
    python benchmarks/neighbours.py --device cuda --sweep    # also time other kernel tile sizes
    python benchmarks/neighbours.py --quick --device cpu     # small run; no Triton path on CPU
    TRITON_INTERPRET=1 python benchmarks/neighbours.py --quick --device cpu --queries 200 --candidates 2000
                                                             # the kernel in triton's interpreter (slow)

Prints a table and writes JSON with the device, versions and figures.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from pathlib import Path

import torch

from genframe.ops.neighbours import _memory_budget, _triton_kernels, nearest_neighbours

SWEEP = [  # block_q, block_n, num_warps, num_stages
    (128, 64, 8, 3), (128, 64, 8, 4), (128, 128, 8, 3), (128, 128, 8, 2), (64, 128, 4, 3),
    (128, 64, 4, 3), (256, 64, 8, 3), (64, 64, 4, 4),
]


def _timer(device: torch.device, work, repeats: int, warmup: int = 1) -> float:
    """Median seconds of ``work()``: CUDA events on CUDA, wall clock elsewhere."""
    for _ in range(warmup):
        work()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize(device)
            start.record()
            work()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            begin = time.perf_counter()
            work()
            times.append(time.perf_counter() - begin)
    return statistics.median(times)


def matmul_peak(device: torch.device, size: int, repeats: int) -> tuple[float, float]:
    """Seconds and TFLOP/s of a size^3 float32 matmul (TF32 on CUDA)."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    out = torch.empty(size, size, device=device)
    seconds = _timer(device, lambda: torch.mm(a, b, out=out), repeats, warmup=3)
    return seconds, 2 * size**3 / seconds / 1e12


def brute_force_subset(queries: torch.Tensor, candidates: torch.Tensor, chunk: int) -> torch.Tensor:
    """float64 argmin for a few queries against all candidates, candidates in chunks."""
    best = torch.full((len(queries),), math.inf, dtype=torch.float64, device=queries.device)
    index = torch.zeros(len(queries), dtype=torch.int64, device=queries.device)
    q = queries.double()
    for s in range(0, len(candidates), chunk):
        d = torch.cdist(q, candidates[s:s + chunk].double()).square()
        val, idx = d.min(1)
        better = val < best
        best = torch.where(better, val, best)
        index = torch.where(better, idx + s, index)
    return index


def _row(name: str, seconds: float | None, flops: float, peak: float | None) -> dict:
    tflops = flops / seconds / 1e12 if seconds else None
    fraction = tflops / peak if tflops and peak else None
    return {"path": name, "seconds": seconds, "tflops": tflops, "fraction_of_peak": fraction}


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--queries", type=int, help="default 60,000 (2,000 with --quick)")
    parser.add_argument("--candidates", type=int, help="default 600,000 (20,000 with --quick)")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--rerank", type=int, default=8)
    parser.add_argument("--repeats", type=int, help="timed runs per figure, median kept (default 5, 2 with --quick)")
    parser.add_argument("--peak-size", type=int, help="side of the square matmul for the peak (default 8192, "
                                                      "1024 with --quick)")
    parser.add_argument("--check-queries", type=int, default=512, help="queries checked against float64 brute force")
    parser.add_argument("--quick", action="store_true", help="small defaults, e.g. for a CPU run")
    parser.add_argument("--sweep", action="store_true", help="also time the shortlist step at other tile sizes")
    parser.add_argument("--splits", type=int, help="candidate ranges per query block for the shortlist step "
                                                   "and the sweep (default: the kernel's choice)")
    parser.add_argument("--out", help="JSON path (default benchmarks/results/neighbours.json, "
                                      "neighbours_quick.json with --quick)")
    args = parser.parse_args()
    for name, full, quick in [("queries", 60_000, 2000), ("candidates", 600_000, 20_000), ("repeats", 5, 2),
                              ("peak_size", 8192, 1024)]:
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    out = Path(args.out or f"benchmarks/results/neighbours{'_quick' if args.quick else ''}.json")

    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = True  # the yardstick and the matmul path use TF32 like the kernel
    gen = torch.Generator(device=device).manual_seed(0)
    queries = torch.randn(args.queries, args.dim, device=device, generator=gen)
    candidates = torch.randn(args.candidates, args.dim, device=device, generator=gen)
    flops = 2 * args.queries * args.candidates * args.dim

    peak_seconds, peak = matmul_peak(device, args.peak_size, args.repeats)
    rows = []
    results: dict[str, torch.Tensor] = {}

    def run(method: str):
        results[method] = nearest_neighbours(queries, candidates, rerank=args.rerank, method=method)[0]

    rows.append(_row("matmul path", _timer(device, lambda: run("matmul"), args.repeats), flops, peak))
    kernels = _triton_kernels()
    triton_ok = kernels is not None and (device.type == "cuda" or kernels.interpreting())
    sweep = []
    if triton_ok:
        assert kernels is not None
        from triton.runtime.errors import OutOfResources
        rows.append(_row("triton path", _timer(device, lambda: run("triton"), args.repeats), flops, peak))
        budget = _memory_budget(device)
        c_sq = candidates.square().sum(1)
        alone = _timer(device, lambda: kernels.shortlist(queries, candidates, args.rerank, max_bytes=budget,
                                                         c_sq=c_sq, splits=args.splits), args.repeats)
        rows.append(_row("triton shortlist only", alone, flops, peak))
        for block_q, block_n, warps, stages in SWEEP if args.sweep else []:
            config = {"block_q": block_q, "block_n": block_n, "num_warps": warps, "num_stages": stages}
            try:
                seconds = _timer(device, lambda config=config: kernels.shortlist(
                    queries, candidates, args.rerank, max_bytes=budget, c_sq=c_sq, splits=args.splits, **config),
                    args.repeats)
            except (OutOfResources, RuntimeError) as exc:  # e.g. too little shared memory for this tile size
                sweep.append({**config, "error": f"{type(exc).__name__}: {exc}"[:200]})
                continue
            sweep.append({**config, **_row("kernel", seconds, flops, peak)})
    else:
        rows.append(_row("triton path", None, flops, peak))

    check = {}
    subset = min(args.check_queries, args.queries)
    reference = brute_force_subset(queries[:subset], candidates, chunk=max(1, 2**27 // max(subset, 1)))
    check["matmul_vs_float64_mismatches"] = int((results["matmul"][:subset] != reference).sum())
    if "triton" in results:
        check["triton_vs_float64_mismatches"] = int((results["triton"][:subset] != reference).sum())
        check["triton_vs_matmul_mismatches"] = int((results["triton"] != results["matmul"]).sum())
    check["float64_checked_queries"] = subset

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"{args.queries} queries x {args.candidates} candidates, d={args.dim}, rerank={args.rerank}, "
          f"{device} ({name})")
    print(f"{'path':<22}{'seconds':>10}{'TFLOP/s':>10}{'of peak':>10}")
    print(f"{'matmul peak':<22}{peak_seconds:>10.4f}{peak:>10.3g}{'100%':>10}")
    for row in rows:
        print(f"{row['path']:<22}{_fmt(row['seconds'], '.4f'):>10}{_fmt(row['tflops'], '.3g'):>10}"
              f"{_fmt(row['fraction_of_peak'], '.0%'):>10}")
    for entry in sweep:
        name = f"bq{entry['block_q']} bn{entry['block_n']} w{entry['num_warps']} s{entry['num_stages']}"
        if "error" in entry:
            print(f"  {name:<20}{entry['error']}")
        else:
            print(f"  {name:<20}{entry['seconds']:>10.4f}{entry['tflops']:>10.3g}{entry['fraction_of_peak']:>10.0%}")
    print("correctness:", ", ".join(f"{k}={v}" for k, v in check.items()))

    triton_version = None
    if kernels is not None:
        import triton
        triton_version = triton.__version__
    report = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "triton": triton_version, "platform": platform.platform(),
        "queries": args.queries, "candidates": args.candidates, "dim": args.dim, "rerank": args.rerank,
        "splits": args.splits,
        "repeats": args.repeats, "flops": flops,
        "peak": {"size": args.peak_size, "seconds": peak_seconds, "tflops": peak,
                 "precision": "tf32" if device.type == "cuda" else "float32"},
        "results": rows, "sweep": sweep, "check": check,
        "note": "seconds are medians; TFLOP/s = 2 Q N d / seconds; the paths include the exact re-rank",
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
