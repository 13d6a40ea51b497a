"""A finished (or checkpointed) run folder loaded back into a system with its weights, without its data."""

from __future__ import annotations

import torch

from genframe.build.prepare import prepare, resolve_device, restore_components
from genframe.build.system import System, build
from genframe.components.registry import Registry, get_registry
from genframe.errors import GenframeError
from genframe.spec.load import validate
from genframe.storage import RunStorage


def load_trained(run_url: str, *, device: str | None = None, registry: Registry | None = None,
                 checkpoint: str = "last") -> tuple[System, torch.device]:
    """Rebuild a run's system from its folder and load its weights (``last`` or ``best``; no data needed).

    ``run_url`` may also be a folder written by ``genframe export``: its ``model.safetensors``."""
    registry = registry or get_registry()
    storage = RunStorage.open(run_url)
    spec = storage.read_spec()
    source = f"{run_url}/spec.yaml"
    validate(spec, source, registry)
    system = build(spec, source, registry)
    dev = resolve_device(device or ("cpu" if system.device == "auto" and not torch.cuda.is_available()
                                    else system.device))
    state = storage.load_checkpoint(checkpoint)
    if state is None and checkpoint == "last":
        state = storage.load_exported()  # a folder written by genframe export
    if state is None:
        raise GenframeError(f"{run_url}: no checkpoint yet; nothing to sample from")
    prepare(system, dev, load_data=False, data_shape=storage.data_shape())
    restore_components(system, state)
    return system, dev
