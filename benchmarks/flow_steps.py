"""Sample quality against the number of network evaluations (NFE) of a trained flow or diffusion run.

Every flow in the run's sampler chain is sampled again with each solver at each number of steps,
and the digit judge scores the samples at equal n; the figure users look at when choosing a solver
is Frechet distance (as a multiple of the real-vs-real floor) against NFE. It is written as
``figures/quality-vs-nfe.png`` and ``figures/quality-vs-nfe.json`` into the output folder (by
default the run folder, whose report shows the figures it holds).

    python benchmarks/flow_steps.py RUN [--solvers euler,heun] [--steps 1,2,4,8,16,32] [--n 2000]
"""

from __future__ import annotations

import argparse
import io
import json
import sys

from digit_judge import Judge

from genframe.build.sampler import sample_images
from genframe.components.registry import get_registry
from genframe.storage import RunStorage
from genframe.trained.loading import load_trained


def curves(run: str, solvers: list[str], steps: list[int], judge: Judge, n: int, seed: int) -> dict:
    system, device = load_trained(run)
    flows = [name for name in system.sampler if system.components[name].sampling_protocol().get("solver")]
    if not flows:
        raise SystemExit(f"{run}: no flow or diffusion model in its sampler chain {system.sampler}")
    registry = get_registry()
    results: dict = {"run": run, "flows": flows, "n": n, "floor_fd": judge.floor["fd"], "solvers": {}}
    for solver_name in solvers:
        points = []
        for count in steps:
            solver = registry.get("solver", solver_name)(steps=count)
            for name in flows:
                system.components[name].solver = solver
            score = judge.relative(judge.score(sample_images(system, device, n, seed)))
            nfe = sum(system.components[name].evaluations() for name in flows)
            points.append({"steps": count, "nfe": nfe, **score})
            print(json.dumps({solver_name: points[-1]}), flush=True)
        results["solvers"][solver_name] = points
    return results


def plot(results: dict) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5.5, 3.6))
    for solver, points in results["solvers"].items():
        axis.plot([p["nfe"] for p in points], [p["fd_over_floor"] for p in points], marker="o", label=solver)
    axis.set_xscale("log", base=2)
    axis.set_yscale("log")
    axis.set_xlabel("network evaluations per sample (NFE)")
    axis.set_ylabel(f"Frechet distance / real floor (n={results['n']})")
    axis.set_title("quality against solver steps")
    axis.grid(alpha=0.3, which="both")
    axis.legend()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a run folder whose sampler chain holds a flow")
    parser.add_argument("--solvers", default="euler,heun,dpm_solver_pp")
    parser.add_argument("--steps", default="1,2,4,8,16,32")
    parser.add_argument("--n", type=int, default=2000, help="samples the judge reads at each point")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="folder for flow_steps.json and .png (default: the run folder)")
    args = parser.parse_args()
    judge = Judge("mnist", args.n, log=lambda m: print(m, file=sys.stderr))
    results = curves(args.run, args.solvers.split(","), [int(s) for s in args.steps.split(",")], judge, args.n,
                     args.seed)
    out = RunStorage(args.out or args.run)
    out.write_text("figures/quality-vs-nfe.json", json.dumps(results, indent=1) + "\n")
    out.write_bytes("figures/quality-vs-nfe.png", plot(results))
    print(f"wrote {out.url}/figures/quality-vs-nfe.json and .png", file=sys.stderr)


if __name__ == "__main__":
    main()
