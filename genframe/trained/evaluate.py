"""``genframe eval``: measure a trained run's checkpoint and log the results, with their protocol.

``evaluate_run`` rebuilds a finished run, picks the reference images (the run's data, another
split of it, or a statistics file), computes the metrics and appends them, with their protocol,
to the run's ``metrics.jsonl``.
"""

from __future__ import annotations

import typing
from datetime import datetime
from typing import Any

import attrs

from genframe.build.sampler import Sampler
from genframe.build.system import instantiate
from genframe.components.registry import Registry, get_registry
from genframe.components.roles import Metric
from genframe.errors import GenframeError
from genframe.evaluation.metrics import compute_metrics
from genframe.storage import RunStorage
from genframe.trained.loading import load_trained

#: Suffixes of statistics files accepted where a reference split could also be named.
STATS_SUFFIXES = (".pt", ".npz")


def _metric_components(system, names: list[str] | None, n: int | None, reference: str | None,
                       registry: Registry, features: str | None = None) -> list[Metric]:
    """The metrics to run: the spec's when none are named; named ones take the spec's settings if it has them."""
    configured = {m.type_name: m for m in system.evaluation.metrics}
    if not names:
        defaults = [name for name in registry.names("metric") if registry.get("metric", name).evaluated_by_default]
        names = [] if system.evaluation.metrics else defaults
        chosen = list(system.evaluation.metrics)
        if not chosen and not names:
            raise GenframeError("--metrics: the spec names no metric and no installed metric is evaluated by "
                                f"default; name one of {', '.join(registry.names('metric'))}")
    else:
        chosen = []
    aliases = {alias: name for name in registry.names("metric") for alias in registry.get("metric", name).aliases}
    for name in names:
        type_name = aliases.get(name, name)
        if type_name not in registry.names("metric"):
            known = ", ".join([*aliases, *registry.names("metric")])
            raise GenframeError(f"--metrics: unknown metric {name!r}; known: {known}")
        chosen.append(configured.get(type_name) or
                      instantiate("metric", {"type": type_name}, "--metrics", "genframe eval", registry))
    for metric in chosen:
        if features is not None:
            if "features" not in {f.name for f in attrs.fields(type(metric))}:
                raise GenframeError(f"--features {features}: metric {metric.type_name!r} measures no features")
            if features not in registry.names("feature_extractor"):
                raise GenframeError(f"--features {features}: unknown feature extractor; known: "
                                    f"{', '.join(registry.names('feature_extractor'))}")
            metric.features = instantiate("feature_extractor", {"type": features}, "--features", "genframe eval",
                                          registry)
        if n is not None:
            metric.set_sample_count(n)
        if reference is not None and reference.endswith(STATS_SUFFIXES):
            if metric.reads_statistics_files:
                metric.set_reference_statistics(reference)
            elif metric.uses_real_images:
                readers = " and ".join(name for name in registry.names("metric")
                                       if registry.get("metric", name).reads_statistics_files) or "no metric"
                raise GenframeError(f"--reference {reference}: a statistics file serves {readers} only; "
                                    f"{metric.type_name} needs real images (name a split or leave --reference out)")
    return chosen


def _reference_data(system, reference: str | None, registry: Registry):
    """The data component whose images are the reference: the spec's ``evaluation.data`` or the run's
    own data, or another split of that."""
    data = system.evaluation.data or system.data
    if reference is None:
        return data
    config = data.config()
    fields = {f.name: f for f in attrs.fields(type(data))}
    if "split" not in fields:
        raise GenframeError(f"--reference {reference}: data type {data.type_name!r} has no splits; "
                            "give a statistics file (.pt or .npz) or leave --reference out")
    choices = typing.get_args(fields["split"].type)
    if choices and reference not in choices:
        raise GenframeError(f"--reference {reference}: data type {data.type_name!r} has splits "
                            f"{', '.join(map(str, choices))}; or give a statistics file (.pt or .npz)")
    config["split"] = reference
    return instantiate("dataset", config, "--reference", "genframe eval", registry)


def _evaluated_position(system, storage, which: str) -> tuple[str, int]:
    """(stage name, step) of the checkpoint evaluated, as training logged it."""
    payload = storage.load_checkpoint(which)
    if payload is None:  # an exported folder: its weights are the end of its training log
        trained = [r for r in storage.read_log() if "event" not in r]
        return (trained[-1]["stage"], trained[-1]["step"]) if trained else (system.stages[-1].name, 0)
    index, step = payload["stage"], payload["step"]
    if step == 0 and index > 0:  # a stage boundary: the end of the previous stage
        name = system.stages[index - 1].name
        steps = [r["step"] for r in storage.read_log() if r.get("stage") == name and "event" not in r]
        return name, max(steps, default=0)
    return system.stages[min(index, len(system.stages) - 1)].name, step


def evaluate_run(run_url: str, *, metrics: list[str] | None = None, n: int | None = None,
                 reference: str | None = None, device: str | None = None, checkpoint: str = "last",
                 features: str | None = None, registry: Registry | None = None) -> dict:
    """Evaluate a run's checkpoint and append the results with their protocol to its metrics.jsonl.

    ``reference`` is a split of the run's data set (e.g. ``test``) or a statistics file (``.pt``/
    ``.npz``, FID only); by default the spec's evaluation data, else the run's own data, are the
    reference. ``features`` names the feature extractor every metric measures with (``classifier``:
    offline, learnt from the reference's labels). Returns the logged record.
    """
    registry = registry or get_registry()
    if n is not None and n < 2:
        raise GenframeError(f"--n {n}: metrics need at least 2 generated images")
    system, dev = load_trained(run_url, device=device, registry=registry, checkpoint=checkpoint)
    storage = RunStorage.open(run_url)
    chosen = _metric_components(system, metrics, n, reference, registry, features)
    uses_stats = reference is not None and reference.endswith(STATS_SUFFIXES)
    real = labels = None
    reference_record: dict[str, Any] = {"stats": reference} if uses_stats else {}
    if not uses_stats:
        data = _reference_data(system, reference, registry)
        real, labels = data.load()
        reference_record = {"data": data.config()}
    results, protocols = compute_metrics(chosen, Sampler(system, dev), real, dev, labels)
    stage, step = _evaluated_position(system, storage, checkpoint)
    record = {"stage": stage, "step": step, "event": "evaluation", **results, "protocol": protocols,
              "eval": {"checkpoint": checkpoint, "reference": reference_record,
                       "time": datetime.now().isoformat(timespec="seconds")}}
    storage.log(record)
    return record
