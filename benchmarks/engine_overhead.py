"""What the engine costs: genframe's training steps against hand-written PyTorch loops, same networks.

Both sides build the very same modules (the built-in DCGAN generator/critic and GLO code table),
train on the same device-resident data with the same optimisers, and are timed over the same
number of steps after a warm-up. genframe's time is read from the run's own log (the wall clock
between two logging points), so set-up and evaluation are excluded on both sides.

    python benchmarks/engine_overhead.py [--device cuda] [--steps 200] [--out benchmarks/results/engine_overhead.json]

Prints one line per procedure with steps/s of each side and their ratio (genframe / hand-written;
1.0 means no overhead) and writes the figures as JSON. genframe runs twice: with the spec's plain
settings (fp32, eager: the framework's own cost) and with its fast settings (``cuda_graphs: true``
and fused Adam: one graph launch per step), both against the same hand-written eager loop.
"""

from __future__ import annotations

import argparse
import time

import torch
from _common import built, environment, genframe_log, load_images, sync, write_json
from genframe_plugins.latents import LatentCodes
from genframe_plugins.networks import DCGANCritic, DCGANGenerator

from genframe.engine import resolve_device
from genframe.images import to_float

BATCH = 64
DATA = {"type": "digits", "image_size": 16}


def hand_written_glo(images: torch.Tensor, device: torch.device, steps: int, warmup: int) -> float:
    """Steps per second of a plain GLO loop: codes + generator, squared error, Adam on both."""
    codes, generator = built(images, device, LatentCodes(dim=16, init="random"),
                              DCGANGenerator(latent_dim=16, width=32))
    opt_g = torch.optim.Adam(generator.parameters(), lr=1e-3, betas=(0.5, 0.999))
    opt_z = torch.optim.Adam(codes.parameters(), lr=1e-2, betas=(0.5, 0.999))
    n = images.shape[0]
    per_epoch = n // BATCH
    perm = torch.randperm(n, device=device)
    for step in range(warmup + steps):
        if step == warmup:
            sync(device)
            start = time.perf_counter()
        if step % per_epoch == 0:
            perm = torch.randperm(n, device=device)
        idx = perm[(step % per_epoch) * BATCH:(step % per_epoch + 1) * BATCH]
        x = to_float(images[idx])
        loss = (generator(codes.codes[idx]) - x).square().flatten(1).sum(1).mean()
        opt_g.zero_grad(set_to_none=True)
        opt_z.zero_grad(set_to_none=True)
        loss.backward()
        opt_g.step()
        opt_z.step()
        with torch.no_grad():
            codes.codes.copy_(torch.nn.functional.normalize(codes.codes, dim=1))
    sync(device)
    return steps / (time.perf_counter() - start)


def hand_written_wgan_gp(images: torch.Tensor, device: torch.device, steps: int, warmup: int) -> float:
    """Generator steps per second of a plain WGAN-GP loop (n_critic 5, lambda 10, Adam(0, 0.9))."""
    g, d = built(images, device, DCGANGenerator(latent_dim=64, width=32), DCGANCritic(width=32))
    opt_g = torch.optim.Adam(g.parameters(), lr=1e-4, betas=(0.0, 0.9))
    opt_d = torch.optim.Adam(d.parameters(), lr=1e-4, betas=(0.0, 0.9))
    n = images.shape[0]
    for step in range(warmup + steps):
        if step == warmup:
            sync(device)
            start = time.perf_counter()
        for _ in range(5):
            real = to_float(images[torch.randint(n, (BATCH,), device=device)])
            with torch.no_grad():
                fake = g(torch.randn(BATCH, 64, device=device))
            loss = d(fake).mean() - d(real).mean()
            eps = torch.rand(BATCH, 1, 1, 1, device=device)
            x = (eps * real + (1 - eps) * fake).requires_grad_(True)
            (grad,) = torch.autograd.grad(d(x).sum(), x, create_graph=True)
            loss = loss + 10.0 * (grad.flatten(1).norm(dim=1) - 1).square().mean()
            opt_d.zero_grad(set_to_none=True)
            loss.backward()
            opt_d.step()
        d.requires_grad_(False)
        g_loss = -d(g(torch.randn(BATCH, 64, device=device))).mean()
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        d.requires_grad_(True)
    sync(device)
    return steps / (time.perf_counter() - start)


