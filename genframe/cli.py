"""``genframe`` command line: parses arguments and calls the API; user errors print as one line."""

from __future__ import annotations

import argparse
import io
import json
import sys
from typing import Sequence

from .errors import GenframeError


def _cmd_run(args: argparse.Namespace) -> int:
    from .api import train

    if args.spec is None and args.resume is None:
        raise GenframeError("give a SPEC to run, or --resume RUN to continue a run")
    finished = train(args.spec, overrides=args.set, out=args.out, device=args.device, resume=args.resume)
    print(finished.url)
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from .api import load_system

    for spec in args.specs:
        load_system(spec, args.set)
        print(f"{spec}: ok")
    return 0


def _cmd_plugins(args: argparse.Namespace) -> int:
    from .registry import get_registry
    from .roles import summary

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
    from .spec import schema_json

    return _write_or_check(schema_json(), args.out, args.check, "schema")


def _cmd_reference(args: argparse.Namespace) -> int:
    from .reference import reference_markdown

    return _write_or_check(reference_markdown(), args.out, args.check, "reference")


def _cmd_sample(args: argparse.Namespace) -> int:
    import fsspec
    import numpy as np

    from .api import sample

    images, name = sample(args.run, args.n, seed=args.seed, label=args.label, device=args.device)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, images=images.numpy(), spec=np.array(name))
    try:
        with fsspec.open(args.out, "wb") as fh:
            fh.write(buffer.getvalue())
    except OSError as exc:
        raise GenframeError(f"{args.out}: cannot write: {exc.strerror or exc}") from None
    print(f"wrote {args.n} images {tuple(images.shape[1:])} to {args.out}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="genframe", description="Compose, train and compare generative image models.")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="train a spec (or resume a run)")
    run.add_argument("spec", nargs="?", help="spec file or fsspec URL (optional with --resume)")
    run.add_argument("--set", action="append", default=[], metavar="PATH=VALUE",
                     help="override a field, e.g. stages.0.trainer.divergence.type=hinge (repeatable)")
    run.add_argument("--device", help="auto, cpu, cuda, cuda:N (overrides the spec)")
    run.add_argument("--out", help="run folder, any fsspec URL (default runs/<name>-<timestamp>)")
    run.add_argument("--resume", metavar="RUN", help="continue the interrupted run in this folder")
    run.set_defaults(func=_cmd_run)

    validate = sub.add_parser("validate", help="check specs without running them")
    validate.add_argument("specs", nargs="+")
    validate.add_argument("--set", action="append", default=[], metavar="PATH=VALUE")
    validate.set_defaults(func=_cmd_validate)

    plugins = sub.add_parser("plugins", help="list installed components and plugin problems")
    plugins.add_argument("--json", action="store_true")
    plugins.set_defaults(func=_cmd_plugins)

    for name, func, what in (("schema", _cmd_schema, "the spec JSON Schema"),
                             ("reference", _cmd_reference, "the component reference (Markdown)")):
        cmd = sub.add_parser(name, help=f"print or write {what}")
        cmd.add_argument("--out", help="file to write (default: stdout)")
        cmd.add_argument("--check", action="store_true", help="fail if --out differs from what would be written")
        cmd.set_defaults(func=func)

    sample = sub.add_parser("sample", help="draw images from a trained run")
    sample.add_argument("run", help="run folder")
    sample.add_argument("--n", type=int, default=64)
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--label", type=int, help="class of the images (class-conditional generators)")
    sample.add_argument("--out", required=True, help="output .npz (key 'images': uint8 N x C x H x W)")
    sample.add_argument("--device")
    sample.set_defaults(func=_cmd_sample)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except GenframeError as exc:
        print(f"genframe: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("genframe: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
