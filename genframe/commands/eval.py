"""genframe eval: FID, IS, KID and precision/recall of a trained run, logged with their protocol."""

from __future__ import annotations

import argparse
import json
from genframe.commands._args import count


def _cmd_eval(args: argparse.Namespace) -> int:
    from genframe.trained.evaluate import evaluate_run

    names = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    record = evaluate_run(args.run, metrics=names, n=args.n, reference=args.reference, device=args.device,
                          checkpoint=args.checkpoint, features=args.features)
    if args.json:
        print(json.dumps(record))
        return 0
    values = {k: v for k, v in record.items() if isinstance(v, float)}
    width = max(map(len, values), default=0)
    for key, value in values.items():
        print(f"{key:<{width}}  {value:.6g}")
    print(f"appended to {args.run.rstrip('/')}/metrics.jsonl (stage {record['stage']!r}, step {record['step']})")
    return 0


def register(sub) -> None:
    cmd = sub.add_parser("eval", help="measure a trained run (FID, IS, KID, precision/recall) into its metrics.jsonl")
    cmd.add_argument("run", help="run folder")
    cmd.add_argument("--metrics", metavar="LIST",
                     help="comma-separated fid, is, kid, pr (or full type names); default: the spec's "
                          "evaluation.metrics, else fid. Settings come from the spec when it lists the metric")
    cmd.add_argument("--n", type=count(2), help="generated images for every metric (default: each metric's n)")
    cmd.add_argument("--reference", metavar="SPLIT|STATS",
                     help="compare with this split of the run's data set (e.g. test), or with a statistics "
                          "file (.pt/.npz, FID only); default: the run's own data")
    cmd.add_argument("--features", metavar="TYPE",
                     help="the feature extractor every metric measures with, e.g. classifier (a CNN trained once on "
                          "the reference data's labels: works offline) or inception_v3; default: each metric's")
    cmd.add_argument("--checkpoint", choices=("last", "best"), default="last")
    cmd.add_argument("--device", help="auto, cpu, cuda, cuda:N (default: the spec's)")
    cmd.add_argument("--json", action="store_true", help="print the logged record as JSON")
    cmd.set_defaults(func=_cmd_eval)
