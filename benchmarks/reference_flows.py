"""Pixel diffusion (EDM) and rectified flow: genframe's shipped specs against minimal loops written from the papers.

The references are written here from Karras et al. 2022 (EDM: log-normal noise levels,
preconditioning, the loss weighted to unit variance, Algorithm 1 to sample) and Liu et al. 2023
(rectified flow: uniform times, the velocity x1 - x0, Euler's method to sample), independent of
genframe's paths, solvers and trainer. They share with genframe only the U-Net class (the same
architecture and initialisation) and the images. Both sides train the same number of steps on
the same images with the same batch size and optimiser, one thread, and each side's CPU seconds
are recorded; the digit judge then reads ``--n`` samples of each (the same seed).

Differences from the papers, on both sides: MNIST at the quick size (2,000 images, 28 px, U-Net width
16), far fewer steps; EDM's denoised estimates are clamped to [-1, 1] while sampling (genframe's
default for images; ``--no-clip`` turns it off on both sides), and sigma_data is the data's root mean
square (0.5 in the paper's CIFAR-10 runs). genframe also clamps its training noise levels to
[sigma_min, sigma_max], which the reference does not.

    python benchmarks/reference_flows.py --systems diffusion,flow_matching --seeds 0,1,2 --epochs 60 \\
        --json benchmarks/results/reference_flows_cpu.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from _common import shown
from digit_judge import Judge
from genframe_plugins.data.datasets import MNIST
from genframe_plugins.networks.unet import UNet
from quality import mnist_root, overrides

from genframe.api import sample, train
from genframe.ops.images import image_grid, png_bytes, to_uint8
from genframe.storage import RunStorage

REPO = Path(__file__).resolve().parent.parent
BATCH, LR, BETAS = 128, 2e-4, (0.9, 0.999)  # the shipped specs' optimiser and batch
UNET = {"width": 16, "multipliers": [1, 2, 2], "blocks": 2}  # the quick size of quality.py
SIGMA_MIN, SIGMA_MAX, RHO, P_MEAN, P_STD = 0.002, 80.0, 7.0, -1.2, 1.2  # Karras et al. 2022, Table 1
SOLVERS = {"diffusion": "heun", "flow_matching": "euler"}  # Algorithm 1 for EDM, Euler for rectified flow
SAMPLING_BATCH = 250


def images_of(root: Path, limit: int) -> torch.Tensor:
    """The images genframe's runs train on (its MNIST data set with the same limit), uint8."""
    images, _ = MNIST(root=str(root), limit=limit, download=False).load()
    return images


def unet(images: torch.Tensor, seed: int) -> UNet:
    torch.manual_seed(seed)
    net = UNet(**UNET)
    from genframe import BuildContext

    net.setup(BuildContext(num_examples=len(images), channels=images.shape[1], image_size=images.shape[-1],
                           device=torch.device("cpu")))
    return net


