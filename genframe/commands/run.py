"""genframe run: train a spec, or continue an interrupted run."""

from __future__ import annotations

import argparse

from genframe.errors import GenframeError


def _cmd_run(args: argparse.Namespace) -> int:
    from genframe.api import train

    if args.spec is None and args.resume is None:
        raise GenframeError("give a SPEC to run, or --resume RUN to continue a run")
    finished = train(args.spec, overrides=args.set, out=args.out, device=args.device, resume=args.resume,
                     reuse=args.reuse)
    if finished.world.is_main:
        print(finished.url)
    return 0


def register(sub) -> None:
    run = sub.add_parser("run", help="train a spec (or resume a run)")
    run.add_argument("spec", nargs="?", help="spec file or fsspec URL (optional with --resume)")
    run.add_argument("--set", action="append", default=[], metavar="PATH=VALUE",
                     help="override a field, e.g. stages.0.trainer.divergence.type=hinge (repeatable)")
    run.add_argument("--device", help="auto, cpu, cuda, cuda:N (overrides the spec)")
    run.add_argument("--out", help="run folder, any fsspec URL (default runs/<name>-<timestamp>)")
    run.add_argument("--resume", metavar="RUN", help="continue the interrupted run in this folder")
    run.add_argument("--reuse", metavar="RUN", help="start from the finished leading stages this spec shares with "
                                                    "RUN (same data, seed and stage settings) instead of training them")
    run.set_defaults(func=_cmd_run)
