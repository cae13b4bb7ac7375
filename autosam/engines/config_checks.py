"""Checks that a bundle configuration can run, made before any network is built or any epoch starts.

The bundle configs call `check_bundle_config` from their `initialize` section. Each failure raises
a `ConfigError` that names the config id, the value and the fix, so a wrong path or name stops the
run within seconds instead of after the first epoch.
"""

from __future__ import annotations

import logging
import os
import pickle
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from autosam.networks.sam_checkpoint import guess_sam_model_type

__all__ = [
    "ConfigError",
    "check_bundle_config",
    "check_dataset_dir",
    "check_datalist",
    "check_encoder_name",
    "check_sam_checkpoint",
    "check_no_spatial_augmentation",
    "SAM_MODEL_TYPES",
]

logger = logging.getLogger(__name__)

SAM_MODEL_TYPES = ("vit_b", "vit_l", "vit_h", "tiny")

# Name fragments of MONAI transforms that move pixels; the cached SAM embedding would no longer
# match an image changed by any of them.
_SPATIAL_TRANSFORM_WORDS = (
    "Flip",
    "Rotate",
    "Rotate90",
    "Zoom",
    "Affine",
    "Elastic",
    "Crop",
    "Spatial",
    "Resize",
    "Grid",
)


class ConfigError(ValueError):
    """A bundle configuration value that cannot work, with the fix in the message."""


