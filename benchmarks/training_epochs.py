"""What a training epoch costs: GLANN's two stages in genframe against hand-written PyTorch loops, same networks.

The settings are read from ``specs/glann.yaml``, so the benchmark follows the shipped spec:

- a GLO epoch: one code per image (64-d, on the unit sphere), the DCGAN generator (width 64,
  normalised input), GLO's Laplacian-pyramid L1 loss, Adam for the generator and for the codes
  with their step schedules, batch 128, over the whole data set (the last partial batch dropped);
- an IMLE mapper epoch: one nearest-neighbour refresh (2 x N Gaussian noise vectors through the
  MLP mapper, each of the N target codes paired with its nearest output) and then the epoch's
  regression steps. The targets are fixed random unit vectors (the code table's ``random``
  initialisation), the same on both sides, so that this stage is timed without training GLO first.

Both sides build the very same modules (and the same loss), train on the same device-resident
images, and run in the same process. The hand-written loops are what one writes without a
framework; their nearest-neighbour search is a chunked ``torch.cdist`` + ``argmin``, whereas
genframe's search re-ranks a shortlist exactly in float64, so a third line times the two searches
alone. genframe's epochs are read from its run log (the wall clock at logging points, one per
epoch), which leaves set-up and evaluation out. After ``--warmup`` epochs, the median of
``--repeats`` epochs is reported (pooled over ``--trials`` alternating runs of the two sides,
which evens out a change in the machine's load).

    python benchmarks/training_epochs.py [--device cuda] [--images N] [--repeats 5] [--data auto|mnist|digits] [--fast]

``--fast`` adds genframe's fast settings (``cuda_graphs: true``, fused Adam) as extra rows, against
the same hand-written epochs; they only differ from the plain rows on a CUDA device.

Prints seconds per epoch of each side and their ratio (hand-written time / genframe time: above 1
genframe is faster) and writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import copy

import torch
import torch.nn.functional as F
from _common import (
    DEFAULT_DATA_ROOT,
    built,
    configured,
    data_entry,
    environment,
    fast_settings,
    genframe_log,
    load_images,
    log_intervals,
    median,
    shipped_spec,
    timed_loop,
    write_json,
)
from genframe_plugins.networks.latents import LatentCodes
from genframe_plugins.objectives.losses import Lap1
from genframe_plugins.networks.mappers import MLPMapper
from genframe_plugins.networks.dcgan import DCGANGenerator

from genframe.build.prepare import resolve_device
from genframe.ops.images import to_float
from genframe.ops.neighbours import nearest_neighbours

GLO, IMLE = 0, 1  # stage positions in glann.yaml


def adam(params, settings: dict) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.StepLR]:
    """torch's Adam with the spec's settings and its step schedule as an epoch-wise ``StepLR``."""
    optimizer = torch.optim.Adam(params, lr=settings["lr"], betas=tuple(settings["betas"]),
                                 weight_decay=settings.get("weight_decay", 0.0))
    schedule = settings["schedule"]
    return optimizer, torch.optim.lr_scheduler.StepLR(optimizer, schedule["every_epochs"], schedule["gamma"])


def imle_components(glann: dict) -> dict:
    """glann.yaml's components with random unit-vector codes: the mapper's fixed targets."""
    return {**glann["components"], "codes": {**glann["components"]["codes"], "init": "random"}}


def hand_written_glo(images: torch.Tensor, glann: dict, epochs: int) -> list[float]:
    """Seconds per epoch of a plain GLO loop: codes + generator, lap1, Adam on both, codes re-projected."""
    device = images.device
    components, trainer = glann["components"], glann["stages"][GLO]["trainer"]
    codes, generator = built(images, device, configured(LatentCodes, components["codes"]),
                             configured(DCGANGenerator, components["generator"]))
    loss_fn = configured(Lap1, trainer["loss"])
    opt_g, schedule_g = adam(generator.parameters(), trainer["optimizer"])
    opt_z, schedule_z = adam(codes.parameters(), trainer["encoder_optimizer"])
    n, batch = images.shape[0], min(trainer["batch_size"], images.shape[0])

    def epoch(_: int) -> None:
        perm = torch.randperm(n, device=device)
        for start in range(0, n - batch + 1, batch):
            idx = perm[start:start + batch]
            loss = loss_fn(generator(codes.codes[idx]), to_float(images[idx]))
            opt_g.zero_grad(set_to_none=True)
            opt_z.zero_grad(set_to_none=True)
            loss.backward()
            opt_g.step()
            opt_z.step()
            with torch.no_grad():
                codes.codes.copy_(F.normalize(codes.codes, dim=1))
        schedule_g.step()
        schedule_z.step()

    return timed_loop(device, epochs, epoch)


def plain_nearest(queries: torch.Tensor, candidates: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    """Index of each query's nearest candidate the usual way: chunked ``torch.cdist`` and ``argmin``."""
    return torch.cat([torch.cdist(q, candidates).argmin(1) for q in queries.split(chunk)])


