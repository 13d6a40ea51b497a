"""genframe interpolate: PNG strips along straight lines between codes of real images, or prior samples."""

from __future__ import annotations

import argparse

from .reconstruct import add_run_arguments, search_of, trained_of
from genframe.commands._args import count


def _cmd_interpolate(args: argparse.Namespace) -> int:
    from genframe.trained import applications as app

    trained = trained_of(args)
    images = app.read_images(args.images, trained) if args.images else None
    strips = app.interpolate(trained, images=images, source=args.source, pairs=args.pairs, steps=args.steps,
                             seed=args.seed, search=search_of(args))
    app.write_file(args.out, app.strips_png(strips))
    print(f"wrote {strips.shape[0]} strips of {strips.shape[1]} images to {args.out}")
    return 0


def register(sub) -> None:
    cmd = sub.add_parser("interpolate", help="PNG strips interpolating between codes of real images or prior samples")
    add_run_arguments(cmd)
    cmd.add_argument("--out", required=True, help="output PNG, one strip per row")
    cmd.add_argument("--images", help="interpolate between the codes of consecutive pairs of these images "
                                      "(.npz key 'images' or .npy, uint8)")
    cmd.add_argument("--source", choices=("auto", "images", "codes", "prior"), default="auto",
                     help="images: --images; codes: training images' learned codes (GLO, GLANN); prior: prior "
                          "samples; auto (default): images if given, else codes if the run has a code table, "
                          "else prior")
    cmd.add_argument("--pairs", type=count(), default=8, help="strips (default 8)")
    cmd.add_argument("--steps", type=count(), default=8, help="images per strip between the two ends (default 8)")
    cmd.set_defaults(func=_cmd_interpolate)
