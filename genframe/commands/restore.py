"""genframe restore: inpaint or denoise images with a trained generator as the image prior."""

from __future__ import annotations

import argparse

from genframe.errors import GenframeError
from .reconstruct import add_run_arguments, search_of, trained_of
from genframe.commands._args import number


def _cmd_restore(args: argparse.Namespace) -> int:
    from genframe.trained import applications as app

    if args.mask is None and args.noise is None:
        raise GenframeError("restore: give --mask FILE (inpainting), --noise SIGMA (denoising), or both")
    trained = trained_of(args)
    observed = app.read_images(args.images, trained)
    mask = app.read_mask(args.mask, observed.shape) if args.mask else None
    result = app.restore(trained, observed, mask=mask, noise=args.noise, latent_weight=args.latent_weight,
                         search=search_of(args))
    app.write_file(args.out, app.npz_bytes(images=result.images.numpy(), codes=result.codes.numpy()))
    if args.png:
        app.write_file(args.png, app.pairs_png(observed, result.images))
    print(f"restored {observed.shape[0]} images; wrote {args.out}")
    return 0


def register(sub) -> None:
    cmd = sub.add_parser("restore", help="inpaint (--mask) or denoise (--noise) images with the generator as prior")
    add_run_arguments(cmd)
    cmd.add_argument("--images", required=True, help="observed images: .npz (key 'images') or .npy, uint8")
    cmd.add_argument("--mask", help=".npz (key 'mask') or .npy of 0/1, 1 = observed pixel: (H, W), (N, H, W) "
                                    "or (N, C, H, W)")
    cmd.add_argument("--noise", type=number(positive=True), metavar="SIGMA",
                     help="std of the Gaussian noise on the observed pixels, on a 0-1 intensity scale")
    cmd.add_argument("--latent-weight", type=number(), default=1.0,
                     help="weight of the standard normal prior on the code, |z|^2 / 2 (0: none; default 1)")
    cmd.add_argument("--out", required=True, help="output .npz: images (restored) and codes")
    cmd.add_argument("--png", help="also write observed and restored images side by side to this PNG")
    cmd.set_defaults(func=_cmd_restore)
