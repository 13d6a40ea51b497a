"""genframe's warnings and notes go through logging, on the logger ``genframe``.

By default they are printed to standard error as ``genframe: warning: ...``, as the command line
shows them. An application filters them with the logger's level
(``logging.getLogger("genframe").setLevel(logging.ERROR)``) and routes them by replacing the
handler, or by ``logger.propagate = True`` after removing it, so that its own root handlers
receive them: the default handler does not propagate, so they are not printed twice.
"""

from __future__ import annotations

import logging
import sys

logger = logging.getLogger("genframe")


class StandardErrorHandler(logging.Handler):
    """``genframe: <level>: <message>`` on the standard error of the moment (test captures included)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            print(f"genframe: {record.levelname.lower()}: {record.getMessage()}", file=sys.stderr)
        except Exception:  # a closed stream must not end a run
            self.handleError(record)


if not any(isinstance(h, StandardErrorHandler) for h in logger.handlers):
    logger.addHandler(StandardErrorHandler())
    logger.setLevel(logging.INFO)
    logger.propagate = False


def warning(message: str) -> None:
    logger.warning(message)


def note(message: str) -> None:
    logger.info(message)
