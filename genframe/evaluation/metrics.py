"""Evaluation: measuring a sampler against real images, once per image set, with the protocol recorded.

Metrics are independent components, yet FID, IS, KID and precision/recall of one evaluation all
measure the same generated images (and KID, P/R and FID the same real images) with the same
network. Inside ``compute_metrics`` the features of each image set are therefore extracted once
and shared; outside it, every call extracts afresh, so a sampler whose weights changed is never
served stale features. Real images are identified by the SHA-256 of their pixels, which is what
makes cached reference statistics safe to reuse.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import typing
import weakref
from typing import Any, Callable, Iterator

import attrs
import torch

from genframe.build.sampler import Sampler
from genframe.errors import GenframeError
from genframe.ops.images import to_uint8
from genframe.components.registry import Registry, get_registry
from genframe.components.roles import FeatureExtractor, Metric



# --------------------------------------------------------------------------- identities


_DIGESTS: dict[int, tuple[weakref.ref, int, str]] = {}


def image_digest(images: torch.Tensor) -> str:
    """SHA-256 of a uint8 image tensor's shape and pixels: the identity of a reference set.

    Remembered per live tensor object and in-place version (never per memory address, which a
    later tensor may reuse), so evaluating every few thousand steps against the same on-device
    data set hashes it once.
    """
    remembered = _DIGESTS.get(id(images))
    if remembered is not None and remembered[0]() is images and remembered[1] == images._version:
        return remembered[2]
    digest = hashlib.sha256(repr((tuple(images.shape), str(images.dtype))).encode())
    flat = images.reshape(images.shape[0], -1) if images.dim() else images.reshape(1)
    for start in range(0, flat.shape[0], 4096):
        digest.update(flat[start:start + 4096].contiguous().cpu().numpy().tobytes())
    for key in [k for k, (ref, _, _) in _DIGESTS.items() if ref() is None]:
        del _DIGESTS[key]
    _DIGESTS[id(images)] = (weakref.ref(images), images._version, digest.hexdigest())
    return digest.hexdigest()


def protocol_key(protocol: Any) -> str:
    """A short stable name for a JSON-able protocol (cache file names, memo keys)."""
    return hashlib.sha256(json.dumps(protocol, sort_keys=True).encode()).hexdigest()


def resolve_extractor(value: FeatureExtractor | dict, where: str, registry: Registry | None = None
                      ) -> FeatureExtractor:
    """A metric's ``features`` field as a component: specs build it, direct Python use may pass a mapping."""
    if isinstance(value, FeatureExtractor):
        return value
    from genframe.build.system import instantiate

    return typing.cast(FeatureExtractor, instantiate("feature_extractor", dict(value), f"{where}.features",
                                                     "<metric>", registry or get_registry()))


# --------------------------------------------------------------------------- features, shared per evaluation


@attrs.define
class _Shared:
    features: dict[tuple, dict[str, torch.Tensor]] = attrs.Factory(dict)


_SCOPE: contextvars.ContextVar[_Shared | None] = contextvars.ContextVar("genframe_evaluation_scope", default=None)


@contextlib.contextmanager
def shared_features() -> Iterator[None]:
    """Within this block, features of the same images with the same extractor are extracted once."""
    token = _SCOPE.set(_Shared())
    try:
        yield
    finally:
        _SCOPE.reset(token)


def _memo(key: tuple, compute: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    scope = _SCOPE.get()
    if scope is None:
        return compute()
    if key not in scope.features:
        scope.features[key] = compute()
    return scope.features[key]


def _extract_batches(extractor: FeatureExtractor, batches: Iterator[torch.Tensor]) -> dict[str, torch.Tensor]:
    parts: dict[str, list[torch.Tensor]] = {}
    for batch in batches:
        for name, value in extractor.extract(batch).items():
            parts.setdefault(name, []).append(value)
    return {name: torch.cat(values) for name, values in parts.items()}


def generated_features(extractor: FeatureExtractor, sample: Callable, n: int, *, seed: int, batch_size: int,
                       device: torch.device) -> dict[str, torch.Tensor]:
    """Features of ``n`` images drawn from ``sample`` in batches with one seeded random generator.

    Images are quantised to uint8 on the device first, so that they are measured exactly as they
    would be saved; the same (seed, batch_size) draws the same images.
    """
    def batches() -> Iterator[torch.Tensor]:
        generator = torch.Generator(device=device).manual_seed(seed)
        for start in range(0, n, batch_size):
            yield to_uint8(sample(min(batch_size, n - start), generator))

    key = ("generated", id(sample), protocol_key(extractor.protocol()), n, seed, batch_size)
    return _memo(key, lambda: _extract_batches(extractor, batches()))


def real_subset(count: int, n: int | None, seed: int) -> torch.Tensor | None:
    """Sorted positions of a seeded random subset of ``n`` of ``count`` real images; None keeps all."""
    if n is None or n >= count:
        return None
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(count, generator=generator)[:n].sort().values


def real_features(extractor: FeatureExtractor, images: torch.Tensor, subset: torch.Tensor | None, *,
                  batch_size: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Features of real uint8 images (or of the ``subset`` positions), moved to the device batch by batch."""
    def batches() -> Iterator[torch.Tensor]:
        positions = subset if subset is not None else torch.arange(images.shape[0])
        for start in range(0, positions.shape[0], batch_size):
            chunk = positions[start:start + batch_size]
            yield images[chunk.to(images.device)].to(device, non_blocking=True)

    chosen = None if subset is None else protocol_key(subset.tolist())
    key = ("real", image_digest(images), chosen, protocol_key(extractor.protocol()), batch_size)
    return _memo(key, lambda: _extract_batches(extractor, batches()))


# --------------------------------------------------------------------------- running metrics


def result_name(metric: Metric) -> str:
    """The name a metric's protocol is filed under: its ``name`` field, else its type."""
    return metric.result_name()


def compute_metrics(metrics: list[Metric], sample: Callable, real_images: torch.Tensor | None,
                    device: torch.device, labels: torch.Tensor | None = None
                    ) -> tuple[dict[str, float], dict[str, dict]]:
    """(results, protocols by metric name) of every metric, sharing extracted features between them.

    ``labels`` are the real images' (None when the data have none): metrics whose features are
    learnt from the data (a classifier of its labels) fit them first. When ``sample`` is a system's
    sampler chain, the protocols also say how its links sampled (``sampling``: a flow's solver and
    network evaluations), which the numbers depend on too.
    """
    results: dict[str, float] = {}
    protocols: dict[str, dict] = {}
    for metric in metrics:
        metric.fit(real_images, labels)
    with shared_features():
        for metric in metrics:
            values = metric.compute(sample, real_images, device)
            clash = sorted(set(values) & set(results))
            if clash:
                raise GenframeError(f"evaluation.metrics: two metrics report {', '.join(clash)}; give one of "
                                    "them another name")
            results.update(values)
            protocols[result_name(metric)] = metric.protocol()
    sampling = sample.protocol() if isinstance(sample, Sampler) else {}
    if results and sampling:
        protocols["sampling"] = sampling
    return results, protocols
