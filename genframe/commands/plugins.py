"""genframe plugins: the installed components and any plugin problems."""

from __future__ import annotations

import argparse
import json


def _cmd_plugins(args: argparse.Namespace) -> int:
    from genframe.components.registry import get_registry
    from genframe.components.roles import summary

    registry = get_registry()
    rows = [{"role": c.role, "name": c.name, "distribution": c.distribution, "version": c.version,
             "plugin": c.plugin, "summary": summary(c.cls)} for c in registry.all()]
    if args.json:
        print(json.dumps({"components": rows, "problems": [p.__dict__ for p in registry.problems]}, indent=2))
        return 0
    widths = [max([len(r[k]) for r in rows] + [len(k)]) for k in ("role", "name", "distribution")]
    print(f"{'role':<{widths[0]}}  {'name':<{widths[1]}}  {'distribution':<{widths[2]}}  summary")
    for r in rows:
        print(f"{r['role']:<{widths[0]}}  {r['name']:<{widths[1]}}  {r['distribution']:<{widths[2]}}  {r['summary']}")
    for p in registry.problems:
        print(f"problem: plugin {p.plugin!r} from {p.distribution}: {p.message}")
    return 0


def register(sub) -> None:
    plugins = sub.add_parser("plugins", help="list installed components and plugin problems")
    plugins.add_argument("--json", action="store_true")
    plugins.set_defaults(func=_cmd_plugins)
