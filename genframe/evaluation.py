"""Evaluation: measuring a sampler against real images, once per image set, with the protocol recorded.

Metrics are independent components, yet FID, IS, KID and precision/recall of one evaluation all
measure the same generated images (and KID, P/R and FID the same real images) with the same
network. Inside ``compute_metrics`` the features of each image set are therefore extracted once
and shared; outside it, every call extracts afresh, so a sampler whose weights changed is never
served stale features. Real images are identified by the SHA-256 of their pixels, which is what
makes cached reference statistics safe to reuse.

``evaluate_run`` is the API behind ``genframe eval``: it rebuilds a finished run, picks the
reference images (the run's data, another split of it, or a statistics file), computes the
metrics and appends them, with their protocol, to the run's ``metrics.jsonl``.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import typing
import weakref
from datetime import datetime
from typing import Any, Callable, Iterator

import attrs
import torch

from .errors import GenframeError
from .images import to_uint8
from .registry import Registry, get_registry
from .roles import FeatureExtractor, Metric

#: Short names accepted by ``genframe eval --metrics``.
METRIC_ALIASES = {"is": "inception_score", "pr": "precision_recall"}
#: Suffixes of statistics files accepted where a reference split could also be named.
STATS_SUFFIXES = (".pt", ".npz")


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
    from .build import instantiate

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
    return str(getattr(metric, "name", None) or metric.type_name)


def compute_metrics(metrics: list[Metric], sample: Callable, real_images: torch.Tensor | None,
                    device: torch.device) -> tuple[dict[str, float], dict[str, dict]]:
    """(results, protocols by metric name) of every metric, sharing extracted features between them."""
    results: dict[str, float] = {}
    protocols: dict[str, dict] = {}
    with shared_features():
        for metric in metrics:
            values = metric.compute(sample, real_images, device)
            clash = sorted(set(values) & set(results))
            if clash:
                raise GenframeError(f"evaluation.metrics: two metrics report {', '.join(clash)}; give one of "
                                    "them another name")
            results.update(values)
            protocols[result_name(metric)] = metric.protocol()
    return results, protocols


# --------------------------------------------------------------------------- genframe eval


def _metric_components(system, names: list[str] | None, n: int | None, reference: str | None,
                       registry: Registry) -> list[Metric]:
    """The metrics to run: the spec's when none are named; named ones take the spec's settings if it has them."""
    from .build import instantiate

    configured = {m.type_name: m for m in system.evaluation.metrics}
    if not names:
        chosen = list(system.evaluation.metrics) or [instantiate("metric", {"type": "fid"}, "--metrics",
                                                                 "genframe eval", registry)]
    else:
        chosen = []
        for name in names:
            type_name = METRIC_ALIASES.get(name, name)
            if type_name not in registry.names("metric"):
                known = ", ".join([*METRIC_ALIASES, *registry.names("metric")])
                raise GenframeError(f"--metrics: unknown metric {name!r}; known: {known}")
            chosen.append(configured.get(type_name) or
                          instantiate("metric", {"type": type_name}, "--metrics", "genframe eval", registry))
    for metric in chosen:
        if n is not None:
            if not hasattr(metric, "n"):
                raise GenframeError(f"--n: metric {metric.type_name!r} has no sample count to set")
            metric.n = n
        if reference is not None and reference.endswith(STATS_SUFFIXES):
            if hasattr(metric, "reference"):
                metric.reference = reference
            elif getattr(metric, "uses_real_images", True):
                raise GenframeError(f"--reference {reference}: a statistics file serves fid only; "
                                    f"{metric.type_name} needs real images (name a split or leave --reference out)")
    return chosen


def _reference_data(system, reference: str | None, registry: Registry):
    """The data component whose images are the reference: the run's own, or another split of it."""
    from .build import instantiate

    if reference is None:
        return system.data
    config = system.data.config()
    fields = {f.name: f for f in attrs.fields(type(system.data))}
    if "split" not in fields:
        raise GenframeError(f"--reference {reference}: data type {system.data.type_name!r} has no splits; "
                            "give a statistics file (.pt or .npz) or leave --reference out")
    choices = typing.get_args(fields["split"].type)
    if choices and reference not in choices:
        raise GenframeError(f"--reference {reference}: data type {system.data.type_name!r} has splits "
                            f"{', '.join(map(str, choices))}; or give a statistics file (.pt or .npz)")
    config["split"] = reference
    return instantiate("dataset", config, "--reference", "genframe eval", registry)


def _evaluated_position(system, storage, which: str) -> tuple[str, int]:
    """(stage name, step) of the checkpoint evaluated, as training logged it."""
    payload = storage.load_checkpoint(which)
    index, step = payload["stage"], payload["step"]
    if step == 0 and index > 0:  # a stage boundary: the end of the previous stage
        name = system.stages[index - 1].name
        steps = [r["step"] for r in storage.read_log() if r.get("stage") == name and "event" not in r]
        return name, max(steps, default=0)
    return system.stages[min(index, len(system.stages) - 1)].name, step


def evaluate_run(run_url: str, *, metrics: list[str] | None = None, n: int | None = None,
                 reference: str | None = None, device: str | None = None, checkpoint: str = "last",
                 registry: Registry | None = None) -> dict:
    """Evaluate a run's checkpoint and append the results with their protocol to its metrics.jsonl.

    ``reference`` is a split of the run's data set (e.g. ``test``) or a statistics file (``.pt``/
    ``.npz``, FID only); by default the run's own data are the reference. Returns the logged record.
    """
    from .engine import Sampler, load_trained
    from .storage import RunStorage

    registry = registry or get_registry()
    if n is not None and n < 2:
        raise GenframeError(f"--n {n}: metrics need at least 2 generated images")
    system, dev = load_trained(run_url, device=device, registry=registry, checkpoint=checkpoint)
    storage = RunStorage.open(run_url)
    chosen = _metric_components(system, metrics, n, reference, registry)
    uses_stats = reference is not None and reference.endswith(STATS_SUFFIXES)
    real = None
    reference_record: dict[str, Any] = {"stats": reference} if uses_stats else {}
    if not uses_stats:
        data = _reference_data(system, reference, registry)
        real, _ = data.load()
        reference_record = {"data": data.config()}
    results, protocols = compute_metrics(chosen, Sampler(system, dev), real, dev)
    stage, step = _evaluated_position(system, storage, checkpoint)
    record = {"stage": stage, "step": step, "event": "evaluation", **results, "protocol": protocols,
              "eval": {"checkpoint": checkpoint, "reference": reference_record,
                       "time": datetime.now().isoformat(timespec="seconds")}}
    storage.log(record)
    return record
