"""GLANN's second stage, varied on one shared GLO stage: which mapper settings make better samples.

One GLO stage is trained (glann.yaml at the ``quality.py --quick`` size, one thread), then each
variant trains the second stage of ``--spec`` on its codes with ``--reuse``, and the digit judge
reads ``--n`` samples of each. A variant is a name and ``--set`` overrides separated by ``;``;
the same seed and the same codes make the variants differ by their settings alone.

    python benchmarks/mapper_variants.py --epochs 400 \\
        --variant "plain=components.mapper.standardize=false" --variant "standardized=" \\
        --variant "ema=components.mapper.standardize=false;components.mapper.average=0.999"
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

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="glann_flow", help="a spec of specs/ with glann.yaml's GLO stage")
    parser.add_argument("--variant", action="append", required=True, metavar="NAME=PATH=VALUE;PATH=VALUE")
    parser.add_argument("--epochs", type=int, default=400, help="epochs of the second stage")
    parser.add_argument("--n", type=int, default=2000, help="samples the judge reads (and its real reference)")
    parser.add_argument("--out", default=str(REPO / "runs" / "mapper-variants"))
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    root, out = mnist_root(), Path(args.out)
    judge = Judge("mnist", args.n, root=root.parent, log=lambda m: print(m, file=sys.stderr))
    stamp = time.strftime("%H%M%S")
    glo = train(str(REPO / "specs" / "glann.yaml"), out=str(out / f"glo-{stamp}"), device="cpu",
                overrides=[*overrides("glann", root, True, False, []), "stages.1.trainer.epochs=1"]).url
    results: dict = {"spec": args.spec, "epochs": args.epochs, "glo": shown(glo), "judge": judge.protocol(),
                     "variants": {}}
    for variant in args.variant:
        name, _, sets = variant.partition("=")
        extra = [s for s in sets.split(";") if s]
        started = time.process_time()
        run = train(str(REPO / "specs" / f"{args.spec}.yaml"), out=str(out / f"{name}-{stamp}"), device="cpu",
                    reuse=glo, overrides=[*overrides(args.spec, root, True, False, []), *extra,
                                          f"stages.1.trainer.epochs={args.epochs}", "evaluation.every=null"]).url
        seconds = time.process_time() - started
        images, _ = sample(run, judge.n, seed=0, device="cpu")
        results["variants"][name] = {"overrides": extra, "mapper_cpu_s": round(seconds, 1), "run": shown(run),
                                     **judge.relative(judge.score(images))}
        print(json.dumps({name: results["variants"][name]}), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
