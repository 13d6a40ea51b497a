"""Optional packages (the extras of ``pip install 'genframe[...]'``): a feature that needs one says which."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from genframe.errors import GenframeError


def installed(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(module: str, extra: str, feature: str) -> ModuleType:
    """``module``, or one line saying which extra provides it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise GenframeError(f"{feature} needs {module.split('.')[0]}: pip install 'genframe[{extra}]'") from None
