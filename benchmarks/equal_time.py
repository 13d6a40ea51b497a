"""Sample quality at equal CPU training time: flow matching and diffusion beside IMLE and GLANN on MNIST.

Every system gets the same training budget in CPU seconds of this process (one thread, so that
other work on the machine does not change it): the epochs of its trained stage are chosen from a
calibration (CPU seconds per extra epoch, from two short runs after a warm-up run, so that the
one-time costs of a system's first calls do not enter it), then it trains once more with them and
the digit judge reads ``--n`` samples.

GLANN's variants share one GLO stage, trained once and counted in each budget; its second stage
is IMLE (glann.yaml), flow matching, variance-preserving diffusion or EDM (glann_flow.yaml with
its ``path`` line changed), trained with ``--reuse`` for the rest of the budget. The pixel-space
specs (flow_matching.yaml, diffusion.yaml) and image-space IMLE spend the whole budget on their
one stage.

Sizes are those of ``quality.py --quick`` (2,000 images, generator width 32, GLO 30 epochs, U-Net
width 16 with 8 Heun steps). Sampling time is recorded too: a flow pays its network evaluations
per sample there.

    python benchmarks/equal_time.py --budget 240 --json benchmarks/results/equal_time_quick_cpu.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from _common import shown
from digit_judge import Judge
from quality import mnist_root, overrides

from genframe.api import sample, train
from genframe.ops.images import image_grid, png_bytes

REPO = Path(__file__).resolve().parent.parent
#: name -> (spec, the stage the budget buys epochs of, extra overrides)
PIXEL = {
    "imle": ("imle.yaml", 0, []),
    "flow_matching": ("flow_matching.yaml", 0, []),
    "diffusion": ("diffusion.yaml", 0, []),
}
LATENT = {  # second stages on one shared GLO stage
    "glann": ("glann.yaml", 1, []),
    "glann_flow": ("glann_flow.yaml", 1, []),
    "glann_vp": ("glann_flow.yaml", 1, ["components.mapper.path={type: vp_cosine}"]),
    "glann_edm": ("glann_flow.yaml", 1, ["components.mapper.path={type: edm}"]),
}
SYSTEMS = {**PIXEL, **LATENT}
#: epochs of the two calibration runs (seconds of each system's training); IMLE's differ by whole
#: refresh periods (imle.yaml refreshes its pairing every 5 epochs, glann.yaml's mapper every epoch)
CALIBRATION_EPOCHS = {"imle": (5, 10), "flow_matching": (1, 3), "diffusion": (1, 3)}
MAPPER_CALIBRATION = (5, 30)


def cpu_seconds(run) -> tuple[float, str]:
    """(CPU seconds of this process spent in ``run()``, the run's url)."""
    started = time.process_time()
    url = run()
    return time.process_time() - started, url


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args, self.root, self.out = args, mnist_root(), Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)

    def settings(self, name: str, stage: int, epochs: int) -> tuple[str, list[str]]:
        spec, _, extra = SYSTEMS[name]
        base = "glann_flow" if name.startswith("glann_") else name
        return str(REPO / "specs" / spec), [*overrides(base, self.root, True, False, []), *extra,
                                            f"stages.{stage}.trainer.epochs={epochs}", "evaluation.every=null"]

    def train(self, name: str, epochs: int, tag: str, reuse: str | None = None) -> tuple[float, str]:
        spec, stage, _ = SYSTEMS[name]
        spec_url, sets = self.settings(name, stage, epochs)
        url = str(self.out / name / f"{tag}-{time.strftime('%H%M%S')}")
        return cpu_seconds(lambda: train(spec_url, overrides=sets, out=url, device="cpu", reuse=reuse).url)

    def epochs_for(self, name: str, budget: float, reuse: str | None) -> dict:
        """Epochs of the budgeted stage that fill ``budget`` CPU seconds, from two calibration runs:
        the difference of their times is what the extra epochs cost, without the set-up both share
        (loading the data, encoding the codes), which the final run's reported time includes."""
        short, long = CALIBRATION_EPOCHS.get(name, MAPPER_CALIBRATION)
        self.train(name, short, "warm-up", reuse)  # first calls of the system's code paths (imports, allocations)
        first, _ = self.train(name, short, f"calibrate-{short}", reuse)
        second, _ = self.train(name, long, f"calibrate-{long}", reuse)
        per_epoch = (second - first) / (long - short)
        if per_epoch <= 0:  # timing noise larger than the extra epochs: count the set-up as training
            per_epoch = second / long
        return {"per_epoch_s": per_epoch, "epochs": max(1, round(budget / per_epoch))}

    def judge(self, name: str, url: str, judge: Judge) -> dict:
        started = time.process_time()
        images, _ = sample(url, judge.n, seed=0, device="cpu")
        sampling = time.process_time() - started
        (self.out / name / "samples.png").write_bytes(png_bytes(image_grid(images[:64])))
        return {"sampling_cpu_s": round(sampling, 1), **judge.relative(judge.score(images))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=240.0, help="CPU seconds of training per system")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated subset of " + ", ".join(SYSTEMS))
    parser.add_argument("--n", type=int, default=2000, help="samples the judge reads (and its real reference)")
    parser.add_argument("--out", default=str(REPO / "runs" / "equal-time"))
    parser.add_argument("--json", help="also write the summary here")
    parser.add_argument("--merge", action="store_true",
                        help="add these systems to the summary already at --json (same budget), e.g. one rerun")
    args = parser.parse_args()
    torch.set_num_threads(1)
    bench = Bench(args)
    judge = Judge("mnist", args.n, root=bench.root.parent, log=lambda m: print(m, file=sys.stderr))
    names = args.systems.split(",")
    summary: dict = {"budget_cpu_s": args.budget, "threads": torch.get_num_threads(), "torch": torch.__version__,
                     "judge": judge.protocol(), "systems": {}}
    glo_run, glo_seconds = None, 0.0
    if any(name in LATENT for name in names):
        # GLANN's GLO stage, once: a glann.yaml run with one mapper epoch, which the variants reuse
        glo_seconds, glo_run = bench.train("glann", 1, "glo")
        summary["glo"] = {"run": shown(glo_run), "cpu_s": round(glo_seconds, 1)}
        print(json.dumps({"glo": summary["glo"]}), flush=True)
    for name in names:
        latent = name in LATENT
        budget = args.budget - glo_seconds if latent else args.budget
        if budget <= 0:
            sys.exit(f"--budget {args.budget:g}: the shared GLO stage alone took {glo_seconds:.0f} CPU seconds")
        plan = bench.epochs_for(name, budget, glo_run if latent else None)
        seconds, url = bench.train(name, plan["epochs"], "final", glo_run if latent else None)
        result = {"epochs": plan["epochs"], "cpu_s_per_epoch": round(plan["per_epoch_s"], 3),
                  "training_cpu_s": round(seconds + (glo_seconds if latent else 0.0), 1), "run": shown(url),
                  **({"glo": summary["glo"]} if latent else {}), **bench.judge(name, url, judge)}
        summary["systems"][name] = result
        print(json.dumps({name: result}), flush=True)
    if args.merge and args.json and Path(args.json).exists():
        earlier = json.loads(Path(args.json).read_text())
        if earlier["budget_cpu_s"] != args.budget:
            sys.exit(f"--merge: {args.json} holds a budget of {earlier['budget_cpu_s']:g} s, not {args.budget:g}")
        # each latent system records the GLO stage it shared (a merged file holds several)
        summary = {**earlier, **summary, "systems": {**earlier["systems"], **summary["systems"]}}
    text = json.dumps(summary, indent=2)
    (bench.out / "summary.json").write_text(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
