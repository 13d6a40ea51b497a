"""genframe validate: check specs without running them."""

from __future__ import annotations

import argparse


def _cmd_validate(args: argparse.Namespace) -> int:
    from genframe.api import load_system
    from genframe.build.dry_run import dry_run, human
    from genframe.build.prepare import resolve_device

    for spec in args.specs:
        system = load_system(spec, args.set)
        # what `genframe run` would build, on the meta device: shapes checked, memory estimated
        estimate = dry_run(system, resolve_device(args.device or system.device))
        print(f"{spec}: ok" + (f" (training needs about {human(estimate.total)})" if estimate else ""))
    return 0


def register(sub) -> None:
    validate = sub.add_parser("validate", help="check specs without running them")
    validate.add_argument("specs", nargs="+")
    validate.add_argument("--set", action="append", default=[], metavar="PATH=VALUE")
    validate.add_argument("--device", help="check the memory estimate against this device (default: the spec's)")
    validate.set_defaults(func=_cmd_validate)
