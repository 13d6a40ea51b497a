"""How genframe's training time scales with the batch size and with the size of the data set.

(a) Time per training step of the WGAN-GP setting of ``specs/wgan_gp.yaml`` (one step: 5 critic
updates with the gradient penalty, then one generator update) and of a GLO step of
``specs/glann.yaml`` (codes + DCGAN generator, lap1, two Adams) at several batch sizes.
(b) Time per GLO epoch (the spec's batch, 128) as the data set grows.

Each figure also comes per sample (per image of the batch, or per image an epoch trains on), so it
shows where scaling stops being linear: while the device is not saturated, a larger batch costs
little more per step and the time per sample falls; once the networks' arithmetic fills it, the
time per sample levels off. Settings other than the batch size and the data are the specs' own.
Times are read from the run log (the wall clock at logging points), so set-up and evaluation are
left out; the first logging interval is a warm-up, and the median of the following ones is reported.

    python benchmarks/scaling.py [--device cuda] [--batch-sizes 64 128 256 512 1024] [--sizes 1250 2500 5000 10000]
    python benchmarks/scaling.py --quick      # a CPU version: 16 px images, fewer sizes and steps (~3 min)
"""

from __future__ import annotations

import argparse
import copy

from _common import (
    DEFAULT_DATA_ROOT,
    data_entry,
    environment,
    genframe_log,
    load_images,
    log_intervals,
    median,
    shipped_spec,
    write_json,
)

from genframe.build.prepare import resolve_device

FULL = {"image_size": 28, "batch_sizes": [64, 128, 256, 512, 1024], "sizes": [1250, 2500, 5000, 10000],
        "wgan_interval": 10, "repeats": 3}
QUICK = {"image_size": 16, "batch_sizes": [64, 128, 256, 512], "sizes": [625, 1250, 2500, 5000],
         "wgan_interval": 2, "repeats": 2}


def one_stage(spec: dict, data: dict, trainer: dict, log_every: int) -> dict:
    """``spec`` with its first stage only, ``trainer`` fields overridden, logging every ``log_every`` steps."""
    stage = copy.deepcopy(spec["stages"][0])
    stage["trainer"].update(trainer)
    stage["sample"] = False
    return {**spec, "data": data, "stages": [stage], "log_every": log_every, "checkpoint_every": 10**9,
            "evaluation": {"n_samples": 4}}


def seconds_per_interval(spec: dict, log_every: int, device: str) -> float:
    """Median seconds of the logging intervals after the first (the warm-up)."""
    return median([seconds for _, seconds in log_intervals(genframe_log(spec, device), log_every)])


def wgan_gp_step(data: dict, batch: int, interval: int, repeats: int, device: str) -> float:
    """Seconds per generator step (with its critic steps) of wgan_gp.yaml at ``batch``."""
    spec = one_stage(shipped_spec("wgan_gp"), data, {"batch_size": batch, "steps": interval * (1 + repeats)},
                     interval)
    return seconds_per_interval(spec, interval, device) / interval


def glo_epoch(data: dict, n: int, batch: int | None, repeats: int, device: str) -> tuple[float, int, int]:
    """(seconds per epoch, steps per epoch, batch) of glann.yaml's GLO stage on ``n`` images (batch: the spec's)."""
    glann = shipped_spec("glann")
    batch = batch or glann["stages"][0]["trainer"]["batch_size"]
    steps = n // batch
    spec = one_stage(glann, data, {"batch_size": batch, "epochs": 1 + repeats}, steps)
    return seconds_per_interval(spec, steps, device), steps, batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true", help="CPU-sized: 16 px, fewer batch and data sizes and steps")
    parser.add_argument("--data", choices=("auto", "mnist", "digits"), default="auto",
                        help="auto: MNIST when found, else scikit-learn's digits (1,797 images)")
    parser.add_argument("--data-root", default=DEFAULT_DATA_ROOT, help="folder holding mnist/ (IDX files)")
    parser.add_argument("--image-size", type=int, help="image side (default 28, --quick 16)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", help="for (a)")
    parser.add_argument("--sizes", type=int, nargs="+", help="data set sizes for (b)")
    parser.add_argument("--wgan-interval", type=int, help="WGAN-GP steps per logging interval")
    parser.add_argument("--repeats", type=int, help="timed logging intervals (GLO: epochs) after the warm-up one")
    parser.add_argument("--out", default="benchmarks/results/scaling.json")
    args = parser.parse_args()
    settings = {**(QUICK if args.quick else FULL),
                **{k: v for k, v in vars(args).items() if k in FULL and v is not None}}
    device = resolve_device(args.device)
    data = data_entry(args.data, args.data_root, settings["image_size"], None)
    available = load_images(data, device).shape[0]
    print(f"data: {data['type']}, {available} images of {data['image_size']} px, device {device}")
    repeats = settings["repeats"]

    by_batch = []
    for batch in settings["batch_sizes"]:
        if batch > available:
            print(f"batch {batch}: skipped, more than the {available} images")
            continue
        seconds = wgan_gp_step(data, batch, settings["wgan_interval"], repeats, str(device))
        by_batch.append({"procedure": "WGAN-GP step", "batch": batch, "step_s": seconds})
        seconds, steps, _ = glo_epoch(data, available, batch, repeats, str(device))
        by_batch.append({"procedure": "GLO step", "batch": batch, "step_s": seconds / steps,
                         "steps_per_epoch": steps})
    print(f"(a) per step, {available} images of {data['image_size']} px\n"
          "| procedure | batch | ms/step | us/sample | per-sample time vs smallest batch |\n"
          "| --- | --- | --- | --- | --- |")
    for procedure in ("WGAN-GP step", "GLO step"):
        rows = [r for r in by_batch if r["procedure"] == procedure]
        for row in rows:
            row["sample_s"] = row["step_s"] / row["batch"]
            row["relative"] = row["sample_s"] / rows[0]["sample_s"]
            print(f"| {procedure} | {row['batch']} | {1e3 * row['step_s']:.1f} | {1e6 * row['sample_s']:.1f} | "
                  f"{row['relative']:.2f} |")

    by_size = []
    for size in settings["sizes"]:
        if size > available:
            print(f"{size} images: skipped, only {available} available")
            continue
        seconds, steps, batch = glo_epoch({**data, "limit": size}, size, None, repeats, str(device))
        by_size.append({"images": size, "batch": batch, "steps_per_epoch": steps, "epoch_s": seconds,
                        "image_s": seconds / (steps * batch)})
    print("(b) GLO epoch at glann.yaml's batch size; per image trained on (the last partial batch is dropped)\n"
          "| images | steps/epoch | s/epoch | us/image | per-image time vs smallest |\n| --- | --- | --- | --- | --- |")
    for row in by_size:
        row["relative"] = row["image_s"] / by_size[0]["image_s"]
        print(f"| {row['images']} | {row['steps_per_epoch']} | {row['epoch_s']:.3f} | {1e6 * row['image_s']:.1f} | "
              f"{row['relative']:.2f} |")
    write_json(args.out, {**environment(device), "settings": {"data": data["type"], "images": available,
                                                              "quick": args.quick, **settings},
                          "batch_scaling": by_batch, "size_scaling": by_size})


if __name__ == "__main__":
    main()
