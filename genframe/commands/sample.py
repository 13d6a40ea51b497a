"""genframe sample: draw images from a trained run into an .npz file."""

from __future__ import annotations

import argparse
import io

from genframe.errors import GenframeError
from genframe.commands._args import count


def _cmd_sample(args: argparse.Namespace) -> int:
    import fsspec
    import numpy as np

    from genframe.api import sample

    images, name = sample(args.run, args.n, seed=args.seed, label=args.label, device=args.device,
                          checkpoint=args.checkpoint)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, images=images.numpy(), spec=np.array(name))
    try:
        with fsspec.open(args.out, "wb") as fh:
            fh.write(buffer.getvalue())
    except OSError as exc:
        raise GenframeError(f"{args.out}: cannot write: {exc.strerror or exc}") from None
    print(f"wrote {args.n} images {tuple(images.shape[1:])} to {args.out}")
    return 0


def register(sub) -> None:
    sample = sub.add_parser("sample", help="draw images from a trained run")
    sample.add_argument("run", help="run folder")
    sample.add_argument("--n", type=count(), default=64)
    sample.add_argument("--seed", type=count(0), default=0)
    sample.add_argument("--label", help="class of the images (class-conditional generators): a number or a "
                                          "class name the run recorded, e.g. 7 or Sneaker")
    sample.add_argument("--out", required=True, help="output .npz (key 'images': uint8 N x C x H x W)")
    sample.add_argument("--device")
    sample.add_argument("--checkpoint", choices=("last", "best"), default="last",
                        help="the newest weights, or the best by the spec's best_checkpoint metric")
    sample.set_defaults(func=_cmd_sample)
