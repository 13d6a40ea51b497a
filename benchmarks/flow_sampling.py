"""Sampling speed of a pixel-space flow: genframe's sampler chain, eager and replayed from a CUDA graph,
against a hand-written Heun loop over the same U-Net.

A flow's sample costs ``2 x steps`` network evaluations, each a few dozen kernels: at small batch
sizes the host's launch time, not the GPU, sets the pace. With ``cuda_graphs: true`` the sampler
captures one batch's whole solve and replays it. The networks are those of
``specs/flow_matching.yaml`` (untrained: speed does not depend on the weights), at MNIST's shape.

    python benchmarks/flow_sampling.py --device cuda --n 10000 --batch-size 500 --out flow_sampling.json
    python benchmarks/flow_sampling.py --device cpu --n 64 --batch-size 16 --steps 4 --width 16   # plumbing only

On a CPU there is no CUDA graph to replay; the script then times the eager paths only.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from _common import REPO, sync

from genframe.api import load_system
from genframe.build.prepare import prepare
from genframe.build.sampler import Sampler


def timed(device: torch.device, work, repeats: int) -> float:
    """Best of ``repeats`` wall-clock seconds of ``work()``, after one warm-up call."""
    work()
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        started = time.perf_counter()
        work()
        sync(device)
        best = min(best, time.perf_counter() - started)
    return best


def hand_written(flow, noise: torch.Tensor) -> torch.Tensor:
    """Heun's method over the linear path, as one would write it without genframe."""
    network, steps = flow.network, flow.solver.steps
    times = torch.linspace(0.0, 1.0, steps + 1, device=noise.device)
    x = noise
    for i in range(steps):
        now, after = times[i], times[i + 1]
        slope = network(x, now, None)
        guess = x + (after - now) * slope
        x = x + (after - now) * 0.5 * (slope + network(guess, after, None))
    return x.clamp(-1.0, 1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--n", type=int, default=10000, help="samples per timing")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--steps", type=int, default=16, help="Heun steps (2 network evaluations each)")
    parser.add_argument("--width", type=int, default=64, help="the U-Net's base width (the spec's is 64)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", help="write the results here as JSON")
    args = parser.parse_args()
    device = torch.device(args.device)
    system = load_system(str(REPO / "specs" / "flow_matching.yaml"), [
        f"components.generator.solver.steps={args.steps}", f"components.generator.network.width={args.width}"])
    with torch.no_grad():
        prepare(system, device, load_data=False,
                data_shape={"num_examples": 1, "channels": 1, "image_size": 28, "num_classes": None,
                            "class_names": None})
        flow = system.components["generator"].eval()
        batches = [(start, min(args.batch_size, args.n - start)) for start in range(0, args.n, args.batch_size)]

        def reference() -> None:
            generator = torch.Generator(device).manual_seed(0)
            for _, count in batches:
                hand_written(flow, torch.randn(count, 1, 28, 28, device=device, generator=generator))

        def genframe(graphs: bool):
            def work() -> None:
                Sampler(system, device, graphs=graphs)(args.n, torch.Generator(device).manual_seed(0),
                                                       batch_size=args.batch_size)
            return work

        results = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                   "torch": torch.__version__, "n": args.n, "batch_size": args.batch_size, "steps": args.steps,
                   "nfe": 2 * args.steps, "width": args.width,
                   "hand_written_s": timed(device, reference, args.repeats),
                   "genframe_eager_s": timed(device, genframe(False), args.repeats)}
        if device.type == "cuda":
            results["genframe_graphs_s"] = timed(device, genframe(True), args.repeats)
    for key in ("genframe_eager_s", "genframe_graphs_s"):
        if key in results:
            results[key.replace("_s", "_speedup")] = round(results["hand_written_s"] / results[key], 2)
    print(json.dumps(results, indent=2))
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
