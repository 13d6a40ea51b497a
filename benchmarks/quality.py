"""Sample quality of every family under one judge: AE, GLO, VAE, WAE-MMD, IMLE, GLANN, WGAN-GP, NS-GAN on MNIST.

Trains each shipped spec on the 10,000-image MNIST split (found through ``GENFRAME_DATA`` or
``../shared/datasets`` next to the repository), on a GPU when one is available, and writes for
each system: a sample grid, interpolation strips (between codes of real images, and between prior
samples), reconstructions of training and unseen images, and inpainting and denoising examples.
For GLANN it also samples the same GLO generator through a Gaussian fitted to its codes, the
baseline the GLANN paper improves on. ``summary.json`` holds the numbers: how the digit judge
(``digit_judge.py``: classifier-IS, class coverage, Frechet distance in its features, each with
its n, beside the real-vs-real floor) reads the samples, reconstruction and restoration PSNR, and
the Inception FID where its weights are at hand (``$GENFRAME_INCEPTION_WEIGHTS`` or ``--fid``).

    python benchmarks/quality.py                 # the specs as shipped (GPU advised)
    python benchmarks/quality.py --quick         # a small CPU version: 2,000 images, narrow nets, short runs
    python benchmarks/quality.py --systems glann --fast --set stages.0.trainer.loss.type=l1

``--fast`` trains with genframe's fast settings (whole steps replayed from CUDA graphs, fused Adam);
``--set`` changes every chosen spec (the last line is GLANN with the official code's pixel L1 loss).
Each system's training time is recorded in all and per stage (from the run's log).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
from _common import fast_overrides, shipped_spec, stage_seconds
from digit_judge import Judge, data_root

from genframe.trained import applications as app
from genframe.api import sample, train
from genframe.ops.images import image_grid, png_bytes, to_uint8
from genframe_plugins.data.datasets import MNIST
from genframe_plugins.networks.priors import FittedGaussian

REPO = Path(__file__).resolve().parent.parent
SYSTEMS = {  # name -> (spec, overrides of the --quick CPU version)
    "ae": ("autoencoder.yaml", ["stages.0.trainer.epochs=15"]),
    "glo": ("glo.yaml", ["stages.0.trainer.epochs=30"]),
    "vae": ("vae.yaml", ["stages.0.trainer.epochs=15"]),
    "wae_mmd": ("wae_mmd.yaml", ["stages.0.trainer.epochs=15"]),
    "imle": ("imle.yaml", ["stages.0.trainer.epochs=20"]),
    "glann": ("glann.yaml", ["stages.0.trainer.epochs=30", "stages.1.trainer.epochs=50"]),
    "glann_flow": ("glann_flow.yaml", ["stages.0.trainer.epochs=30", "stages.1.trainer.epochs=50"]),
    "flow_matching": ("flow_matching.yaml", ["stages.0.trainer.epochs=20", "components.generator.network.width=16",
                                             "components.generator.solver.steps=8"]),
    "diffusion": ("diffusion.yaml", ["stages.0.trainer.epochs=20", "components.generator.network.width=16",
                                     "components.generator.solver.steps=8"]),
    "wgan_gp": ("wgan_gp.yaml", ["stages.0.trainer.steps=1500", "components.critic.width=32",
                                 "evaluation.every=null", "checkpoint_every=500"]),
    "nsgan": ("nsgan.yaml", ["stages.0.trainer.steps=1500", "components.critic.width=32", "data.image_size=28",
                             "evaluation.every=null", "checkpoint_every=500"]),
}
QUICK_COMMON = ["data.limit=2000"]
QUICK_WIDTH = ["components.generator.width=32"]  # networks with a width (pixel flows narrow their U-Net instead)
#: Pixel-space flows: the latent searches of the applications integrate and differentiate every solver
#: step, too slow for this benchmark on a CPU, so they are left out for these systems.
PIXEL_FLOWS = ("flow_matching", "diffusion")
QUICK_ENCODER = ["components.encoder.width=32"]
SHOWN = 16  # images reconstructed, interpolated and restored per system


def mnist_root() -> Path:
    root = data_root() / "mnist"
    if not any(root.glob("*idx3-ubyte*")):
        sys.exit(f"MNIST IDX files not found under {root}; set GENFRAME_DATA")
    return root


def overrides(name: str, root: Path, quick: bool, fast: bool, extra: list[str]) -> list[str]:
    spec, quick_overrides = SYSTEMS[name]
    out = [f"data.root={root}", "log_every=10"]
    if quick:
        out += QUICK_COMMON + ([] if name in PIXEL_FLOWS else QUICK_WIDTH) + quick_overrides
        if name in ("ae", "vae", "wae_mmd"):
            out += QUICK_ENCODER
    if fast:
        out += fast_overrides(shipped_spec(Path(spec).stem))
    return out + extra


def held_out(all_images: torch.Tensor, training: torch.Tensor, n: int) -> torch.Tensor:
    """The first ``n`` images of the full split that the run did not train on (none when it used them all)."""
    seen = {bytes(x.numpy().tobytes()) for x in training}
    unseen = [x for x in all_images if bytes(x.numpy().tobytes()) not in seen]
    return torch.stack(unseen[:n]) if unseen else training[:0]


def write_png(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def corrupt(images: torch.Tensor, sigma: float, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images with their lower half missing, the mask, images with Gaussian noise of std sigma (0-1 scale))."""
    mask = torch.ones_like(images, dtype=torch.float32)
    mask[..., images.shape[-2] // 2:, :] = 0
    holes = (images.float() * mask).to(torch.uint8)
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed)) * sigma * 255
    noisy = (images.float() + noise).round().clamp(0, 255).to(torch.uint8)
    return holes, mask, noisy