def check_sam_checkpoint(sam_model_type: str, sam_checkpoint: str | os.PathLike | None) -> None:
    """Check the SAM model type and that its checkpoint exists and was saved from that model type."""
    if sam_model_type not in SAM_MODEL_TYPES:
        raise ConfigError(
            f"sam_model_type '{sam_model_type}' is unknown; choose one of {', '.join(SAM_MODEL_TYPES)}"
        )
    if sam_checkpoint in (None, ""):
        if sam_model_type != "tiny":
            raise ConfigError(
                f"sam_checkpoint is not set for sam_model_type '{sam_model_type}'; download Meta's official "
                f"{sam_model_type} checkpoint (see docs/training.md) and pass --sam_checkpoint /path/to/sam_"
                f"{sam_model_type}_*.pth, or choose --sam_model_type tiny for a randomly initialised test SAM"
            )
        return

    path = Path(sam_checkpoint)
    if not path.is_file():
        raise ConfigError(
            f"sam_checkpoint '{path}' not found; pass the path of a {sam_model_type} checkpoint file "
            "(for example sam_vit_b_01ec64.pth) or choose --sam_model_type tiny"
        )
    try:
        # mmap avoids reading a multi-GB file only to look at one tensor's shape.
        state_dict = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (RuntimeError, EOFError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as error:
        raise ConfigError(
            f"sam_checkpoint '{path}' cannot be read ({error}); the file is corrupt or truncated, download it again"
        ) from error

    if isinstance(state_dict, Mapping) and isinstance(state_dict.get("model"), Mapping):
        state_dict = state_dict["model"]
    found_type = guess_sam_model_type(state_dict) if isinstance(state_dict, Mapping) else None
    if found_type is None:
        raise ConfigError(
            f"sam_checkpoint '{path}' is not a SAM checkpoint of a known model type (no image encoder patch "
            "embedding of width 64, 768, 1024 or 1280); pass one of Meta's sam_vit_*.pth files"
        )
    if found_type != sam_model_type:
        raise ConfigError(
            f"sam_checkpoint '{path}' was saved from a {found_type} SAM but sam_model_type is "
            f"'{sam_model_type}'; set --sam_model_type {found_type} or pass a {sam_model_type} checkpoint"
        )


def check_encoder_name(encoder_name: str) -> None:
    """Check that g's backbone is HarDNet-85 or a timm model that can return feature maps."""
    if encoder_name == "hardnet85":
        return
    import timm

    if encoder_name not in timm.list_models():
        close = timm.list_models(f"*{encoder_name.split('_')[0]}*")[:8]
        suggestion = f" (similar timm names: {', '.join(close)})" if close else ""
        raise ConfigError(
            f"encoder_name '{encoder_name}' is neither 'hardnet85' nor a timm model{suggestion}; "
            "pick a name from timm.list_models(), for example 'resnet34'"
        )


def check_dataset_dir(dataset_dir: str | os.PathLike | None) -> Path:
    """Check that the dataset folder exists and contains files; return it resolved."""
    if dataset_dir in (None, ""):
        raise ConfigError("dataset_dir is not set; pass --dataset_dir /path/to/data")
    path = Path(dataset_dir).expanduser().resolve()
    if not path.is_dir():
        raise ConfigError(
            f"dataset_dir '{path}' is not a folder; pass --dataset_dir with the folder of your data"
        )
    if not any(entry.is_file() for entry in path.rglob("*")):
        raise ConfigError(
            f"dataset_dir '{path}' contains no files; copy the data into it or pass another --dataset_dir"
        )
    return path


def check_datalist(datalist: Mapping[str, Any], splits: Sequence[str] = ("training", "validation")) -> None:
    """Check that each split named in `splits` exists in the datalist and is not empty."""
    for split in splits:
        items = datalist.get(split)
        if not items:
            available = ", ".join(
                f"{key} ({len(value)})" for key, value in datalist.items() if isinstance(value, list)
            )
            hint = (
                "model selection uses the validation split only; rebuild the datalist with a validation "
                "fraction (python -m autosam.data datalist ... --val_fraction 0.2)"
                if split == "validation"
                else "rebuild the datalist or choose another split"
            )
            raise ConfigError(
                f"the datalist has no '{split}' items (splits found: {available or 'none'}); {hint}"
            )


def check_no_spatial_augmentation(transforms: Iterable[Any]) -> None:
    """Check that none of the random transforms moves pixels (needed when embeddings are cached)."""
    for transform in transforms:
        name = type(transform).__name__
        if any(word in name for word in _SPATIAL_TRANSFORM_WORDS):
            raise ConfigError(
                f"random transform {name} changes the geometry of the image, but cached SAM embeddings were "
                "computed from the unaugmented image; set --cache_embeddings false to train with spatial "
                "augmentation, or keep only colour augmentation"
            )


def _check_positive(values: Mapping[str, Any]) -> None:
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ConfigError(f"{name} must be a positive number, got {value!r}")


def check_bundle_config(
    *,
    sam_model_type: str | None = None,
    sam_checkpoint: str | os.PathLike | None = None,
    encoder_name: str | None = None,
    dataset_dir: str | os.PathLike | None = None,
    datalist: Mapping[str, Any] | None = None,
    required_splits: Sequence[str] = ("training", "validation"),
    positive: Mapping[str, Any] | None = None,
    random_transforms: Iterable[Any] | None = None,
    cache_embeddings: bool = False,
    model_checkpoint: str | os.PathLike | None = None,
) -> bool:
    """Run every check that applies to the given values; return True (for use in a config expression)."""
    _check_positive(positive or {})
    if model_checkpoint is not None and not Path(model_checkpoint).is_file():
        raise ConfigError(
            f"checkpoint '{model_checkpoint}' not found; train first (bundle/configs/train.json) or pass "
            "--checkpoint with the model.pt that training wrote into its ckpt_dir"
        )
    if dataset_dir is not None:
        check_dataset_dir(dataset_dir)
    if sam_model_type is not None:
        check_sam_checkpoint(sam_model_type, sam_checkpoint)
    if encoder_name is not None:
        check_encoder_name(encoder_name)
    if datalist is not None:
        check_datalist(datalist, required_splits)
    if cache_embeddings and random_transforms is not None:
        check_no_spatial_augmentation(random_transforms)
    logger.info("configuration checks passed")
    return True
