"""Kept where the user guide promised it: ``from genframe import applications as app``.

The code lives in :mod:`genframe.trained.applications` (what can be done with a trained run).
"""

from genframe.trained.applications import (Reconstruction, Restoration, Search, Trained, decode, interpolate, load,
                                           read_images, read_mask, reconstruct, restore)

__all__ = ["Reconstruction", "Restoration", "Search", "Trained", "decode", "interpolate", "load", "read_images",
           "read_mask", "reconstruct", "restore"]
