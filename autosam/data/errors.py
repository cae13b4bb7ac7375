"""The error raised for a data item that cannot be used, and the warning-once helper."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["InvalidItemError", "ItemProblems", "warn_once"]

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


@dataclass
class ItemProblems:
    """Problems found while building a datalist; raised at once, or logged and counted when skipping."""

    skip_invalid: bool = False
    skipped: list[dict[str, str]] = field(default_factory=list)

    def report(self, path: Path | str, problem: str) -> None:
        """Raise `InvalidItemError(problem)`, or record `path` as skipped with a warning when skipping."""
        if not self.skip_invalid:
            raise InvalidItemError(problem)
        logger.warning("skipping '%s': %s", path, problem)
        self.skipped.append({"file": str(path), "problem": problem})
