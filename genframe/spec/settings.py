"""The top-level settings of a spec: everything besides its data, components, stages and sampler.

Declared once, as attrs fields with their type, default, bounds and help, like a component's
parameters: the spec schema, the defaults the build fills in, the attributes of a built
``System`` and what a recorded ``spec.yaml`` writes are all read from :class:`Settings`.
"""

from __future__ import annotations

import typing
from typing import Any, Callable, Literal

import attrs

from genframe.components.params import field_schema, param
from genframe.components.roles import Component, Dataset, Metric

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
DEVICE_PATTERN = r"^(auto|cpu|mps|cuda(:[0-9]+)?)$"


@attrs.define(kw_only=True)
class Evaluation:
    every: int | None = param(None, ge=1, help="Steps between evaluations (also at the end of each stage).")
    n_samples: int = param(64, ge=1, help="Images in each sample grid.")
    metrics: list[Metric] = param(factory=list, help="Metrics computed at each evaluation.")
    data: Dataset | dict[str, Any] | None = param(
        None, help="The real images (and labels) metrics compare with; default: the training data. A data set "
                   "with a type, or changes to the run's data without one: {limit: null} is the whole data set "
                   "when training on a subset, whatever data.type is.")


@attrs.define(kw_only=True)
class CompileOptions:
    """Keyword arguments of ``torch.compile``."""

    backend: str = param("inductor", help="a torch.compile backend (inductor, aot_eager, ...)")
    mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = \
        param("default", help="a torch.compile mode")


@attrs.define(kw_only=True)
class BestCheckpoint:
    # mode first: the order a recorded spec.yaml has always written them in
    mode: Literal["min", "max"] = param("min", help="min: lower values are better; max: higher ones")
    metric: str = param(help="a value reported by an evaluation")


@attrs.define(kw_only=True)
class NonFinite:
    action: Literal["stop", "rollback"] = param("stop", help="stop with a message, or return to the last checkpoint")
    lr_factor: float = param(0.5, gt=0, lt=1, help="learning rates are multiplied by this at each rollback")
    retries: int = param(3, ge=1, help="rollbacks before the run stops")


@attrs.define(kw_only=True)
class Settings:
    """Every top-level setting of a spec, in the order a recorded ``spec.yaml`` writes them."""

    name: str = param(pattern=NAME_PATTERN, help="Run name; the default run folder is runs/<name>-<timestamp>.")
    seed: int = param(0, ge=0, help="Seeds every random number generator of the run.")
    device: str = param("auto", pattern=DEVICE_PATTERN, help="auto, cpu, cuda, cuda:N or mps")
    precision: Literal["fp32", "tf32", "bf16", "fp64"] = param(
        "fp32", help="fp32; tf32 (CUDA matmuls and convolutions in TF32); bf16 (autocast of training steps; "
                     "penalties keep float32 norms); fp64 (parameters, batches, noise and losses in float64: "
                     "reference runs that agree across machines and thread counts; slow, not on MPS)")
    compile: bool | CompileOptions = param(
        False, help="torch.compile the network components for training: true, or backend/mode options. "
                    "Critics that a penalty differentiates twice stay eager.")
    cuda_graphs: bool | Literal["emulate"] = param(
        False, help="true: capture one whole training step (optimiser included) in a CUDA graph and replay it "
                    "every step, which removes the per-kernel launch cost of small models; no effect on the CPU. "
                    "emulate: replay recorded operations on any device, slowly, to check that a trainer is "
                    "replay-safe")
    channels_last: bool = param(
        False, help="convolution weights and image batches in channels-last (NHWC) memory order, which "
                    "tensor-core convolutions prefer on CUDA; measure before keeping it")
    data_placement: Literal["auto", "device", "host"] = param(
        "auto", help="device: the uint8 images live on the device and batches are gathered there; host: they "
                     "stay in pinned host memory and each batch is copied asynchronously (data sets larger than "
                     "the device's memory); auto: device when they take at most a quarter of its free memory")
    evaluation: Evaluation = param(factory=Evaluation, help="When generated images are evaluated, and how.")
    log_every: int = param(50, ge=1, help="Steps between log records (the mean losses since the last).")
    checkpoint_every: int = param(1000, ge=1, help="Steps between checkpoints (also at the end of each stage).")
    keep_checkpoints: int = param(3, ge=1, help="Newest checkpoints kept (the best one is kept as well).")
    trackers: list[str] = param(
        factory=list, help="Experiment trackers the run logs to: mlflow, wandb (each an extra: pip install "
                           "'genframe[mlflow]'), or a plugin's. Each also turns on with its own environment "
                           "variables (MLFLOW_TRACKING_URI, WANDB_PROJECT), never by being installed.")
    best_checkpoint: BestCheckpoint | None = param(
        None, help="Keep the checkpoint with the best value of this evaluation metric.")
    nonfinite: NonFinite = param(factory=NonFinite, help="What to do when a loss becomes NaN or infinite.")

    @classmethod
    def from_spec(cls, spec: dict) -> Settings:
        """The settings of validated spec data, defaults filled in; nested mappings become their classes.

        Components in settings (``evaluation.metrics``) are the build's to create: give them created.
        """
        return _structure(cls, spec)

    def spec_data(self) -> dict[str, Any]:
        """Every setting as plain spec data, defaults included; components as their configuration."""
        return {f.name: _data(getattr(self, f.name)) for f in attrs.fields(Settings)}


