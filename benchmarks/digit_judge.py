"""A digit judge: sample quality on MNIST (or Fashion-MNIST) without Inception weights.

A small CNN classifier is trained on real images the judged samples are not compared with, then reads
samples the way Inception reads natural images:

- **classifier-IS**: exp E_x KL(p(y|x) || p(y)) over all samples (one split); 10 at most. High when
  every sample is confidently one class and the classes are balanced.
- **classes**: how many of the 10 classes receive at least 5% of the samples (mode coverage).
- **Frechet distance** between the Gaussian moments of the classifier's penultimate features (128-d)
  of the samples and of held-out real images, as FID does with Inception's pool features.
- the same numbers for a **real-vs-real draw** (other held-out real images against the same reference
  at equal n): the floor that a perfect generator reaches, since a Frechet distance at finite n is never 0.

Data: the training split trains the judge where its files are present and the test split is held out;
with the test split alone (MNIST's 10,000 images), a seeded 6,000 train the judge and the other 4,000
are held out. The held-out images give the reference (n) and the floor draw (n), so n <= held-out / 2.
The generative runs may have trained on the held-out images: the judge only must not have.

    python benchmarks/digit_judge.py runs/glann-mnist-20261202-0530            # a run folder (draws --n)
    python benchmarks/digit_judge.py samples.npz --n 2000                      # `genframe sample` output
    python benchmarks/digit_judge.py RUN_A RUN_B --json judge.json

The trained judge is cached (keyed by its data and settings) under ``--cache``; CPU training takes
about a minute. Every figure is printed with its n.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from genframe import GenframeError
from genframe.ops.images import resize_uint8
from genframe_plugins.data.datasets import MNIST, FashionMNIST
from genframe_plugins.metrics.feature_metrics import frechet_distance, moments

REPO = Path(__file__).resolve().parent.parent
DATASETS = {"mnist": MNIST, "fashion_mnist": FashionMNIST}
JUDGE_EPOCHS = 12
JUDGE_TRAIN_FROM_TEST = 6000  # with the test split alone: images that train the judge; the rest are held out
FEATURES = 128


def data_root() -> Path:
    env = os.environ.get("GENFRAME_DATA")
    return Path(env) if env else REPO.parent / "shared" / "datasets"


class JudgeNet(nn.Module):
    """Two conv blocks and a 128-d feature layer: about 99% test accuracy on MNIST."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Dropout(0.25), nn.Linear(64 * 7 * 7, FEATURES), nn.ReLU())
        self.head = nn.Sequential(nn.Dropout(0.25), nn.Linear(FEATURES, 10))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.body(x)
        return features, self.head(features)


def prepare(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) of any size and channel count -> float (N, 1, 28, 28) in [0, 1]."""
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(f"expected uint8 images (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
    if images.shape[1] != 1:
        images = images.float().mean(dim=1, keepdim=True).round().to(torch.uint8)
    return resize_uint8(images, 28).float() / 255.0


def shifted(x: torch.Tensor, generator: torch.Generator, pixels: int = 2) -> torch.Tensor:
    """Each image moved by up to ``pixels`` in each direction (zero fill): the judge must not key on position."""
    padded = F.pad(x, (pixels,) * 4)
    dy, dx = torch.randint(0, 2 * pixels + 1, (2,), generator=generator).tolist()
    return padded[..., dy:dy + x.shape[-2], dx:dx + x.shape[-1]]


@dataclass
class Split:
    train_x: torch.Tensor
    train_y: torch.Tensor
    held_x: torch.Tensor
    held_y: torch.Tensor
    description: str


def load_split(dataset: str, root: Path, seed: int) -> Split:
    """The judge's training images and the held-out real images (uint8), as the module docstring says."""
    cls = DATASETS[dataset]
    folder = str(root / dataset)
    try:
        train_x, train_y = cls(root=folder, split="train").load()
    except GenframeError:  # no training split here: the test split is divided
        pass
    else:
        held_x, held_y = cls(root=folder, split="test").load()
        return Split(train_x, train_y, held_x, held_y, f"{dataset}: judge trained on the training split "
                     f"({len(train_x)}), test split held out ({len(held_x)})")
    images, labels = cls(root=folder, split="test").load()
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    train, held = order[:JUDGE_TRAIN_FROM_TEST], order[JUDGE_TRAIN_FROM_TEST:]
    return Split(images[train], labels[train], images[held], labels[held],
                 f"{dataset}: test split only; judge trained on {len(train)} of its images (seed {seed}), "
                 f"{len(held)} held out")


