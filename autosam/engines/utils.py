"""Small helpers that the bundle configs call: the bundle folder, checkpoints, output transforms."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["as_bool", "default_bundle_root", "latest_checkpoint", "from_engine_thresholded"]

_TRUE_WORDS = ("true", "1", "yes", "on")
_FALSE_WORDS = ("false", "0", "no", "off", "none", "null", "")


def as_bool(value: Any) -> bool:
    """Return a config flag as bool; the command line gives `--flag false` as the string "false"."""
    if isinstance(value, bool) or value is None:
        return bool(value)
    text = str(value).strip().lower()
    if text in _TRUE_WORDS:
        return True
    if text in _FALSE_WORDS:
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def default_bundle_root() -> str:
    """Return the `bundle/` folder of the autosam checkout, so configs run from any working directory.

    `AUTOSAM_BUNDLE_ROOT` takes precedence. Without it, the folder beside the installed package
    (an editable install) is used when it contains `configs/metadata.json`, else the current
    working directory, as model-zoo bundles assume.
    """
    from_environment = os.environ.get("AUTOSAM_BUNDLE_ROOT")
    if from_environment:
        return str(Path(from_environment).resolve())
    checkout_bundle = Path(__file__).resolve().parents[2] / "bundle"
    if (checkout_bundle / "configs" / "metadata.json").is_file():
        return str(checkout_bundle)
    return str(Path.cwd())


def latest_checkpoint(ckpt_dir: str | os.PathLike, prefix: str = "checkpoint") -> str | None:
    """Return the checkpoint file of the highest epoch in `ckpt_dir` written by `CheckpointSaver`, or None."""
    folder = Path(ckpt_dir)
    if not folder.is_dir():
        return None
    pattern = re.compile(rf"^{re.escape(prefix)}_epoch=(\d+)\.pt$")
    found = [(int(match.group(1)), path) for path in folder.iterdir() if (match := pattern.match(path.name))]
    if not found:
        return None
    return str(max(found)[1])


def from_engine_thresholded(
    keys: Sequence[str] = ("pred", "label"), threshold: float = 0.5
) -> Callable[[Any], tuple[list[torch.Tensor], ...]]:
    """Return an output transform like MONAI's `from_engine` that binarises the first key at `threshold`.

    Validation keeps probabilities in `pred` for the SUN-SEG curves; MONAI's Dice and IoU metrics
    read the same output through this transform as binary masks.
    """

    def _transform(output: Any) -> tuple[list[torch.Tensor], ...]:
        items = output if isinstance(output, list) else [output]
        columns = [[item[key] for item in items] for key in keys]
        columns[0] = [(pred >= threshold).float() for pred in columns[0]]
        return tuple(columns)

    return _transform
