"""Why GLANN's latent stage wins or loses: the mapper stage switched one setting at a time, over seeds.

For each seed, ``specs/glann.yaml`` is trained once (GLO, then the IMLE mapper) on MNIST's 10,000
test images; every mapper variant then starts from that run's finished GLO stage (``--reuse``), so
the variants differ in the mapper stage alone and cost seconds, not the GLO stage's minutes. Each
run is read by the digit judge (``digit_judge.py``) at the same n, beside:

- the same GLO generator decoding its own codes (reconstructions: how good GLANN could get),
- the same GLO generator fed by a Gaussian fitted to its codes (the GLANN paper's baseline),
- the real-vs-real floor.

``--glo-variants`` also trains whole runs whose GLO stage differs (code initialisation, loss,
padding to 32 px, fresh optimisers each epoch, codes jittered while decoded), one seed each unless
``--glo-seeds`` says more, and judges them with their own reconstructions and snapped samples;
``--glo-scale`` shortens them (epochs and schedule together) to fit a CPU's time.

    python benchmarks/glann_ablation.py --seeds 0,1,2 --out runs/glann-ablation
    python benchmarks/glann_ablation.py --seeds 0 --base 0=runs/glann-s0 --variants shipped,pool_batch

Results (every judge figure with its n, mean and spread over seeds) go to ``OUT/ablation.json``,
and a Markdown table to stdout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch
from _common import shipped_spec, stage_seconds
from digit_judge import Judge, data_root

from genframe import GenframeError, nearest_neighbours
from genframe.api import sample, train
from genframe.trained.loading import load_trained
from genframe.ops.images import to_float, to_uint8
from genframe_plugins.networks.priors import FittedGaussian

REPO = Path(__file__).resolve().parent.parent
SPEC = str(REPO / "specs" / "glann.yaml")

#: The mapper stage as specs/glann.yaml had it before this ablation (the official code's mapper, 128-128,
#: for its 50 epochs with one Adam): every variant in ``_CHANGES`` switches one thing, or a few, from there.
PREVIOUS = ["components.mapper.hidden=[128,128]", "stages.1.trainer.epochs=50",
            "stages.1.trainer.restart_optimizer=false"]
_CHANGES: dict[str, tuple[str, list[str]]] = {
    "previous": ("the mapper stage before this ablation: 128-128, 50 epochs, one Adam", []),
    "pool_batch": ("pool mapped with batch statistics (train mode, chunks of 128)",
                   ["stages.1.trainer.pool_statistics=batch"]),
    "restart_adam": ("a fresh Adam every epoch", ["stages.1.trainer.restart_optimizer=true"]),
    "no_output_bias": ("no bias in the mapper's last layer", ["components.mapper.output_bias=false"]),
    "official_imle": ("the official IMLE stage: batch-statistics pool, fresh Adam, no output bias",
                      ["stages.1.trainer.pool_statistics=batch", "stages.1.trainer.restart_optimizer=true",
                       "components.mapper.output_bias=false"]),
    "factor_1": ("pool of 1 x N", ["stages.1.trainer.sample_factor=1"]),
    "factor_5": ("pool of 5 x N", ["stages.1.trainer.sample_factor=5"]),
    "factor_10": ("pool of 10 x N", ["stages.1.trainer.sample_factor=10"]),
    "wide_512": ("mapper 512-512", ["components.mapper.hidden=[512,512]"]),
    "noise_64": ("mapper input noise of 64 dimensions", ["components.noise.dim=64", "components.mapper.in_dim=64"]),
    "epochs_200": ("200 mapper epochs", ["stages.1.trainer.epochs=200"]),
    "epochs_500": ("500 mapper epochs", ["stages.1.trainer.epochs=500"]),
    "epochs_200_restart": ("200 mapper epochs and a fresh Adam every epoch",
                           ["stages.1.trainer.epochs=200", "stages.1.trainer.restart_optimizer=true"]),
}


def _hidden(*widths: int) -> list[str]:
    return [f"components.mapper.hidden=[{','.join(map(str, widths))}]"]


#: Mapper-stage variants: name -> (what changes, overrides of specs/glann.yaml).
MAPPER_VARIANTS: dict[str, tuple[str, list[str]]] = {
    "shipped": ("specs/glann.yaml as shipped: mapper 4 x 512, 200 epochs, a fresh Adam every epoch, batch-norm "
                "statistics measured on fresh noise after the last step", []),
    "mapper_128x2": ("the official code's mapper, 128-128 (shipped before the capacity ablation)", _hidden(128, 128)),
    "mapper_512x2": ("mapper 512-512", _hidden(512, 512)),
    "mapper_512x3": ("mapper 3 x 512", _hidden(512, 512, 512)),
    "mapper_512x6": ("mapper 6 x 512", _hidden(*[512] * 6)),
    "mapper_1024x4": ("mapper 4 x 1024", _hidden(*[1024] * 4)),
    "uncalibrated": ("batch-norm statistics of the mapper's last training batches, not re-measured on the prior",
                     ["stages.1.trainer.calibrate_statistics=false"]),
    "pool_prior": ("the pool mapped with statistics measured on the pool itself",
                   ["stages.1.trainer.pool_statistics=prior"]),
    "pool_5x": ("pool of 5 x N", ["stages.1.trainer.sample_factor=5"]),
    "epochs_400": ("400 mapper epochs, the learning rate halved every 100",
                   ["stages.1.trainer.epochs=400", "stages.1.trainer.optimizer.schedule.every_epochs=100"]),
    "distinct_pairs": ("no two codes paired with the same noise sample (each takes its nearest sample that no "
                       "closer code has taken)", ["stages.1.trainer.pairing=distinct"]),
    **{f"input_noise_{std}": (f"Gaussian noise of std {std} added to the matched noise at each step",
                              [f"stages.1.trainer.noise={std}"]) for std in (0.3, 1.0)},
    "staleness_5": ("the pairing (and with it the fresh Adam) renewed every 5 epochs, not every epoch",
                    ["stages.1.trainer.staleness=5"]),
    "pool_1x": ("pool of 1 x N", ["stages.1.trainer.sample_factor=1"]),
    **{f"noise_{dim}x": (f"mapper input noise of {dim} dimensions",
                         [f"components.noise.dim={dim}", f"components.mapper.in_dim={dim}"]) for dim in (8, 16)},
    **{name: (text, [*PREVIOUS, *overrides]) for name, (text, overrides) in _CHANGES.items()},
}
#: Variants that change the GLO stage, so the whole run is trained again.
GLO_VARIANTS: dict[str, tuple[str, list[str]]] = {
    "glo_random_init": ("codes initialised at random, not by PCA", ["components.codes.init=random"]),
    "glo_l1": ("pixel L1 loss (the official code's, with force_l2 off VGG)", ["stages.0.trainer.loss.type=l1"]),
    "glo_pad32": ("images padded to 32 px", ["data.image_size=32", "data.resize=pad"]),
    "glo_restart_adam": ("fresh Adams every GLO epoch", ["stages.0.trainer.restart_optimizer=true"]),
    **{f"glo_code_noise_{std:g}": (f"codes jittered by N(0, {std:g}^2) per dimension (then projected) before GLO "
                                   f"training decodes them", [f"components.codes.noise={std:g}"])
       for std in (0.02, 0.03, 0.05, 0.1)},
}


def judged(judge: Judge, images: torch.Tensor) -> dict:
    return judge.relative(judge.score(unpadded(images)))


def unpadded(images: torch.Tensor, size: int = 28) -> torch.Tensor:
    """MNIST's digits are 28 px, so larger samples here come from a run that padded them (``glo_pad32``): the
    judge gets the centre back, as the official code pads only for its loss, rather than a shrunken digit."""
    top, left = (images.shape[-2] - size) // 2, (images.shape[-1] - size) // 2
    return images[..., top:top + size, left:left + size] if top > 0 or left > 0 else images


def decoded(decode, latents: torch.Tensor) -> torch.Tensor:
    """``decode`` (a generator, or mapper then generator) applied in chunks, as uint8 images on the host."""
    return to_uint8(torch.cat([decode(part) for part in latents.split(500)])).cpu()


def reconstructed_rows(num_codes: int, n: int, seed: int) -> torch.Tensor:
    """The codes whose reconstructions are judged: the same ``n`` for a run and its sharpened generator."""
    return torch.randperm(num_codes, generator=torch.Generator().manual_seed(seed))[:n]


def glo_rows(judge: Judge, run_url: str, seed: int) -> dict[str, dict]:
    """The GLO generator on its own codes, and on a Gaussian fitted to them (no mapper)."""
    system, device = load_trained(run_url)
    codes = system.components["codes"].codes.detach()
    generator = system.components["generator"]
    generator.eval()
    with torch.no_grad():
        reconstructions = decoded(generator, codes[reconstructed_rows(len(codes), judge.n, seed)])
        gaussian = FittedGaussian(dim=codes.shape[1]).to(device)
        gaussian.fit(codes)
        z = gaussian.sample(judge.n, device=device, generator=torch.Generator(device).manual_seed(seed))
        fitted = decoded(generator, z)
    return {"glo_reconstructions": judged(judge, reconstructions), "glo_fitted_gaussian": judged(judge, fitted)}


def snapped_samples(run_url: str, n: int, seed: int) -> tuple[torch.Tensor, dict]:
    """The run's samples with each mapper output replaced by its nearest code (by cosine, as the
    generator normalises its input), and how far the outputs are from the codes.

    Judged beside the samples themselves and the reconstructions of random codes, this splits the
    mapper's gap in two: which codes it reaches (snapped vs. random codes) and how far between
    codes it lands (samples vs. snapped). The geometry also says how many codes share their nearest
    sample in a training-like 2 x N pool, and whether outputs far from codes come from noise of
    unusual norm."""
    system, device = load_trained(run_url)
    noise, mapper, generator = (system.components[name] for name in system.sampler)
    codes = torch.nn.functional.normalize(system.components["codes"].codes.detach(), dim=1)
    mapper.eval()
    generator.eval()
    random = torch.Generator(device).manual_seed(seed)
    with torch.no_grad():
        z = noise.sample(n, device=device, generator=random)
        outputs = mapper(z)
        similarity = torch.nn.functional.normalize(outputs, dim=1) @ codes.T
        best, nearest = similarity.max(dim=1)
        between = codes @ codes.T
        between.fill_diagonal_(-2)
        images = decoded(generator, codes[nearest])
        # a training-like pool of 2 x N: how many codes share their nearest sample with another code
        pool_nearest = nearest_neighbours(codes, mapper(noise.sample(2 * len(codes), device=device,
                                                                     generator=random)))[0]
        _, shares = pool_nearest.unique(return_counts=True)
    return images, {"output_norm": round(float(outputs.norm(dim=1).mean()), 3),
                    "cosine_to_nearest_code": round(float(best.mean()), 3),
                    "code_cosine_to_nearest_other_code": round(float(between.max(dim=1).values.mean()), 3),
                    "distinct_codes_reached": int(nearest.unique().numel()),
                    "noise_norm_cosine_correlation": round(float(torch.corrcoef(torch.stack([z.norm(dim=1),
                                                                                             best]))[0, 1]), 3),
                    "codes_sharing_nearest_pool_sample": int(shares[shares > 1].sum())}


def batch_statistics_samples(run_url: str, n: int, seed: int, batch: int = 64) -> torch.Tensor:
    """Samples drawn as the official code draws them: the mapper in train mode, in batches of ``batch``."""
    system, device = load_trained(run_url)
    noise, mapper, generator = (system.components[name] for name in system.sampler)
    mapper.train()
    generator.eval()
    random = torch.Generator(device).manual_seed(seed)
    with torch.no_grad():
        out = [generator(mapper(noise.sample(min(batch, n - i), device=device, generator=random)))
               for i in range(0, n, batch)]
    return to_uint8(torch.cat(out)).cpu()


def sharpened_rows(judge: Judge, run_url: str, seed: int, epochs: int) -> dict[str, dict]:
    """The run's generator fine-tuned on its exact codes, frozen, and judged with the run's mapper unchanged.

    For runs whose GLO stage jittered the codes: the jitter arranges the codes so that the mapper's
    outputs between them decode well, at the cost of blurred reconstructions; fine-tuning on the
    exact codes (the run's GLO loss, Adam 1e-3 halved every quarter of ``epochs``, batch 128) asks
    whether the sharpness comes back without losing that arrangement. The mapper stays valid as the
    codes it was fitted to do not move. A loop here, because the autoencoding trainer always updates the
    codes it decodes."""
    system, device = load_trained(run_url)
    images, _ = system.data.load()
    loss = system.stages[0].trainer.loss
    noise, mapper, generator = (system.components[name] for name in system.sampler)
    codes = system.components["codes"].codes.detach()
    optimiser = torch.optim.Adam(generator.parameters(), lr=1e-3, betas=(0.5, 0.999))
    schedule = torch.optim.lr_scheduler.StepLR(optimiser, max(1, epochs // 4), gamma=0.5)
    random = torch.Generator().manual_seed(seed)
    generator.train()
    for _ in range(epochs):
        for rows in torch.randperm(len(codes), generator=random).split(128):
            optimiser.zero_grad()
            loss(generator(codes[rows]), to_float(images[rows].to(device))).backward()
            optimiser.step()
        schedule.step()
    mapper.eval()
    generator.eval()
    with torch.no_grad():
        z = noise.sample(judge.n, device=device, generator=torch.Generator(device).manual_seed(seed))
        samples = decoded(lambda part: generator(mapper(part)), z)
        reconstructions = decoded(generator, codes[reconstructed_rows(len(codes), judge.n, seed)])
    return {"sharpened": judged(judge, samples), "sharpened_glo_reconstructions": judged(judge, reconstructions)}


def truncated_samples(run_url: str, n: int, seed: int, scale: float) -> torch.Tensor:
    """The run's samples from its noise scaled by ``scale`` (the truncation trick): do poor samples come from
    the prior's tails?"""
    system, device = load_trained(run_url)
    noise, mapper, generator = (system.components[name] for name in system.sampler)
    mapper.eval()
    generator.eval()
    with torch.no_grad():
        z = noise.sample(n, device=device, generator=torch.Generator(device).manual_seed(seed)) * scale
        return decoded(lambda part: generator(mapper(part)), z)


def mapper_run(base: str, url: str, overrides: list[str]) -> str:
    """The run of ``specs/glann.yaml`` with ``overrides``: trained from ``base``'s GLO stage into ``url``
    (unless already there), or ``base`` itself when it is that very run."""
    if (Path(url) / "spec.yaml").exists():
        return url
    try:
        train(SPEC, overrides=overrides, out=url, reuse=base)
    except GenframeError as exc:
        if "nothing is left to train" not in str(exc):
            raise
        return base
    return url


def summarise(per_seed: dict[str, dict[int, dict]]) -> dict[str, dict]:
    out = {}
    for name, by_seed in per_seed.items():
        values = list(by_seed.values())
        summary = {"seeds": sorted(by_seed), "n": values[0]["n"]}
        for key in ("fd", "is", "classes", "fd_over_floor", "is_over_real"):
            numbers = [v[key] for v in values]
            summary[key] = round(statistics.mean(numbers), 3)
            summary[f"{key}_min"], summary[f"{key}_max"] = min(numbers), max(numbers)
        out[name] = summary
    return out


def markdown(summary: dict[str, dict], descriptions: dict[str, str]) -> str:
    lines = ["| variant | what changes | seeds | n | FD (min-max) | FD / floor | classifier-IS | IS / real | classes |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, s in summary.items():
        lines.append(f"| {name} | {descriptions.get(name, '')} | {len(s['seeds'])} | {s['n']} | "
                     f"{s['fd']:.2f} ({s['fd_min']:.2f}-{s['fd_max']:.2f}) | {s['fd_over_floor']:.2f} | "
                     f"{s['is']:.2f} | {s['is_over_real']:.2f} | {s['classes']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", default=str(REPO / "runs" / "glann-ablation"))
    parser.add_argument("--variants", default="shipped,pool_running,pool_batch,restart_adam,no_output_bias,"
                        "official_imle,factor_5,factor_10,wide_512,epochs_100",
                        help="mapper variants, comma-separated: " + ", ".join(MAPPER_VARIANTS))
    parser.add_argument("--glo-variants", default="", help="GLO variants: " + ", ".join(GLO_VARIANTS))
    parser.add_argument("--glo-seeds", default="0")
    parser.add_argument("--sharpen", type=int, default=0, metavar="EPOCHS",
                        help="also fine-tune each GLO variant's generator on its exact codes for EPOCHS and judge it")
    parser.add_argument("--glo-scale", type=float, default=1.0,
                        help="multiply the GLO variants' epochs and schedule period (the base run's too "
                             "for those seeds' reference rows)")
    parser.add_argument("--base", action="append", default=[], metavar="SEED=RUN",
                        help="an existing full run of specs/glann.yaml with that seed (skips training it)")
    parser.add_argument("--judge-only", action="store_true",
                        help="train nothing: judge the variants whose runs are already under --out")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--truncation", default="", metavar="S,S",
                        help="also judge the shipped variant with its noise scaled by each S (e.g. 0.9,0.8)")
    parser.add_argument("--set", dest="extra", action="append", default=[], metavar="PATH=VALUE",
                        help="override in every run (e.g. device=cpu)")
    args = parser.parse_args()

    root = data_root() / "mnist"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    judge = Judge("mnist", args.n, log=lambda m: print(m, file=sys.stderr))
    bases = dict(item.split("=", 1) for item in args.base)
    common = [f"data.root={root}", "keep_checkpoints=10", *args.extra]
    results: dict[str, dict[int, dict]] = {}
    timings: dict[str, dict] = {}
    if (out / "ablation.json").exists():  # results accumulate over invocations; a variant judged again is replaced
        earlier = json.loads((out / "ablation.json").read_text())
        results = {name: {int(seed): row for seed, row in rows.items()} for name, rows in earlier["per_seed"].items()}
        timings = earlier.get("seconds", {})
    descriptions = {name: text for name, (text, _) in {**MAPPER_VARIANTS, **GLO_VARIANTS}.items()}
    descriptions.update(glo_reconstructions="the GLO generator on 2,000 of its own codes",
                        glo_fitted_gaussian="the GLO generator on a Gaussian fitted to its codes",
                        sample_batch_stats="the base run (the spec as shipped when it was trained), sampled with "
                                           "batch statistics (batches of 64)",
                        pool_batch_sampled_bs64="pool_batch, sampled with batch statistics (batches of 64)",
                        official_imle_sampled_bs64="official_imle, sampled as the official code samples "
                                                   "(batch statistics, batches of 64)")

    def record(name: str, seed: int, row: dict) -> None:
        results.setdefault(name, {})[seed] = row
        print(f"seed {seed} {name}: {json.dumps(row)}", flush=True)
        (out / "ablation.json").write_text(json.dumps({
            "protocol": judge.protocol(), "per_seed": results, "summary": summarise(results),
            "descriptions": descriptions, "seconds": timings, "torch": torch.__version__,
            "device": "cuda" if torch.cuda.is_available() else "cpu"}, indent=1) + "\n")

    for seed in [int(s) for s in args.seeds.split(",")]:
        folder = out / f"seed-{seed}"
        base = bases.get(str(seed))
        if base is None and args.judge_only:
            continue
        if base is None:
            base = str(folder / "base")
            if not (Path(base) / "spec.yaml").exists():
                train(SPEC, overrides=[*common, f"seed={seed}"], out=base)
        timings[f"base-{seed}"] = stage_seconds(base)
        for name, row in glo_rows(judge, base, seed).items():
            record(name, seed, row)
        record("sample_batch_stats", seed, judged(judge, batch_statistics_samples(base, args.n, seed)))
        for name in args.variants.split(","):
            _, overrides = MAPPER_VARIANTS[name]
            if args.judge_only and not (folder / name / "spec.yaml").exists() and name != "previous":
                continue
            url = mapper_run(base, str(folder / name), [*common, f"seed={seed}", *overrides])
            if url != base and f"{name}-{seed}" not in timings:
                timings[f"{name}-{seed}"] = {"mapper": stage_seconds(url)["mapper"]}
            images, _ = sample(url, args.n, seed=seed)
            record(name, seed, judged(judge, images))
            # where its gap to the reconstructions comes from
            images, geometry = snapped_samples(url, args.n, seed)
            descriptions[f"{name}_snapped"] = f"{name}, each mapper output replaced by its nearest code (cosine)"
            record(f"{name}_snapped", seed, {**judged(judge, images), **geometry})
            if name == "shipped":
                for scale in [float(s) for s in args.truncation.split(",") if s]:
                    descriptions[f"shipped_truncated_{scale:g}"] = f"shipped, sampled from its noise x {scale:g}"
                    record(f"shipped_truncated_{scale:g}", seed,
                           judged(judge, truncated_samples(url, args.n, seed, scale)))
            if "stages.1.trainer.pool_statistics=batch" in overrides:  # sampled as the pool was mapped
                record(f"{name}_sampled_bs64", seed, judged(judge, batch_statistics_samples(url, args.n, seed)))
    for seed in [int(s) for s in args.glo_seeds.split(",")] if args.glo_variants else []:
        scaled = scale_glo(args.glo_scale)
        # at full length the shipped rows of --seeds are the reference; shortened runs train their own
        for name in [*(["glo_scaled_base"] if scaled else []), *args.glo_variants.split(",")]:
            overrides = [] if name == "glo_scaled_base" else GLO_VARIANTS[name][1]
            url = str(out / f"seed-{seed}" / name)
            if not (Path(url) / "spec.yaml").exists():
                train(SPEC, overrides=[*common, f"seed={seed}", *scaled, *overrides], out=url)
            timings[f"{name}-{seed}"] = stage_seconds(url)
            images, _ = sample(url, args.n, seed=seed)
            record(name, seed, judged(judge, images))
            # how far its generator is from the data, and how far its mapper is from its generator
            for part, row in glo_rows(judge, url, seed).items():
                descriptions[f"{name}_{part}"] = f"{name}: {descriptions[part]}"
                record(f"{name}_{part}", seed, row)
            images, geometry = snapped_samples(url, args.n, seed)
            descriptions[f"{name}_snapped"] = f"{name}, each mapper output replaced by its nearest code (cosine)"
            record(f"{name}_snapped", seed, {**judged(judge, images), **geometry})
            if args.sharpen:
                for part, row in sharpened_rows(judge, url, seed, args.sharpen).items():
                    descriptions[f"{name}_{part}"] = (f"{name}, its generator fine-tuned {args.sharpen} epochs on the "
                                                      f"exact codes (frozen): " + ("samples (mapper unchanged)"
                                                      if part == "sharpened" else "reconstructions"))
                    record(f"{name}_{part}", seed, row)
        descriptions["glo_scaled_base"] = f"shipped, GLO epochs and schedule x{args.glo_scale:g} (GLO variants' base)"
    print(f"judge: {judge.description}; n = {judge.n}; floor {judge.floor}")
    print(markdown(summarise(results), descriptions))


def scale_glo(factor: float) -> list[str]:
    """Overrides that shorten the GLO stage by ``factor``: epochs and the step schedule's period alike."""
    if factor == 1.0:
        return []
    glo = shipped_spec("glann")["stages"][0]["trainer"]
    out = [f"stages.0.trainer.epochs={max(1, round(glo['epochs'] * factor))}"]
    for key in ("optimizer", "encoder_optimizer"):
        period = glo[key]["schedule"]["every_epochs"]
        out.append(f"stages.0.trainer.{key}.schedule.every_epochs={max(1, round(period * factor))}")
    return out


if __name__ == "__main__":
    main()
