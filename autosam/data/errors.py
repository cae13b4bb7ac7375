"""The error raised for a data item that cannot be used, and the warning-once helper."""

from __future__ import annotations

import logging
import threading

__all__ = ["InvalidItemError", "warn_once"]

logger = logging.getLogger(__name__)

_warned: set[tuple[str, str]] = set()
_warned_lock = threading.Lock()


class InvalidItemError(ValueError):
    """A file or data item that cannot be loaded as it is: the message names the file, the problem and the fix."""


def warn_once(kind: str, path: str, message: str) -> None:
    """Log `message` as a warning the first time a (`kind`, `path`) pair is seen in this process.

    Masks and images pass through the deterministic transforms once per epoch when nothing is
    cached, so a warning about a file would otherwise repeat every epoch.
    """
    key = (kind, str(path))
    with _warned_lock:
        if key in _warned:
            return
        _warned.add(key)
    logger.warning(message)
