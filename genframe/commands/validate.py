"""genframe validate: check specs without running them."""

from __future__ import annotations

import argparse


def _cmd_validate(args: argparse.Namespace) -> int:
    from genframe.api import load_system
    from genframe.build.dry_run import dry_run, human
    from genframe.build.prepare import resolve_device

    from genframe.build.preflight import check_writable, preflight

    for spec in args.specs:
        system = load_system(spec, args.set)
        # what `genframe run` would build, on the meta device: shapes checked, memory estimated
        estimate = dry_run(system, resolve_device(args.device or system.device))
        if args.preflight:  # weights, data and statistics files fetched or checked, as a run's first seconds do
            preflight(system)
        print(f"{spec}: ok" + (f" (training needs about {human(estimate.total)})" if estimate else "")
              + ("; everything it needs is in place" if args.preflight else ""))
    if args.preflight and args.out:
        check_writable(args.out)
        print(f"--out {args.out}: writable")
    return 0


def register(sub) -> None:
    validate = sub.add_parser("validate", help="check specs without running them")
    validate.add_argument("specs", nargs="+")
    validate.add_argument("--set", action="append", default=[], metavar="PATH=VALUE")
    validate.add_argument("--device", help="check the memory estimate against this device (default: the spec's)")
    validate.add_argument("--preflight", action="store_true",
                          help="also fetch or check what the runs need from outside (metric and loss weights, "
                               "data sets, statistics files), as genframe run does before training")
    validate.add_argument("--out", metavar="URL", help="with --preflight: check that a run folder can be written there")
    validate.set_defaults(func=_cmd_validate)
