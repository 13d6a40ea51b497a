"""Spec-form defaults shared by the built-in trainers."""

from __future__ import annotations

from typing import Any


def adam_defaults(lr: float, betas: tuple[float, float], **extra: Any):
    """A default optimiser in spec form (built like any spec value), for trainer fields."""
    return lambda: {"type": "adam", "lr": lr, "betas": list(betas), **extra}