class EDMReference:
    """Karras et al. 2022: x = y + sigma n, D(x; sigma) = c_skip x + c_out F(c_in x; c_noise)."""

    def __init__(self, net: UNet, sigma_data: float):
        self.net, self.sigma_data = net, sigma_data

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor, clip: bool) -> torch.Tensor:
        sigma = sigma.reshape(-1, 1, 1, 1).expand(x.shape[0], 1, 1, 1)
        total = sigma ** 2 + self.sigma_data ** 2
        c_skip, c_out, c_in = self.sigma_data ** 2 / total, sigma * self.sigma_data / total.sqrt(), 1 / total.sqrt()
        out = c_skip * x + c_out * self.net(c_in * x, sigma.log().reshape(-1) / 4)
        return out.clamp(-1, 1) if clip else out

    def loss(self, y: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        sigma = (P_MEAN + P_STD * torch.randn(y.shape[0], generator=generator)).exp()
        noise = torch.randn(y.shape, generator=generator)
        weight = (sigma ** 2 + self.sigma_data ** 2) / (sigma * self.sigma_data) ** 2  # lambda(sigma)
        x = y + sigma.reshape(-1, 1, 1, 1) * noise
        error = (self.denoise(x, sigma, clip=False) - y).square().flatten(1).mean(1)
        return (weight * error).mean()

    @torch.no_grad()
    def sample(self, noise: torch.Tensor, steps: int, clip: bool) -> torch.Tensor:
        """Algorithm 1 (Heun, the last step Euler's) on the rho = 7 schedule of ``steps`` levels, then 0."""
        i = torch.arange(steps, dtype=torch.float64)
        first, last = SIGMA_MAX ** (1 / RHO), SIGMA_MIN ** (1 / RHO)
        sigmas = ((first + i / max(steps - 1, 1) * (last - first)) ** RHO).tolist() + [0.0]
        x = noise * sigmas[0]
        for k in range(steps):
            now, after = sigmas[k], sigmas[k + 1]
            d = (x - self.denoise(x, torch.tensor(now), clip)) / now
            x_next = x + (after - now) * d
            if after > 0:
                d_next = (x_next - self.denoise(x_next, torch.tensor(after), clip)) / after
                x_next = x + (after - now) * 0.5 * (d + d_next)
            x = x_next
        return x


class RectifiedFlowReference:
    """Liu et al. 2023: x_t = t x1 + (1 - t) x0 with x0 noise; the network regresses x1 - x0."""

    def __init__(self, net: UNet):
        self.net = net

    def loss(self, y: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        t = torch.rand(y.shape[0], generator=generator)
        noise = torch.randn(y.shape, generator=generator)
        x = t.reshape(-1, 1, 1, 1) * y + (1 - t.reshape(-1, 1, 1, 1)) * noise
        return (self.net(x, t) - (y - noise)).square().mean()

    @torch.no_grad()
    def sample(self, noise: torch.Tensor, steps: int, clip: bool) -> torch.Tensor:
        x = noise
        for k in range(steps):
            x = x + self.net(x, torch.tensor(k / steps)) / steps
        return x


def train_reference(system: str, images: torch.Tensor, steps: int, seed: int) -> tuple[object, float, list]:
    """The reference trained ``steps`` steps: (model, CPU seconds, losses every 50 steps)."""
    y = images.float() / 127.5 - 1
    net = unet(images, seed)
    model = EDMReference(net, float(y.square().mean().sqrt())) if system == "diffusion" else RectifiedFlowReference(net)
    optimiser = torch.optim.Adam(net.parameters(), lr=LR, betas=BETAS)
    generator = torch.Generator().manual_seed(seed)
    started, losses, order, position = time.process_time(), [], torch.empty(0, dtype=torch.long), 0
    for step in range(steps):
        if position + BATCH > len(order):  # a fresh permutation per epoch, the last partial batch dropped
            order, position = torch.randperm(len(y), generator=generator), 0
        batch = y[order[position:position + BATCH]]
        position += BATCH
        loss = model.loss(batch, generator)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if step % 50 == 0 or step == steps - 1:
            losses.append((step + 1, round(float(loss.detach()), 5)))
    return model, time.process_time() - started, losses


def sample_reference(model, n: int, steps: int, seed: int, clip: bool) -> torch.Tensor:
    model.net.eval()
    generator = torch.Generator().manual_seed(seed)
    chunks = [model.sample(torch.randn(min(SAMPLING_BATCH, n - k), 1, 28, 28, generator=generator), steps, clip)
              for k in range(0, n, SAMPLING_BATCH)]
    return to_uint8(torch.cat(chunks).clamp(-1, 1))


def genframe_run(system: str, root: Path, epochs: int, seed: int, steps: int, clip: bool, out: Path) -> dict:
    sets = [*overrides(system, root, True, False, []), f"stages.0.trainer.epochs={epochs}", f"seed={seed}",
            "evaluation.every=null", f"components.generator.solver={{type: {SOLVERS[system]}, steps: {steps}}}",
            f"components.generator.clip_denoised={str(clip).lower()}", "checkpoint_every=100000"]
    started = time.process_time()
    url = train(str(REPO / "specs" / f"{system}.yaml"), overrides=sets, out=str(out), device="cpu").url
    seconds = time.process_time() - started
    log = [r for r in RunStorage.open(url).read_log() if "event" not in r]
    return {"run": shown(url), "cpu_s": round(seconds, 1), "steps": log[-1]["step"], "last_loss": log[-1]["loss"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", default="diffusion,flow_matching")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=60, help="epochs of 2,000 images on both sides")
    parser.add_argument("--steps", type=int, default=8, help="solver steps when sampling (both sides)")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--no-clip", dest="clip", action="store_false", help="integrate EDM without clamping D")
    parser.add_argument("--out", default=str(REPO / "runs" / "reference-flows"))
    parser.add_argument("--json", help="write the summary here (merged with what it holds)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    root, out = mnist_root(), Path(args.out)
    judge = Judge("mnist", args.n, root=root.parent, log=lambda m: print(m, file=sys.stderr))
    images = images_of(root, 2000)
    summary = json.loads(Path(args.json).read_text()) if args.json and Path(args.json).exists() else {}
    summary.update({"command": " ".join(sys.argv), "judge": judge.protocol(), "torch": torch.__version__,
                    "unet": UNET, "batch": BATCH, "lr": LR, "clip": args.clip})
    results = summary.setdefault("results", {})
    for system in args.systems.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            key = f"{system}/seed{seed}/epochs{args.epochs}/steps{args.steps}"
            folder = out / system / f"seed{seed}-epochs{args.epochs}"
            ours = genframe_run(system, root, args.epochs, seed, args.steps, args.clip, folder / "genframe")
            drawn, _ = sample(str(folder / "genframe"), args.n, seed=seed, device="cpu")
            ours.update(judge.relative(judge.score(drawn)))
            (folder / "genframe-samples.png").write_bytes(png_bytes(image_grid(drawn[:64])))
            model, seconds, losses = train_reference(system, images, ours["steps"], seed)
            theirs = {"cpu_s": round(seconds, 1), "steps": ours["steps"], "losses": losses}
            drawn = sample_reference(model, args.n, args.steps, seed, args.clip)
            theirs.update(judge.relative(judge.score(drawn)))
            (folder / "reference-samples.png").write_bytes(png_bytes(image_grid(drawn[:64])))
            results[key] = {"genframe": ours, "reference": theirs,
                            "fd_ratio": round(ours["fd"] / theirs["fd"], 3),
                            "cpu_ratio": round(ours["cpu_s"] / theirs["cpu_s"], 3)}
            print(json.dumps({key: results[key]}), flush=True)
            if args.json:
                Path(args.json).write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