def _spec(kind: str, steps: int, warmup: int, device: str) -> dict:
    base = {"name": f"overhead-{kind}", "seed": 0, "device": device, "data": DATA,
            "log_every": warmup, "checkpoint_every": 10**9, "evaluation": {"n_samples": 4}}
    if kind == "glo":
        per_epoch = 1797 // BATCH
        epochs = -(-(warmup + steps) // per_epoch)
        return {**base, "components": {
                    "codes": {"type": "latent_codes", "dim": 16, "init": "random"},
                    "generator": {"type": "dcgan_generator", "latent_dim": 16, "width": 32},
                    "noise": {"type": "gaussian", "dim": 16}},
                "stages": [{"name": "glo", "sample": False, "trainer": {
                    "type": "autoencoding", "encoder": "codes", "generator": "generator", "epochs": epochs,
                    "batch_size": BATCH}}],
                "sampler": ["noise", "generator"]}
    return {**base, "components": {
                "prior": {"type": "gaussian", "dim": 64},
                "generator": {"type": "dcgan_generator", "latent_dim": 64, "width": 32},
                "critic": {"type": "dcgan_critic", "width": 32}},
            "stages": [{"name": "gan", "sample": False, "trainer": {
                "type": "adversarial", "constraints": [{"type": "gradient_penalty", "weight": 10.0}],
                "n_critic": 5, "batch_size": BATCH, "steps": warmup + steps}}],
            "sampler": ["prior", "generator"]}


#: The optimisers of the two specs (their trainers' defaults, the hand-written loops' settings), fused.
FUSED_ADAM = {
    "glo": {"optimizer": {"type": "adam", "lr": 1e-3, "betas": [0.5, 0.999], "fused": True},
            "encoder_optimizer": {"type": "adam", "lr": 1e-2, "betas": [0.5, 0.999], "fused": True}},
    "wgan_gp": {"optimizer": {"type": "adam", "lr": 1e-4, "betas": [0.0, 0.9], "fused": True}},
}


def fast(kind: str, spec: dict) -> dict:
    """``spec`` with genframe's fast settings: whole steps replayed from a CUDA graph, fused Adam."""
    stage = spec["stages"][0]
    return {**spec, "cuda_graphs": True,
            "stages": [{**stage, "trainer": {**stage["trainer"], **FUSED_ADAM[kind]}}]}


def genframe_rate(kind: str, steps: int, warmup: int, device: str, fast_settings: bool = False) -> float:
    """Steps per second of genframe between its first logging point (after warm-up) and ``steps`` later."""
    spec = _spec(kind, steps, warmup, device)
    log = genframe_log(fast(kind, spec) if fast_settings else spec, device)
    first = next(r for r in log if r["step"] == warmup)
    last = next(r for r in log if r["step"] >= warmup + steps)
    return (last["step"] - first["step"]) / (last["time"] - first["time"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--out", default="benchmarks/results/engine_overhead.json")
    args = parser.parse_args()
    device = resolve_device(args.device)
    torch.manual_seed(0)
    images = load_images(DATA, device)
    results = []
    for kind, by_hand in (("glo", hand_written_glo), ("wgan_gp", hand_written_wgan_gp)):
        # The log records every `warmup` steps; round the timed span to whole logging intervals.
        steps = max(args.warmup, args.steps // args.warmup * args.warmup)
        reference = by_hand(images, device, steps, args.warmup)
        ours = genframe_rate(kind, steps, args.warmup, str(device))
        quick = genframe_rate(kind, steps, args.warmup, str(device), fast_settings=True)
        results.append({"procedure": kind, "steps": steps, "hand_written_steps_per_s": reference,
                        "genframe_steps_per_s": ours, "ratio": ours / reference,
                        "genframe_fast_steps_per_s": quick, "fast_ratio": quick / reference})
        print(f"{kind:8s} hand-written {reference:8.2f} steps/s   genframe {ours:8.2f} steps/s "
              f"(ratio {ours / reference:.3f})   fast {quick:8.2f} steps/s (ratio {quick / reference:.2f})")
    write_json(args.out, {**environment(device), "batch": BATCH, "results": results})


if __name__ == "__main__":
    main()
