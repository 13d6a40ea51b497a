"""Classifier features: FID, IS, KID and precision/recall offline, measured by a CNN trained on the data's labels.

Inception-v3 needs weights from the internet and says little about 28-px digits. This extractor is
a small CNN that learns the labels of the very data the metrics compare with (MNIST, Fashion-MNIST,
CIFAR-10, the digits, a labelled image folder), once: it is trained on a seeded share of the
labelled images and cached under ``$GENFRAME_CACHE/classifier``, keyed by the images' and labels'
SHA-256 and its own settings, so every later evaluation on the same data loads it. The metrics take
their real reference, and the real-vs-real floor (``fid: {floor: true}``), from the images it held
out, so that no real image the features were fitted to is compared. Its protocol records the
weights' digest, the data it learned from, the split and its held-out accuracy: numbers of another
classifier are not comparable, and a metric's cached statistics are never mixed between them.
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
import uuid

import fsspec
import torch
import torch.nn.functional as F
from torch import nn

from genframe import FeatureExtractor, GenframeError, component, hookimpl, image_digest, param, resize_uint8

_TRAINED: dict[str, dict] = {}  # key -> the trained state, shared by every metric of this process
FORMAT = "genframe-classifier/1"


class _Network(nn.Module):
    """Two convolution blocks and a feature layer (about 99% held-out accuracy on MNIST)."""

    def __init__(self, channels: int, side: int, width: int, features: int, classes: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Dropout(0.25), nn.Linear(2 * width * (side // 4) ** 2, features), nn.ReLU())
        self.head = nn.Sequential(nn.Dropout(0.25), nn.Linear(features, classes))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.body(x)
        return features, self.head(features)


def _shifted(x: torch.Tensor, generator: torch.Generator, pixels: int = 2) -> torch.Tensor:
    """The batch moved by up to ``pixels`` in each direction (zero fill), so features do not key on position."""
    padded = F.pad(x, (pixels,) * 4)
    dy, dx = torch.randint(0, 2 * pixels + 1, (2,), generator=generator).tolist()
    return padded[..., dy:dy + x.shape[-2], dx:dx + x.shape[-1]]


def cache_dir() -> str:
    from genframe_plugins.metrics.inception import cache_dir as root

    return str(root() / "classifier")


@component("feature_extractor", "classifier")
class Classifier(FeatureExtractor):
    """A CNN trained on the evaluated data's labels: 128-d features and class logits, no download.

    Needs labelled data; trained once per data set and settings (about a minute on a CPU for MNIST)
    and cached. The metrics' real images are the ones it held out.
    """

    held_out: float = param(0.4, gt=0, lt=1, help="share of the labelled images it does not train on; the "
                                                   "metrics' reference and floor are drawn from them")
    epochs: int = param(12, ge=1, help="training epochs")
    width: int = param(32, ge=1, help="channels of the first convolution block (the second has twice as many)")
    features: int = param(128, ge=2, help="size of the feature layer the metrics measure")
    resolution: int | None = param(None, ge=8, help="side the images are resized to (default: the data's; "
                                                    "rounded down to a multiple of 4)")
    batch_size: int = param(128, ge=1, help="training batch")
    lr: float = param(1e-3, gt=0, help="Adam's learning rate (cosine decay to 0)")
    seed: int = param(0, ge=0, help="seed of the split and of the training")
    cache_dir: str | None = param(None, help="folder or fsspec URL of trained classifiers (default: "
                                             "$GENFRAME_CACHE/classifier, else ~/.cache/genframe/classifier)")

    def __attrs_post_init__(self) -> None:
        self._state: dict | None = None
        self._network: _Network | None = None

    # -- learning from the data

    def fit(self, images: torch.Tensor, labels: torch.Tensor | None) -> None:
        if labels is None:
            raise GenframeError("features: classifier learns the data set's labels, and the evaluated images "
                                "have none; use a labelled data set or features: {type: inception_v3}")
        key = self._key(images, labels)
        if key not in _TRAINED:
            _TRAINED[key] = self._load(key) or self._train(images.cpu(), labels.cpu(), key)
        self._state, self._network = _TRAINED[key], None

    def _key(self, images: torch.Tensor, labels: torch.Tensor) -> str:
        settings = {k: getattr(self, k) for k in ("held_out", "epochs", "width", "features", "resolution",
                                                  "batch_size", "lr", "seed")}
        data = {"images_sha256": image_digest(images), "labels_sha256": image_digest(labels.to(torch.int64))}
        return hashlib.sha256(json.dumps({"format": FORMAT, **settings, **data}, sort_keys=True).encode()).hexdigest()

    def _side(self, images: torch.Tensor) -> int:
        return max(4, (self.resolution or images.shape[-1]) // 4 * 4)

    def _split(self, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(training positions, held-out positions): the first and the last part of a seeded permutation."""
        order = torch.randperm(count, generator=torch.Generator().manual_seed(self.seed))
        trained = count - max(1, round(self.held_out * count))
        return order[:trained], order[trained:]

    def _train(self, images: torch.Tensor, labels: torch.Tensor, key: str) -> dict:
        side, classes = self._side(images), int(labels.max()) + 1
        train, held = self._split(len(images))
        torch.manual_seed(self.seed)
        network = _Network(images.shape[1], side, self.width, self.features, classes)
        x, y = self._inputs(images[train], side), labels[train].long()
        generator = torch.Generator().manual_seed(self.seed)
        optimiser = torch.optim.Adam(network.parameters(), lr=self.lr)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, self.epochs)
        for _ in range(self.epochs):
            network.train()
            for rows in torch.randperm(len(x), generator=generator).split(self.batch_size):
                _, logits = network(_shifted(x[rows], generator))
                loss = F.cross_entropy(logits, y[rows])
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
            schedule.step()
        network.eval()
        state = {"weights": {k: v.detach().clone() for k, v in network.state_dict().items()},
                 "shape": [images.shape[1], side, classes], "held": held, "images": len(images)}
        state["accuracy"] = self._accuracy(network, images[held], labels[held], side)
        digest = hashlib.sha256()
        for name, tensor in sorted(state["weights"].items()):
            digest.update(name.encode())
            digest.update(tensor.numpy().tobytes())
        state["weights_sha256"] = digest.hexdigest()
        self._save(key, state)
        return state

    @torch.no_grad()
    def _accuracy(self, network: _Network, images: torch.Tensor, labels: torch.Tensor, side: int) -> float:
        logits = torch.cat([network(self._inputs(images[i:i + 1000], side))[1] for i in range(0, len(images), 1000)])
        return round(float((logits.argmax(1) == labels.long()).float().mean()), 4)

    @staticmethod
    def _inputs(images: torch.Tensor, side: int) -> torch.Tensor:
        """uint8 (N, C, H, W) -> float in [0, 1] at side x side."""
        return resize_uint8(images, side).float() / 255.0

    # -- the trained classifier on disk

    def _url(self, key: str) -> str:
        return f"{(self.cache_dir or cache_dir()).rstrip('/')}/{key[:24]}.pt"

    def _load(self, key: str) -> dict | None:
        url = self._url(key)
        try:
            with fsspec.open(url, "rb") as fh:
                payload = torch.load(io.BytesIO(fh.read()), map_location="cpu", weights_only=True)
        except FileNotFoundError:
            return None
        except Exception as exc:  # a damaged cache file is trained again, not trusted
            print(f"genframe: warning: {url}: unreadable ({type(exc).__name__}); training the classifier again",
                  file=sys.stderr)
            return None
        return payload["state"] if isinstance(payload, dict) and payload.get("key") == key else None

    def _save(self, key: str, state: dict) -> None:
        buffer = io.BytesIO()
        torch.save({"format": FORMAT, "key": key, "state": state}, buffer)
        fs, path = fsspec.core.url_to_fs(self._url(key))
        fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        temp = f"{path}.{uuid.uuid4().hex}.tmp"
        with fs.open(temp, "wb") as fh:
            fh.write(buffer.getvalue())
        fs.mv(temp, path)  # a cached classifier is complete or absent

    # -- the extractor

    def held_out_positions(self) -> torch.Tensor | None:
        return None if self._state is None else self._state["held"]

    def prepare(self, device: torch.device) -> None:
        if self._state is None:
            raise GenframeError("features: classifier has not seen the data it measures; metrics fit it first "
                                "(genframe run and genframe eval do)")
        if self._network is None:
            channels, side, classes = self._state["shape"]
            self._network = _Network(channels, side, self.width, self.features, classes)
            self._network.load_state_dict(self._state["weights"])
            self._network.eval()
        self._network.to(device)

    @torch.no_grad()
    def extract(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if self._network is None:
            raise RuntimeError("call prepare(device) before extract")
        channels, side, _ = self._state["shape"]
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != channels:
            raise GenframeError(f"classifier: trained on uint8 images of {channels} channel(s), got "
                                f"{images.dtype} {tuple(images.shape)}")
        features, logits = self._network(self._inputs(images, side))
        return {"features": features, "logits": logits}

    def protocol(self) -> dict:
        if self._state is None:
            raise RuntimeError("fit the classifier before asking for its protocol")
        return {"type": self.type_name, "weights_sha256": self._state["weights_sha256"],
                "images": self._state["images"],
                "held_out": len(self._state["held"]), "held_out_accuracy": self._state["accuracy"],
                "seed": self.seed, "epochs": self.epochs, "width": self.width, "features": self.features,
                "resolution": self._state["shape"][1]}


@hookimpl
def genframe_components():
    return [Classifier]
