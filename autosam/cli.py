"""Shared entry point of the fire command-line tools: logging set-up and readable errors."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import fire

__all__ = ["run_fire"]

logger = logging.getLogger(__name__)


def run_fire(component: Any, *, name: str) -> None:
    """Run `component` as a fire CLI named `name`; bad input exits with status 2 and one error line.

    `ValueError` and `OSError` carry messages that name the file or value and the fix, so they are
    printed without a traceback. Set AUTOSAM_DEBUG=1 to see the traceback as well.
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        fire.Fire(component, name=name)
    except (ValueError, OSError) as error:
        if os.environ.get("AUTOSAM_DEBUG"):
            raise
        print(f"{name}: error: {error}", file=sys.stderr)
        print(f"{name}: set AUTOSAM_DEBUG=1 to see the traceback", file=sys.stderr)
        sys.exit(2)
