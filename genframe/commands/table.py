"""genframe table: the comparison table (Markdown, CSV) and budget plot of a sweep folder."""

from __future__ import annotations

import argparse


def _cmd_table(args: argparse.Namespace) -> int:
    from ..table import write_table

    text, written = write_table(args.sweep_dir, args.out)
    print(text, end="")
    print("wrote " + ", ".join(written))
    return 0


def register(sub) -> None:
    table = sub.add_parser("table", help="write the comparison table and budget plot of a sweep folder")
    table.add_argument("sweep_dir", help="folder written by genframe sweep")
    table.add_argument("--out", help="folder for table.md, table.csv, budget.csv, budget.png (default: SWEEP_DIR)")
    table.set_defaults(func=_cmd_table)
