"""``genframe`` command line: parses arguments and calls the API; user errors print as one line.

Each subcommand lives in a module of ``genframe.commands`` with a ``register(subparsers)``
function; this module only discovers them and turns ``GenframeError`` into one line.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from typing import Sequence

from genframe import commands
from genframe.ops.denormals import denormals_flushed
from genframe.ops.distributed import launched
from genframe.errors import GenframeError


class _Parser(argparse.ArgumentParser):
    """Command-line mistakes are one line too, like every other error, naming the command and the flag."""

    def error(self, message: str):  # type: ignore[override]
        print(f"genframe: error: {self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="genframe", description="Compose, train and compare generative image models.")
    sub = p.add_subparsers(dest="command", required=True)
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):  # helpers shared by the commands
            importlib.import_module(f"{commands.__name__}.{info.name}").register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    code = _run_command(argv)
    if launched():
        # Under torchrun, leave without interpreter finalisation: the run has destroyed its process
        # group and written every file, and gloo's worker threads have been seen to abort a process
        # (SIGABRT) while Python finalises, turning a finished run into a failed launch.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _run_command(argv: Sequence[str] | None) -> int:
    args = parser().parse_args(argv)
    try:
        with denormals_flushed():  # before torch starts its worker threads, which inherit it
            return args.func(args)
    except GenframeError as exc:
        print(f"genframe: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("genframe: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
