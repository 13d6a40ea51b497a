"""genframe schema / reference: print, write or check the files generated from the registry."""

from __future__ import annotations

import argparse
import sys

from genframe.errors import GenframeError


def _write_or_check(text: str, target: str | None, check: bool, what: str) -> int:
    if target is None:
        sys.stdout.write(text)
        return 0
    if check:
        try:
            with open(target, encoding="utf-8") as fh:
                current = fh.read()
        except FileNotFoundError:
            current = None
        if current != text:
            raise GenframeError(f"{target}: {what} is stale; regenerate it with: genframe "
                                f"{'schema' if what == 'schema' else 'reference'} --out {target}")
        print(f"{target}: up to date")
        return 0
    try:
        with open(target, "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:
        raise GenframeError(f"{target}: cannot write: {exc.strerror}") from None
    print(f"wrote {target}")
    return 0


def _cmd_schema(args: argparse.Namespace) -> int:
    from genframe.spec.load import schema_json

    return _write_or_check(schema_json(), args.out, args.check, "schema")


def _cmd_reference(args: argparse.Namespace) -> int:
    from genframe.reporting.reference import reference_markdown

    return _write_or_check(reference_markdown(), args.out, args.check, "reference")


def register(sub) -> None:
    for name, func, what in (("schema", _cmd_schema, "the spec JSON Schema"),
                             ("reference", _cmd_reference, "the component reference (Markdown)")):
        cmd = sub.add_parser(name, help=f"print or write {what}")
        cmd.add_argument("--out", help="file to write (default: stdout)")
        cmd.add_argument("--check", action="store_true", help="fail if --out differs from what would be written")
        cmd.set_defaults(func=func)