for _cls in (Evaluation, CompileOptions, BestCheckpoint, NonFinite, Settings):
    attrs.resolve_types(_cls)


def property_schemas(component_schema: Callable[[type], dict]) -> dict[str, dict]:
    """The JSON Schema of each setting: the spec schema's top-level properties besides the structure."""
    return {f.name: _nullable_as_type_list(field_schema(f, component_schema)) for f in attrs.fields(Settings)}


def in_spec_order(settings: dict[str, Any], structure: dict[str, Any]) -> dict[str, Any]:
    """A spec's fields in one order, that of the schema and of a recorded spec.yaml: the structure
    (data, components, stages, sampler) sits before ``evaluation``."""
    out: dict[str, Any] = {}
    for name, value in settings.items():
        if name == "evaluation":
            out.update(structure)
        out[name] = value
    return out


def _nullable_as_type_list(schema: dict) -> dict:
    """``X | None`` as ``type: [x, null]`` rather than ``anyOf``, inside nested mappings too: errors
    then say "expected integer or null", as they always have for these settings."""
    alternatives = schema.get("anyOf", [])
    if len(alternatives) == 2 and alternatives[1] == {"type": "null"} and isinstance(alternatives[0].get("type"), str):
        first = alternatives[0]
        schema = {**first, "type": [first["type"], "null"], **{k: v for k, v in schema.items() if k != "anyOf"}}
    if "properties" in schema:
        schema["properties"] = {k: _nullable_as_type_list(v) for k, v in schema["properties"].items()}
    return schema


def _record(tp: Any) -> type | None:
    """The plain attrs class among the alternatives of a field's type, if any."""
    for alternative in typing.get_args(tp) or (tp,):
        if isinstance(alternative, type) and attrs.has(alternative) and not issubclass(alternative, Component):
            return alternative
    return None


def _structure(cls: type, data: dict) -> Any:
    kwargs = {}
    for f in attrs.fields(cls):
        if f.name in data:
            value = data[f.name]
            record = _record(f.type) if isinstance(value, dict) else None
            kwargs[f.name] = _structure(record, value) if record else value
    return cls(**kwargs)


def _data(value: Any) -> Any:
    if isinstance(value, Component):
        return value.config()
    if attrs.has(type(value)):
        return {f.name: _data(getattr(value, f.name)) for f in attrs.fields(type(value))}
    if isinstance(value, list):
        return [_data(v) for v in value]
    return value