def inception_fid(run_url: str, n: int, wanted: bool) -> dict | str:
    """genframe's FID (pytorch-fid's Inception weights) against the run's data, or why it was skipped."""
    if not (wanted or os.environ.get("GENFRAME_INCEPTION_WEIGHTS")):
        return "skipped: no Inception weights (set GENFRAME_INCEPTION_WEIGHTS or pass --fid to download them)"
    from genframe.trained.evaluate import evaluate_run

    record = evaluate_run(run_url, metrics=["fid"], n=n)
    return {"fid": record["fid"], "n": n}


def evaluate_system(name: str, run_url: str, out: Path, real: dict[str, torch.Tensor], judge: Judge,
                    search: app.Search, fid: bool) -> dict:
    trained = app.load(run_url)
    result: dict = {"run": run_url}
    samples, _ = sample(run_url, judge.n, seed=0)
    write_png(out / "samples.png", png_bytes(image_grid(samples[:64])))
    result["judge"] = judge.relative(judge.score(samples))
    result["inception_fid"] = inception_fid(run_url, judge.n, fid)
    if name in PIXEL_FLOWS:
        result["applications"] = "left out: latent search through the solver is too slow here"
        return result
    for split, images in real.items():
        if not len(images):
            continue
        rec = app.reconstruct(trained, images, search=search)
        write_png(out / f"reconstructions-{split}.png", app.pairs_png(images, rec.images))
        result[f"reconstruction_psnr_{split}"] = app.finite_mean(rec.psnr)
        strips = app.interpolate(trained, images=images, source="images", pairs=4, steps=8, search=search)
        write_png(out / f"interpolation-{split}.png", app.strips_png(strips))
    write_png(out / "interpolation-prior.png", app.strips_png(app.interpolate(trained, source="prior", pairs=4)))
    encoder = trained.encoder
    if encoder is not None and not encoder.encodes_new_images:
        write_png(out / "interpolation-codes.png", app.strips_png(app.interpolate(trained, source="codes", pairs=4)))
    target = real["unseen"] if len(real["unseen"]) else real["train"]
    holes, mask, noisy = corrupt(target, 0.3, seed=1)
    inpainted = app.restore(trained, holes, mask=mask, search=search).images
    denoised = app.restore(trained, noisy, noise=0.3, search=search).images
    write_png(out / "inpainting.png", png_bytes(image_grid(torch.cat([target, holes, inpainted]), nrow=len(target))))
    write_png(out / "denoising.png", png_bytes(image_grid(torch.cat([target, noisy, denoised]), nrow=len(target))))
    result["inpainting_psnr"] = {"holes": app.finite_mean(app.psnr(holes, target)),
                                 "restored": app.finite_mean(app.psnr(inpainted, target))}
    result["denoising_psnr"] = {"noisy": app.finite_mean(app.psnr(noisy, target)),
                                "restored": app.finite_mean(app.psnr(denoised, target))}
    if name == "glann":
        result["glo_gaussian_samples"] = glo_gaussian_baseline(trained, out, judge)
    return result


