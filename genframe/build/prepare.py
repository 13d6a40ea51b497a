"""A built system made real on a device: data loaded (or its recorded shape), components sized and placed.

Shared by training and by every command that loads a trained run, so that both see the same system.
"""

from __future__ import annotations

import attrs
import torch

from genframe.build.context import BuildContext
from genframe.build.sampler import Sampler
from genframe.build.system import System, check_sizes_after_setup
from genframe.components.roles import ModuleComponent
from genframe.errors import GenframeError
from genframe.ops import distributed


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; explicit devices are checked before any work starts."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise GenframeError(f"device: {name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise GenframeError(f"device: {name!r} requested but CUDA is not available; use device: cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise GenframeError(f"device: {name!r} requested but only {torch.cuda.device_count()} CUDA "
                                "device(s) are visible")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise GenframeError(f"device: {name!r} requested but MPS is not available; use device: cpu or auto")
    return device


def prepare(system: System, device: torch.device, *, load_data: bool = True,
            data_shape: dict | None = None) -> BuildContext:
    """Load the data (or take its recorded shape) and let every component size itself."""
    images = labels = None
    if load_data:
        images, labels = system.data.load()
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise GenframeError(f"data: {system.data.type_name} returned {tuple(images.shape)} {images.dtype}; "
                                "datasets must return uint8 (N, C, H, W)")
        if images.shape[0] == 0:
            raise GenframeError(f"data: {system.data.type_name} found no images in {system.data.config()}; "
                                "check its root, split and limit")
        if images.shape[-1] != images.shape[-2]:
            raise GenframeError(f"data: images are {images.shape[-2]}x{images.shape[-1]}; genframe trains on "
                                "square images (set image_size)")
        shape = {"num_examples": images.shape[0], "channels": images.shape[1], "image_size": images.shape[2],
                 "num_classes": int(labels.max()) + 1 if labels is not None and labels.numel() else None,
                 "class_names": system.data.class_names() if labels is not None else None}
        images = place_images(images, device, system.data_placement)
        labels = labels.to(device) if labels is not None else None
    elif data_shape is not None:
        shape = data_shape
    else:
        raise GenframeError("either load the data or pass its recorded shape")
    ctx = BuildContext(device=device, seed=system.seed, images=images, labels=labels,
                       channels_last=system.channels_last, **shape)
    # Under precision: fp64 the default dtype is float64 (genframe.ops.precision); tensors a component
    # made when it was constructed, before that scope began, are widened to it here.
    widen = torch.get_default_dtype() == torch.float64
    for comp in system.components.values():
        comp.setup(ctx)
        if isinstance(comp, ModuleComponent):
            comp.to(device, memory_format=torch.channels_last if system.channels_last else torch.preserve_format)
            if widen:
                comp.to(torch.float64)
            distributed.convert_batch_norm(comp, device)  # under torchrun: statistics of the global batch
    check_sizes_after_setup(system)
    for stage in system.stages:
        stage.trainer.prepare_components(system.components)  # before any checkpoint is loaded
    check_image_shape(system, ctx)
    return ctx


#: Share of the device's free memory that ``data_placement: auto`` lets the images take.
DEVICE_DATA_SHARE = 0.25


def place_images(images: torch.Tensor, device: torch.device, placement: str) -> torch.Tensor:
    """The uint8 images where training reads them: on the device, or pinned in host memory."""
    if device.type != "cuda":
        return images.to(device)  # the CPU (and MPS's unified memory) have nothing to stream from
    if placement == "auto":
        free, _ = torch.cuda.mem_get_info(device)
        placement = "device" if images.numel() * images.element_size() <= DEVICE_DATA_SHARE * free else "host"
    return images.to(device) if placement == "device" else images.pin_memory()


def compile_components(system: System) -> list[str]:
    """``torch.compile`` the network components in place, as the spec's ``compile`` asks.

    In place (``Module.compile``), so parameter names and checkpoints stay those of eager runs.
    Components a trainer differentiates twice stay eager. Returns the names compiled.
    """
    if not system.compile:
        return []
    options = {} if system.compile is True else attrs.asdict(system.compile)
    eager = set().union(*(stage.trainer.eager_components(system.components) for stage in system.stages))
    compiled = []
    for name, comp in system.components.items():
        if isinstance(comp, ModuleComponent) and name not in eager and any(True for _ in comp.parameters()):
            comp.compile(**options)
            compiled.append(name)
    return compiled


def check_image_shape(system: System, ctx: BuildContext) -> None:
    """A generator that cannot produce the data's images fails here, not deep inside a loss."""
    probe = None if ctx.device.type == "meta" else torch.Generator(device=ctx.device).manual_seed(0)
    produced = tuple(Sampler(system, ctx.device)(2, probe).shape[1:])
    expected = (ctx.channels, ctx.image_size, ctx.image_size)
    if produced != expected:
        raise GenframeError(f"{system.source}: components.{system.sampler[-1]}: produces images of shape "
                            f"{produced} (C, H, W) but the data are {expected}; match channels/image_size "
                            "to the data or leave them out to take the data's")


def restore_components(system: System, checkpoint: dict) -> None:
    """Load the checkpoint's weights; a reused run's checkpoint holds only the components it shares."""
    for name, comp in system.components.items():
        if isinstance(comp, ModuleComponent) and name in checkpoint["components"]:
            comp.load_state_dict(checkpoint["components"][name])
