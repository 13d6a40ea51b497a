"""What components see when they are set up: the data's shape, the device, the images."""

from __future__ import annotations

import attrs
import torch


@attrs.define
class BuildContext:
    """Data facts components size themselves by. ``images`` is None when only sampling."""

    num_examples: int
    channels: int
    image_size: int
    device: torch.device
    seed: int = 0
    images: torch.Tensor | None = None  # uint8 (N, C, H, W) on ``device``, or pinned in host memory (streamed)
    labels: torch.Tensor | None = None  # int64 (N,) on ``device``, for class-conditional models
    num_classes: int | None = None  # classes in the labels (recorded, so sampling needs no data)
    class_names: list[str] | None = None  # names of the labels 0, 1, ... when the data set has them
    channels_last: bool = False  # training batches in NHWC memory order (the spec's channels_last)