def glo_gaussian_baseline(trained: app.Trained, out: Path, judge: Judge) -> dict:
    """The GLANN paper's baseline on the very same GLO generator: a Gaussian fitted to its codes as the sampler."""
    codes = trained.system.components["codes"].codes.detach()
    gaussian = FittedGaussian(dim=codes.shape[1]).to(trained.device)
    gaussian.fit(codes)
    z = gaussian.sample(judge.n, device=trained.device, generator=torch.Generator(trained.device).manual_seed(0))
    images = to_uint8(app.decode(trained, z)).cpu()
    write_png(out / "samples-glo-gaussian.png", png_bytes(image_grid(images[:64])))
    return judge.relative(judge.score(images))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "runs" / "quality-nonadversarial"))
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated subset of " + ", ".join(SYSTEMS))
    parser.add_argument("--quick", action="store_true", help="small CPU version: 2,000 images, narrow networks, "
                                                             "fewer epochs")
    parser.add_argument("--device", help="auto (default: CUDA when available), cpu, cuda")
    parser.add_argument("--iterations", type=int, default=300, help="code-search steps for the applications")
    parser.add_argument("--fast", action="store_true", help="train with cuda_graphs and fused Adam")
    parser.add_argument("--set", dest="extra", action="append", default=[], metavar="PATH=VALUE",
                        help="override in every chosen spec (repeatable)")
    parser.add_argument("--n", type=int, default=2000, help="samples the judge reads (and its real reference)")
    parser.add_argument("--fid", action="store_true", help="also the Inception FID at the same n (downloads "
                                                           "the weights unless GENFRAME_INCEPTION_WEIGHTS is set)")
    args = parser.parse_args()

    root = mnist_root()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    everything, _ = MNIST(root=str(root)).load()
    judge = Judge("mnist", args.n, root=root.parent, log=lambda m: print(m, file=sys.stderr))
    search = app.Search(steps=args.iterations)
    summary: dict = {"quick": args.quick, "fast": args.fast, "overrides": args.extra, "device": args.device or "auto",
                     "torch": torch.__version__,
                     "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
                     "judge": judge.protocol()}
    for name in args.systems.split(","):
        spec, _ = SYSTEMS[name]
        folder = out / name
        folder.mkdir(exist_ok=True)
        run_url = str(folder / f"run-{time.strftime('%Y%m%d-%H%M%S')}")
        started = time.time()
        train(str(REPO / "specs" / spec), overrides=overrides(name, root, args.quick, args.fast, args.extra),
              out=run_url, device=args.device)
        seconds = time.time() - started
        limit = 2000 if args.quick else None
        training, _ = MNIST(root=str(root), limit=limit).load()
        real = {"train": training[:SHOWN], "unseen": held_out(everything, training, SHOWN)}
        summary[name] = {"train_seconds": round(seconds, 1), "stage_seconds": stage_seconds(run_url),
                         **evaluate_system(name, run_url, folder, real, judge, search, args.fid)}
        print(json.dumps({name: summary[name]}, indent=1), flush=True)
        (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