def train_judge(split: Split, seed: int, log=print) -> JudgeNet:
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    net = JudgeNet()
    x, y = prepare(split.train_x), split.train_y
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, JUDGE_EPOCHS)
    for epoch in range(JUDGE_EPOCHS):
        net.train()
        for rows in torch.randperm(len(x), generator=generator).split(128):
            _, logits = net(shifted(x[rows], generator))
            loss = F.cross_entropy(logits, y[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        schedule.step()
    net.eval()
    log(f"judge: trained {JUDGE_EPOCHS} epochs on {len(x)} images; "
        f"held-out accuracy {accuracy(net, split.held_x, split.held_y):.4f} (n={len(split.held_x)})")
    return net


@torch.no_grad()
def read(net: JudgeNet, images: torch.Tensor, batch: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """(features, logits) of uint8 images."""
    net.eval()
    parts = [net(prepare(images[i:i + batch])) for i in range(0, len(images), batch)]
    return torch.cat([f for f, _ in parts]), torch.cat([logit for _, logit in parts])


def accuracy(net: JudgeNet, images: torch.Tensor, labels: torch.Tensor) -> float:
    return float((read(net, images)[1].argmax(1) == labels).float().mean())


def classifier_is(logits: torch.Tensor) -> float:
    """exp E_x KL(p(y|x) || p(y)) over all rows (one split), in float64."""
    log_p = torch.log_softmax(logits.double(), dim=1)
    log_marginal = torch.logsumexp(log_p, dim=0) - math.log(len(log_p))
    return float((log_p.exp() * (log_p - log_marginal)).sum(dim=1).mean().exp())


def coverage(logits: torch.Tensor, share: float = 0.05) -> int:
    counts = torch.bincount(logits.argmax(1), minlength=10).double() / len(logits)
    return int((counts >= share).sum())


class Judge:
    """A trained judge with its reference moments and its real-vs-real floor at one n."""

    def __init__(self, dataset: str = "mnist", n: int = 2000, seed: int = 0, root: Path | None = None,
                 cache: Path | None = None, log=print):
        self.dataset, self.n, self.seed = dataset, n, seed
        split = load_split(dataset, root or data_root(), seed)
        self.description = split.description
        if 2 * n > len(split.held_x):
            raise SystemExit(f"--n {n}: the judge holds out {len(split.held_x)} real images, which give a "
                             f"reference and a floor draw of at most {len(split.held_x) // 2} each")
        self.net = self._cached_or_trained(split, cache, log)
        order = torch.randperm(len(split.held_x), generator=torch.Generator().manual_seed(seed + 1))
        self.reference = split.held_x[order[:n]]
        self.floor_draw = split.held_x[order[n:2 * n]]
        self.held_out_accuracy = accuracy(self.net, split.held_x, split.held_y)
        features, _ = read(self.net, self.reference)
        self.mu, self.sigma = moments(features)
        self.floor = self.score(self.floor_draw)

    def _cached_or_trained(self, split: Split, cache: Path | None, log) -> JudgeNet:
        digest = hashlib.sha256()
        for tensor in (split.train_x, split.train_y):
            digest.update(tensor.numpy().tobytes())
        digest.update(f"{JUDGE_EPOCHS}-{self.seed}-{FEATURES}-v1".encode())
        path = (cache or Path.home() / ".cache" / "genframe" / "judge") / f"{self.dataset}-{digest.hexdigest()[:16]}.pt"
        net = JudgeNet()
        if path.is_file():
            net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            net.eval()
            return net
        net = train_judge(split, self.seed, log)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        torch.save(net.state_dict(), partial)
        partial.replace(path)  # atomic: a judge file is complete or absent
        return net

    def score(self, images: torch.Tensor) -> dict:
        """classifier-IS, class coverage and Frechet distance of ``images`` (uint8) against the reference."""
        if len(images) != self.n:
            raise ValueError(f"score {self.n} images at a time (the reference's n), got {len(images)}")
        features, logits = read(self.net, images)
        mu, sigma = moments(features)
        return {"n": self.n, "is": round(classifier_is(logits), 3), "classes": coverage(logits),
                "fd": round(frechet_distance(mu, sigma, self.mu, self.sigma), 2)}

    def relative(self, result: dict) -> dict:
        """The ratios the quality goals are stated in: FD over the floor's, IS over real images'."""
        return {**result, "fd_over_floor": round(result["fd"] / self.floor["fd"], 3),
                "is_over_real": round(result["is"] / self.floor["is"], 3)}

    def protocol(self) -> dict:
        return {"dataset": self.dataset, "n": self.n, "seed": self.seed, "split": self.description,
                "judge_held_out_accuracy": round(self.held_out_accuracy, 4), "features": FEATURES,
                "floor": self.floor}


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
    parser.add_argument("--cache", type=Path, help="folder of trained judges (default ~/.cache/genframe/judge)")
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
