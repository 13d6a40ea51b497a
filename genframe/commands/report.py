"""genframe report: one self-contained HTML page describing a run."""

from __future__ import annotations

import argparse


def _cmd_report(args: argparse.Namespace) -> int:
    from genframe.reporting.report import write_report

    print(write_report(args.run, args.out))
    return 0


def register(sub) -> None:
    report = sub.add_parser("report", help="write a self-contained HTML report of a run")
    report.add_argument("run", help="run folder")
    report.add_argument("--out", help="where to write the page (default: <run>/report.html)")
    report.set_defaults(func=_cmd_report)
