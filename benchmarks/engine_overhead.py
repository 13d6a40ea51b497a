"""What the engine costs: genframe's training steps against hand-written PyTorch loops, same networks.

Both sides build the very same modules (the built-in DCGAN generator/critic and GLO code table),
train on the same device-resident data with the same optimisers, and are timed over the same
number of steps after a warm-up. genframe's time is read from the run's own log (the wall clock
between two logging points), so set-up and evaluation are excluded on both sides.

    python benchmarks/engine_overhead.py [--device cuda] [--size shipped|small] [--steps 200]

WGAN-GP is ``specs/wgan_gp.yaml`` as shipped (``--size shipped``, the default on CUDA: DCGAN
networks of width 64, latent 128, batch 64, n_critic 5, lambda 10, Adam(1e-4, 0, 0.9), MNIST at
28 px) or, for a CPU, the same spec with width 32, latent 64, on scikit-learn's digits at 16 px
(``--size small``, the default elsewhere). GLO is a small code table + generator on the digits
(glann.yaml's full GLO epochs are timed by ``training_epochs.py``): the most host-bound step, where
any cost of the engine shows most.

Prints one line per procedure with steps/s of each side and their ratio (genframe / hand-written;
1.0 means no overhead) and writes the figures as JSON. genframe runs twice: with the spec's plain
settings (fp32, eager: the framework's own cost) and with its fast settings (``cuda_graphs: true``
and fused Adam: one graph launch per step), both against the same hand-written eager loop.
"""

from __future__ import annotations

import argparse
import time

import torch
from _common import (
    DEFAULT_DATA_ROOT,
    built,
    configured,
    data_entry,
    environment,
    fast_settings,
    genframe_log,
    load_images,
    shipped_spec,
    sync,
    write_json,
)
from genframe_plugins.networks.latents import LatentCodes
from genframe_plugins.networks.dcgan import DCGANCritic, DCGANGenerator

from genframe.build.prepare import resolve_device
from genframe.ops.images import to_float

BATCH = 64  # GLO's batch (the WGAN-GP spec has its own, also 64)
SMALL_DATA = {"type": "digits", "image_size": 16}
GLO_ADAM = {"generator": {"type": "adam", "lr": 1e-3, "betas": [0.5, 0.999]},
            "codes": {"type": "adam", "lr": 1e-2, "betas": [0.5, 0.999]}}


def hand_written_glo(images: torch.Tensor, device: torch.device, steps: int, warmup: int) -> float:
    """Steps per second of a plain GLO loop: codes + generator, squared error, Adam on both."""
    codes, generator = built(images, device, LatentCodes(dim=16, init="random"),
                              DCGANGenerator(latent_dim=16, width=32))
    opt_g = adam(generator.parameters(), GLO_ADAM["generator"])
    opt_z = adam(codes.parameters(), GLO_ADAM["codes"])
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


def hand_written_wgan_gp(images: torch.Tensor, device: torch.device, steps: int, warmup: int,
                         spec: dict) -> float:
    """Generator steps per second of a plain WGAN-GP loop with ``spec``'s networks, batch, n_critic,
    penalty weight and Adam."""
    components, trainer = spec["components"], spec["stages"][0]["trainer"]
    g, d = built(images, device, configured(DCGANGenerator, components["generator"]),
                 configured(DCGANCritic, components["critic"]))
    opt_g, opt_d = adam(g.parameters(), trainer["optimizer"]), adam(d.parameters(), trainer["optimizer"])
    latent, batch, n_critic = components["prior"]["dim"], trainer["batch_size"], trainer["n_critic"]
    (penalty,) = [c["weight"] for c in trainer["constraints"] if c["type"] == "gradient_penalty"]
    n = images.shape[0]
    for step in range(warmup + steps):
        if step == warmup:
            sync(device)
            start = time.perf_counter()
        for _ in range(n_critic):
            real = to_float(images[torch.randint(n, (batch,), device=device)])
            with torch.no_grad():
                fake = g(torch.randn(batch, latent, device=device))
            loss = d(fake).mean() - d(real).mean()
            eps = torch.rand(batch, 1, 1, 1, device=device)
            x = (eps * real + (1 - eps) * fake).requires_grad_(True)
            (grad,) = torch.autograd.grad(d(x).sum(), x, create_graph=True)
            loss = loss + penalty * (grad.flatten(1).norm(dim=1) - 1).square().mean()
            opt_d.zero_grad(set_to_none=True)
            loss.backward()
            opt_d.step()
        d.requires_grad_(False)
        g_loss = -d(g(torch.randn(batch, latent, device=device))).mean()
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        d.requires_grad_(True)
    sync(device)
    return steps / (time.perf_counter() - start)


