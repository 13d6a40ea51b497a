"""genframe reconstruct: find the latent codes of given images by optimisation; write reconstructions and errors."""

from __future__ import annotations

import argparse
from genframe.commands._args import count, number


def add_run_arguments(cmd: argparse.ArgumentParser) -> None:
    """Arguments every command that searches a run's latent space shares."""
    cmd.add_argument("run", help="run folder")
    cmd.add_argument("--iterations", type=count(), default=300, help="Adam steps on the codes (default 300)")
    cmd.add_argument("--lr", type=number(positive=True), default=0.05, help="learning rate of the code search (default 0.05)")
    cmd.add_argument("--candidates", type=count(), default=256,
                     help="sampled codes the search starts from the best of (default 256)")
    cmd.add_argument("--seed", type=count(0), default=0)
    cmd.add_argument("--device", help="auto, cpu, cuda, cuda:N (default: the run's)")
    cmd.add_argument("--checkpoint", choices=("last", "best"), default="last")


def trained_of(args: argparse.Namespace):
    """The run of ``args.run`` rebuilt on ``--device`` with its ``--checkpoint`` weights."""
    from genframe.trained.applications import load

    return load(args.run, device=args.device, checkpoint=args.checkpoint)


def search_of(args: argparse.Namespace):
    from genframe.trained.applications import Search
    from genframe.errors import GenframeError

    try:
        return Search(steps=args.iterations, lr=args.lr, candidates=args.candidates, seed=args.seed)
    except ValueError as exc:
        raise GenframeError(f"--iterations must be >= 0, --lr > 0 and --candidates >= 1 ({exc})") from None


def _cmd_reconstruct(args: argparse.Namespace) -> int:
    from genframe.trained import applications as app

    trained = trained_of(args)
    images = app.read_images(args.images, trained)
    result = app.reconstruct(trained, images, loss=args.loss, search=search_of(args))
    app.write_file(args.out, app.npz_bytes(images=result.images.numpy(), codes=result.codes.numpy(),
                                           loss=result.loss.numpy(), psnr=result.psnr.numpy()))
    if args.png:
        app.write_file(args.png, app.pairs_png(images, result.images))
    print(f"reconstructed {images.shape[0]} images: mean {args.loss} loss {float(result.loss.mean()):.4g}, "
          f"mean PSNR {app.finite_mean(result.psnr):.2f} dB; wrote {args.out}")
    return 0


def register(sub) -> None:
    cmd = sub.add_parser("reconstruct", help="find latent codes for images by optimisation (the inverse problem)")
    add_run_arguments(cmd)
    cmd.add_argument("--images", required=True, help=".npz (key 'images') or .npy of uint8 images N x C x H x W")
    cmd.add_argument("--out", required=True,
                     help="output .npz: images (reconstructions), codes, loss and psnr (dB) per image")
    cmd.add_argument("--png", help="also write originals and reconstructions side by side to this PNG")
    cmd.add_argument("--loss", default="l2", help="reconstruction loss minimised and reported: l2, l1, lap1, vgg "
                                                  "(default l2)")
    cmd.set_defaults(func=_cmd_reconstruct)
