"""Create a MONAI Label app folder that serves the autosam bundle.

`monailabel start_server --app DIR` imports `DIR/main.py` and writes `model/`, `logs/`, `bin/`
and `lib/` into DIR; training writes checkpoints into the bundle's `models/`. The app folder
therefore lives outside the source tree: `create_app_dir` writes a one-line `main.py` that imports
`autosam.monailabel.app.AutoSAMApp`, and copies the bundle to `DIR/model/<name>/` with its
`inference.json` and `train.json` merged with the given override files.

This module needs only MONAI, so it also runs outside the MONAI Label environment.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["MAIN_PY", "MERGED_CONFIGS", "create_app_dir", "merge_config_files", "set_label_name"]

logger = logging.getLogger(__name__)

MAIN_PY = '''"""MONAI Label app that serves the autosam bundle in model/; written by `python -m autosam.monailabel init-app`."""

from autosam.monailabel.app import AutoSAMApp  # noqa: F401  (MONAI Label looks up the MONAILabelApp subclass here)
'''

# The bundle files MONAI Label reads; each gets the override files merged in.
MERGED_CONFIGS = ("inference.json", "train.json")


def _set_nested(config: dict[str, Any], key: str, value: Any) -> bool:
    """Set `a#b#c` in a nested dict; return False (and set nothing) when a parent id is missing."""
    parts = key.split("#")
    node: Any = config
    for part in parts[:-1]:
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return False
    last = parts[-1]
    if isinstance(node, list):
        if not (last.isdigit() and int(last) < len(node)):
            return False
        node[int(last)] = value
    else:
        node[last] = value
    return True


def merge_config_files(base: str | os.PathLike, overrides: Sequence[str | os.PathLike]) -> dict[str, Any]:
    """Return the config of `base` with the ids of each override file set on it, in order.

    Override ids follow MONAI's `#` syntax (`train#trainer#max_epochs`). A nested id whose parent
    is missing in `base` is skipped, so one override file can serve both `inference.json` (which has
    no `train` section) and `train.json`; a top-level id is always set.
    """
    from monai.bundle import ConfigParser

    config = ConfigParser.load_config_file(str(base))
    for override in overrides:
        for key, value in ConfigParser.load_config_file(str(override)).items():
            if not _set_nested(config, key, value):
                logger.debug("override '%s' from '%s' does not apply to '%s'", key, override, base)
    return config


def set_label_name(metadata_file: str | os.PathLike, label: str) -> None:
    """Rename the foreground channel of the `pred` output in a bundle's `metadata.json`.

    MONAI Label takes the label names that clients show from this `channel_def`.
    """
    path = Path(metadata_file)
    metadata = json.loads(path.read_text())
    channel_def = metadata["network_data_format"]["outputs"]["pred"].setdefault("channel_def", {})
    channel_def["0"] = channel_def.get("0", "background")
    channel_def["1"] = label
    path.write_text(json.dumps(metadata, indent=4) + "\n")


def create_app_dir(
    app_dir: str | os.PathLike,
    *,
    bundle: str | os.PathLike,
    overrides: Sequence[str | os.PathLike] = (),
    checkpoint: str | os.PathLike | None = None,
    name: str = "autosam",
    label: str | None = None,
    force: bool = False,
) -> Path:
    """Write a MONAI Label app folder for the bundle and return the bundle copy inside it.

    Args:
        app_dir: the app folder to create (its `main.py` is what `--app` points at).
        bundle: the bundle folder (with `configs/metadata.json`, `inference.json`, `train.json`).
        overrides: JSON/YAML files whose ids replace the bundle's, e.g. a CPU demo configuration.
        checkpoint: a trained checkpoint to serve at once, copied to `models/model.pt`.
        name: the model name clients see, and the bundle folder name under `model/`.
        label: the name of the foreground label (channel 1 of `pred` in `metadata.json`), e.g.
            "liver"; None keeps the bundle's.
        force: replace an existing bundle copy of the same name (its `models/` is kept).
    """
    from monai.bundle import ConfigParser

    bundle = Path(bundle)
    configs = bundle / "configs"
    for required in ("metadata.json", *MERGED_CONFIGS):
        if not (configs / required).is_file():
            raise FileNotFoundError(
                f"bundle file '{configs / required}' not found; point --bundle at the autosam bundle folder"
            )
    for override in overrides:
        if not Path(override).is_file():
            raise FileNotFoundError(f"override file '{override}' not found")

    app_dir = Path(app_dir)
    target = app_dir / "model" / name
    if (target / "configs").exists():
        if not force:
            raise FileExistsError(
                f"'{target / 'configs'}' exists; pass force=True (--force) to replace the configs"
            )
        shutil.rmtree(target / "configs")
    app_dir.mkdir(parents=True, exist_ok=True)
    (app_dir / "main.py").write_text(MAIN_PY)

    # Copy everything but trained weights, which stay with the bundle they were trained in.
    shutil.copytree(
        bundle, target, ignore=shutil.ignore_patterns("models", "__pycache__"), dirs_exist_ok=True
    )
    (target / "models").mkdir(exist_ok=True)
    for config_name in MERGED_CONFIGS:
        merged = merge_config_files(configs / config_name, overrides)
        ConfigParser.export_config_file(merged, str(target / "configs" / config_name), fmt="json", indent=4)

    if label is not None:
        set_label_name(target / "configs" / "metadata.json", label)
    if checkpoint is not None:
        shutil.copy2(checkpoint, target / "models" / "model.pt")
    logger.info("MONAI Label app written to '%s' with bundle '%s' as model '%s'", app_dir, bundle, name)
    return target
