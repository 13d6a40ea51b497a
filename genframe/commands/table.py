"""genframe table: the comparison table (Markdown, CSV) and budget plot of a sweep folder."""

from __future__ import annotations

import argparse


def _cmd_table(args: argparse.Namespace) -> int:
    from genframe.reporting.table import write_table

    text, written = write_table(args.sweep_dirs, args.out)
    print(text, end="")
    print("wrote " + ", ".join(written))
    return 0


def register(sub) -> None:
    table = sub.add_parser("table", help="write the comparison table and budget plot of sweep folders")
    table.add_argument("sweep_dirs", nargs="+", metavar="SWEEP_DIR",
                       help="folder written by genframe sweep; several (e.g. one per data set) make one table "
                            "with a column per sweep label")
    table.add_argument("--out", help="folder for table.md, table.csv, budget.csv, budget.png (default: the "
                                     "sweep folder; required with several)")
    table.set_defaults(func=_cmd_table)
