"""genframe validate: check specs without running them."""

from __future__ import annotations

import argparse


def _cmd_validate(args: argparse.Namespace) -> int:
    from genframe.api import load_system

    for spec in args.specs:
        load_system(spec, args.set)
        print(f"{spec}: ok")
    return 0


def register(sub) -> None:
    validate = sub.add_parser("validate", help="check specs without running them")
    validate.add_argument("specs", nargs="+")
    validate.add_argument("--set", action="append", default=[], metavar="PATH=VALUE")
    validate.set_defaults(func=_cmd_validate)