def hand_written_imle(images: torch.Tensor, glann: dict, epochs: int) -> list[float]:
    """Seconds per epoch of a plain IMLE loop: refresh the pairing, then regress mapper(noise) onto the codes."""
    device = images.device
    components, trainer = imle_components(glann), glann["stages"][IMLE]["trainer"]
    codes, mapper = built(images, device, configured(LatentCodes, components["codes"]),
                          configured(MLPMapper, components["mapper"]))
    targets = codes.codes.detach().clone()
    optimizer, schedule = adam(mapper.parameters(), trainer["optimizer"])
    n, batch = targets.shape[0], min(trainer["batch_size"], targets.shape[0])
    pool_size = round(trainer["sample_factor"] * n)

    def epoch(_: int) -> None:
        with torch.no_grad():
            pool = torch.randn(pool_size, components["noise"]["dim"], device=device)
            mapper.eval()
            selected = pool[plain_nearest(targets, mapper(pool))]
            mapper.train()
        perm = torch.randperm(n, device=device)
        for start in range(0, n - batch + 1, batch):
            idx = perm[start:start + batch]
            loss = F.mse_loss(mapper(selected[idx]), targets[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        schedule.step()

    return timed_loop(device, epochs, epoch)


def searches(images: torch.Tensor, glann: dict, repeats: int) -> tuple[list[float], list[float]]:
    """Seconds of genframe's exact search and of the plain one, for N codes among 2 x N mapped noise vectors."""
    device = images.device
    components = imle_components(glann)
    codes, mapper = built(images, device, configured(LatentCodes, components["codes"]),
                          configured(MLPMapper, components["mapper"]))
    count = round(glann["stages"][IMLE]["trainer"]["sample_factor"] * images.shape[0])
    with torch.no_grad():
        mapped = mapper.eval()(torch.randn(count, components["noise"]["dim"], device=device))
    targets = codes.codes.detach()
    ours = timed_loop(device, repeats + 1, lambda _: nearest_neighbours(targets, mapped))[1:]
    reference = timed_loop(device, repeats + 1, lambda _: plain_nearest(targets, mapped))[1:]
    return ours, reference


def genframe_spec(glann: dict, stage: int, data: dict, epochs: int, steps_per_epoch: int, fast: bool = False) -> dict:
    """glann.yaml reduced to one stage of ``epochs`` epochs, logging once per epoch, without sampling;
    ``fast``: with whole steps replayed from a CUDA graph and fused Adam updates."""
    chosen = copy.deepcopy(glann["stages"][stage])
    chosen["trainer"]["epochs"] = epochs
    chosen["sample"] = False
    spec = {**glann, "name": f"epochs-{chosen['name']}", "data": data, "stages": [chosen],
            "log_every": steps_per_epoch, "checkpoint_every": 10**9, "evaluation": {"n_samples": 4}}
    if stage == IMLE:
        chosen["trainer"]["staleness"] = 1  # one refresh per epoch, as timed by hand
        spec["components"] = imle_components(glann)
    return fast_settings(spec) if fast else spec


def genframe_epochs(glann: dict, stage: int, data: dict, n: int, warmup: int, repeats: int,
                    device: str, fast: bool = False) -> list[float]:
    """Seconds of genframe's epochs after ``warmup`` of them, from its log."""
    steps_per_epoch = n // min(glann["stages"][stage]["trainer"]["batch_size"], n)
    log = genframe_log(genframe_spec(glann, stage, data, warmup + repeats, steps_per_epoch, fast), device)
    return [seconds for _, seconds in log_intervals(log, warmup * steps_per_epoch)]


def result(procedure: str, ours: list[float], reference: list[float]) -> dict:
    """One row: medians, their ratio (hand-written / genframe: above 1 genframe is faster), every time."""
    ours_s, reference_s = median(ours), median(reference)
    return {"procedure": procedure, "genframe_s": ours_s, "hand_written_s": reference_s,
            "ratio": reference_s / ours_s, "genframe_each_s": ours, "hand_written_each_s": reference}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--data", choices=("auto", "mnist", "digits"), default="auto",
                        help="auto: MNIST at 28 px when found, else scikit-learn's digits at 16 px")
    parser.add_argument("--data-root", default=DEFAULT_DATA_ROOT, help="folder holding mnist/ (IDX files)")
    parser.add_argument("--images", type=int, default=None, help="train on a seeded subset of this many images")
    parser.add_argument("--warmup", type=int, default=1, help="epochs run before timing")
    parser.add_argument("--repeats", type=int, default=5, help="epochs timed (the median is reported)")
    parser.add_argument("--trials", type=int, default=1,
                        help="alternate hand-written and genframe runs this many times (all timed epochs pooled)")
    parser.add_argument("--fast", action="store_true", help="also time genframe with cuda_graphs and fused Adam")
    parser.add_argument("--out", default="benchmarks/results/training_epochs.json")
    args = parser.parse_args()
    if min(args.warmup, args.repeats, args.trials) < 1:
        parser.error("--warmup, --repeats and --trials must be at least 1 (the log's first point closes the warm-up)")
    device = resolve_device(args.device)
    glann = shipped_spec("glann")
    data = data_entry(args.data, args.data_root, 28, args.images)
    if data["type"] == "digits":
        data["image_size"] = 16
    torch.manual_seed(0)
    images = load_images(data, device)
    n = images.shape[0]
    print(f"data: {data['type']}, {n} images of {images.shape[-1]} px, device {device}")
    epochs = args.warmup + args.repeats
    results = []
    for name, stage, by_hand in (("GLO epoch", GLO, hand_written_glo), ("IMLE mapper epoch", IMLE, hand_written_imle)):
        reference, ours, quick = [], [], []
        for _ in range(args.trials):  # alternating, so that a change in the machine's load hits both sides
            reference += by_hand(images, glann, epochs)[args.warmup:]
            ours += genframe_epochs(glann, stage, data, n, args.warmup, args.repeats, str(device))
            if args.fast:
                quick += genframe_epochs(glann, stage, data, n, args.warmup, args.repeats, str(device), fast=True)
        results.append(result(name, ours, reference))
        if args.fast:
            results.append(result(f"{name}, cuda_graphs + fused Adam", quick, reference))
    results.append(result("IMLE refresh: nearest-neighbour search alone (s per search)",
                          *searches(images, glann, args.repeats * args.trials)))
    print("| procedure | genframe s/epoch | hand-written s/epoch | ratio |\n| --- | --- | --- | --- |")
    for row in results:
        print(f"| {row['procedure']} | {row['genframe_s']:.3f} | {row['hand_written_s']:.3f} | {row['ratio']:.2f} |")
    imle = glann["stages"][IMLE]["trainer"]
    settings = {"data": data["type"], "images": n, "image_size": images.shape[-1], "warmup": args.warmup,
                "repeats": args.repeats, "trials": args.trials, "spec": "specs/glann.yaml",
                "glo_batch": glann["stages"][GLO]["trainer"]["batch_size"], "imle_batch": imle["batch_size"],
                "imle_sample_factor": imle["sample_factor"], "fast": args.fast}
    write_json(args.out, {**environment(device), "settings": settings, "results": results})


if __name__ == "__main__":
    main()
