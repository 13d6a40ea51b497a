"""A digit judge: sample quality on MNIST (or Fashion-MNIST) without Inception weights.

A thin use of genframe's ``classifier`` feature extractor (``genframe_plugins.metrics.classifier``):
the CNN that ``features: {type: classifier}`` trains on a data set's labels is trained on a seeded 60%
of the test split (6,000 of MNIST's 10,000 images; the same images, network and training as this
judge had before it moved into genframe), and reads samples the way Inception reads natural images:

- **classifier-IS**: exp E_x KL(p(y|x) || p(y)) over all samples (one split); 10 at most. High when
  every sample is confidently one class and the classes are balanced.
- **classes**: how many of the 10 classes receive at least 5% of the samples (mode coverage).
- **Frechet distance** between the Gaussian moments of the classifier's 128-d features of the
  samples and of held-out real images, as FID does with Inception's pool features.
- the same numbers for a **real-vs-real draw** (other held-out real images against the same reference
  at equal n): the floor that a perfect generator reaches, since a Frechet distance at finite n is never 0.

The classifier never sees the 4,000 held-out images; they give the reference (n) and the floor draw
(n), so n <= 2,000. The generative runs may have trained on them: only the judge must not have.
In a spec, the same numbers are ``evaluation.metrics: [{type: fid, features: {type: classifier},
floor: true, n: 2000, n_real: 2000}]`` with ``evaluation.data`` the test split (the reference draw
differs: this script keeps its own, so that its figures stay comparable with the earlier ones).

    python benchmarks/digit_judge.py runs/glann-mnist-20261202-0530            # a run folder (draws --n)
    python benchmarks/digit_judge.py samples.npz --n 2000                      # `genframe sample` output
    python benchmarks/digit_judge.py RUN_A RUN_B --json judge.json

The trained classifier is cached (keyed by its data and settings) under ``--cache``; CPU training
takes about a minute. Every figure is printed with its n.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

from genframe_plugins.data.datasets import MNIST, FashionMNIST
from genframe_plugins.metrics.classifier import Classifier
from genframe_plugins.metrics.feature_metrics import frechet_distance, inception_score, moments

REPO = Path(__file__).resolve().parent.parent
DATASETS = {"mnist": MNIST, "fashion_mnist": FashionMNIST}
JUDGE_EPOCHS = 12
HELD_OUT = 0.4  # of the test split: 4,000 of MNIST's 10,000 images


def data_root() -> Path:
    env = os.environ.get("GENFRAME_DATA")
    return Path(env) if env else REPO.parent / "shared" / "datasets"


def classifier_is(logits: torch.Tensor) -> float:
    """exp E_x KL(p(y|x) || p(y)) over all rows (one split), in float64."""
    mean, _ = inception_score(logits, splits=1, shuffle_seed=None)
    return mean


def coverage(logits: torch.Tensor, share: float = 0.05) -> int:
    counts = torch.bincount(logits.argmax(1), minlength=10).double() / len(logits)
    return int((counts >= share).sum())


class Judge:
    """A trained classifier with its reference moments and its real-vs-real floor at one n."""

    def __init__(self, dataset: str = "mnist", n: int = 2000, seed: int = 0, root: Path | None = None,
                 cache: Path | None = None, log=print):
        self.dataset, self.n, self.seed = dataset, n, seed
        images, labels = DATASETS[dataset](root=str((root or data_root()) / dataset), split="test").load()
        self.classifier = Classifier(held_out=HELD_OUT, epochs=JUDGE_EPOCHS, seed=seed,
                                     cache_dir=None if cache is None else str(cache))
        self.classifier.fit(images, labels)
        self.classifier.prepare(torch.device("cpu"))
        held = self.classifier.held_out_positions()
        self.description = (f"{dataset}: test split; classifier trained on {len(images) - len(held)} of its "
                            f"images (seed {seed}), {len(held)} held out")
        if 2 * n > len(held):
            raise SystemExit(f"--n {n}: the judge holds out {len(held)} real images, which give a "
                             f"reference and a floor draw of at most {len(held) // 2} each")
        held_x = images[held]
        self.held_out_accuracy = self.classifier.protocol()["held_out_accuracy"]
        log(f"judge: {self.description}; held-out accuracy {self.held_out_accuracy:.4f}")
        order = torch.randperm(len(held_x), generator=torch.Generator().manual_seed(seed + 1))
        self.reference, self.floor_draw = held_x[order[:n]], held_x[order[n:2 * n]]
        features, _ = self.read(self.reference)
        self.mu, self.sigma = moments(features)
        self.floor = self.score(self.floor_draw)

    @torch.no_grad()
    def read(self, images: torch.Tensor, batch: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
        """(features, logits) of uint8 images of any size; colour images are read as grey."""
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"expected uint8 images (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if images.shape[1] != 1:
            images = images.float().mean(dim=1, keepdim=True).round().to(torch.uint8)
        parts = [self.classifier.extract(images[i:i + batch]) for i in range(0, len(images), batch)]
        return torch.cat([p["features"] for p in parts]), torch.cat([p["logits"] for p in parts])

    def score(self, images: torch.Tensor) -> dict:
        """classifier-IS, class coverage and Frechet distance of ``images`` (uint8) against the reference."""
        if len(images) != self.n:
            raise ValueError(f"score {self.n} images at a time (the reference's n), got {len(images)}")
        features, logits = self.read(images)
        mu, sigma = moments(features)
        return {"n": self.n, "is": round(classifier_is(logits), 3), "classes": coverage(logits),
                "fd": round(frechet_distance(mu, sigma, self.mu, self.sigma), 2)}

    def relative(self, result: dict) -> dict:
        """The ratios the quality goals are stated in: FD over the floor's, IS over real images'."""
        return {**result, "fd_over_floor": round(result["fd"] / self.floor["fd"], 3),
                "is_over_real": round(result["is"] / self.floor["is"], 3)}

    def protocol(self) -> dict:
        return {"dataset": self.dataset, "n": self.n, "seed": self.seed, "split": self.description,
                "judge_held_out_accuracy": round(self.held_out_accuracy, 4),
                "features": self.classifier.protocol(), "floor": self.floor}


def samples_of(source: str, n: int, seed: int, device: str | None) -> torch.Tensor:
    """``n`` uint8 images from a run folder (drawn with ``seed``) or an ``.npz`` with an ``images`` array."""
    if source.endswith(".npz"):
        with np.load(source) as data:
            if "images" not in data:
                raise SystemExit(f"{source}: no 'images' array (write one with genframe sample --out FILE.npz)")
            images = torch.from_numpy(data["images"])
        if len(images) < n:
            raise SystemExit(f"{source}: holds {len(images)} images, the judge needs --n {n}")
        return images[:n]
    from genframe.api import sample

    images, _ = sample(source, n, seed=seed, device=device)
    return images


def table(judge: Judge, rows: dict[str, dict]) -> str:
    lines = [f"judge: {judge.description}; held-out accuracy {judge.held_out_accuracy:.4f}",
             "| samples | n | classifier-IS | classes >= 5% | Frechet distance | FD / floor | IS / real |",
             "| --- | --- | --- | --- | --- | --- | --- |",
             f"| real-vs-real floor | {judge.n} | {judge.floor['is']:.2f} | {judge.floor['classes']} | "
             f"{judge.floor['fd']:.1f} | 1.00 | 1.00 |"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['n']} | {r['is']:.2f} | {r['classes']} | {r['fd']:.1f} | "
                     f"{r['fd_over_floor']:.2f} | {r['is_over_real']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sources", nargs="+", help="run folders (URLs) or .npz files of samples")
    parser.add_argument("--n", type=int, default=2000, help="samples judged, and real images in reference and floor")
    parser.add_argument("--seed", type=int, default=0, help="seed of the judge's split, training and sampling")
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="mnist")
    parser.add_argument("--device", help="device to sample runs on (default: the run's)")
    parser.add_argument("--cache", type=Path, help="folder of trained classifiers (default: $GENFRAME_CACHE/classifier)")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    if args.n < 2:
        parser.error("--n must be at least 2")
    judge = Judge(args.dataset, args.n, args.seed, cache=args.cache, log=lambda m: print(m, file=sys.stderr))
    rows = {source: judge.relative(judge.score(samples_of(source, args.n, args.seed, args.device)))
            for source in args.sources}
    print(table(judge, rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"protocol": judge.protocol(), "results": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