def adam(params, settings: dict) -> torch.optim.Adam:
    """torch's Adam with a spec entry's learning rate and betas."""
    return torch.optim.Adam(params, lr=settings["lr"], betas=tuple(settings["betas"]))


def wgan_gp_setting(size: str, data_root: str) -> tuple[dict, dict]:
    """(data entry, spec) of the WGAN-GP timing: ``specs/wgan_gp.yaml`` as shipped, or shrunk for a CPU."""
    spec = shipped_spec("wgan_gp")
    if size == "small":
        components = spec["components"]
        components["prior"]["dim"] = 64
        components["generator"].update(latent_dim=64, width=32)
        components["critic"]["width"] = 32
        return SMALL_DATA, spec
    return data_entry("auto", data_root, 28, None), spec


def timing_spec(kind: str, spec: dict | None, data: dict, steps: int, warmup: int, device: str) -> dict:
    """The genframe spec timed for ``kind``: ``warmup + steps`` steps, logged every ``warmup``, no sampling."""
    base = {"name": f"overhead-{kind}", "seed": 0, "device": device, "data": data,
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
                    "batch_size": BATCH, "optimizer": GLO_ADAM["generator"],
                    "encoder_optimizer": GLO_ADAM["codes"]}}],
                "sampler": ["noise", "generator"]}
    assert spec is not None
    stage = spec["stages"][0]
    return {**spec, **base, "stages": [{**stage, "sample": False,
                                        "trainer": {**stage["trainer"], "steps": warmup + steps}}]}


def genframe_rate(spec: dict, steps: int, warmup: int, device: str) -> float:
    """Steps per second of genframe between its first logging point (after warm-up) and ``steps`` later."""
    log = genframe_log(spec, device)
    first = next(r for r in log if r["step"] == warmup)
    last = next(r for r in log if r["step"] >= warmup + steps)
    return (last["step"] - first["step"]) / (last["time"] - first["time"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--size", choices=("shipped", "small"),
                        help="WGAN-GP networks and data: specs/wgan_gp.yaml as shipped (default on CUDA) or "
                             "small (latent 64, width 32, digits at 16 px; default elsewhere)")
    parser.add_argument("--data-root", default=DEFAULT_DATA_ROOT, help="folder holding mnist/ (IDX files)")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--out", default="benchmarks/results/engine_overhead.json")
    args = parser.parse_args()
    device = resolve_device(args.device)
    size = args.size or ("shipped" if device.type == "cuda" else "small")
    wgan_data, wgan_spec = wgan_gp_setting(size, args.data_root)
    torch.manual_seed(0)
    small_images = load_images(SMALL_DATA, device)
    wgan_images = small_images if wgan_data == SMALL_DATA else load_images(wgan_data, device)
    # The log records every `warmup` steps; round the timed span to whole logging intervals.
    steps = max(args.warmup, args.steps // args.warmup * args.warmup)
    procedures = (
        ("glo", SMALL_DATA, None, lambda: hand_written_glo(small_images, device, steps, args.warmup)),
        ("wgan_gp", wgan_data, wgan_spec,
         lambda: hand_written_wgan_gp(wgan_images, device, steps, args.warmup, wgan_spec)),
    )
    results = []
    for kind, data, spec, by_hand in procedures:
        timed = timing_spec(kind, spec, data, steps, args.warmup, str(device))
        reference = by_hand()
        ours = genframe_rate(timed, steps, args.warmup, str(device))
        quick = genframe_rate(fast_settings(timed), steps, args.warmup, str(device))
        results.append({"procedure": kind, "data": data["type"], "image_size": data["image_size"], "steps": steps,
                        "hand_written_steps_per_s": reference, "genframe_steps_per_s": ours,
                        "ratio": ours / reference, "genframe_fast_steps_per_s": quick, "fast_ratio": quick / reference})
        print(f"{kind:8s} hand-written {reference:8.2f} steps/s   genframe {ours:8.2f} steps/s "
              f"(ratio {ours / reference:.3f})   fast {quick:8.2f} steps/s (ratio {quick / reference:.2f})")
    write_json(args.out, {**environment(device), "batch": BATCH, "size": size, "results": results})


if __name__ == "__main__":
    main()
