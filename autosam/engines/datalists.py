"""Datalists for the bundle configs: load a JSON file or build one from a dataset folder, then pick splits."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from autosam.engines.config_checks import ConfigError, check_dataset_dir

__all__ = ["prepare_datalist", "select_split", "inference_items", "DATALIST_SPLITS"]

logger = logging.getLogger(__name__)

DATALIST_SPLITS = ("training", "validation", "test")
_PATH_KEYS = ("image", "label")


def _absolute_paths(items: Sequence[Mapping[str, Any]], base: Path) -> list[dict[str, Any]]:
    resolved = []
    for item in items:
        item = dict(item)
        for key in _PATH_KEYS:
            value = item.get(key)
            if isinstance(value, str):
                item[key] = str((base / value).resolve())
            elif isinstance(value, list):
                item[key] = [str((base / v).resolve()) for v in value]
        resolved.append(item)
    return resolved


def prepare_datalist(
    *,
    datalist: str | os.PathLike | Mapping[str, Any] | None = None,
    dataset_dir: str | os.PathLike | None = None,
    layout: str = "flat",
    val_fraction: float = 0.2,
    seed: int = 0,
    **layout_options: Any,
) -> dict[str, list[dict[str, Any]]]:
    """Return a datalist with absolute paths and the splits "training", "validation" and "test".

    Args:
        datalist: a Decathlon-style JSON file (or its dict); relative paths in it are joined to
            `dataset_dir`, or to the file's folder when `dataset_dir` is None. None builds a
            datalist from `dataset_dir` with `autosam.data.datalist.build_datalist`.
        dataset_dir: the data set's top folder.
        layout: folder layout used to build the datalist ("flat", "pranet", "sun-seg", ...).
        val_fraction: fraction of the cases that go to validation when building.
        seed: seed of the split by case when building.
        layout_options: further options of `build_datalist`.
    """
    if datalist is None:
        root = check_dataset_dir(dataset_dir)
        from autosam.data.datalist import build_datalist

        built = build_datalist(layout, root, val_fraction=val_fraction, seed=seed, **layout_options)
        return {split: list(built.get(split, [])) for split in DATALIST_SPLITS}

    if isinstance(datalist, Mapping):
        content, base = datalist, Path(dataset_dir or ".").resolve()
    else:
        path = Path(datalist).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"datalist '{path}' not found; pass --datalist with a JSON file, or --datalist null to build "
                "one from --dataset_dir and --layout"
            )
        try:
            content = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ConfigError(
                f"datalist '{path}' is not valid JSON ({error}); fix or rebuild the file"
            ) from error
        base = Path(dataset_dir).resolve() if dataset_dir else path.resolve().parent

    unknown = [key for key in content if key not in DATALIST_SPLITS and isinstance(content[key], list)]
    if unknown:
        logger.info("datalist splits %s are not used by the bundle", unknown)
    return {split: _absolute_paths(content.get(split, []), base) for split in DATALIST_SPLITS}


def select_split(
    datalist: Mapping[str, Sequence[Mapping[str, Any]]], split: str | Sequence[str]
) -> list[dict]:
    """Return the items of one split, of several splits joined, or of every split ("all")."""
    if split == "all":
        names: Sequence[str] = DATALIST_SPLITS
    elif isinstance(split, str):
        names = [split]
    else:
        names = list(split)

    items: list[dict] = []
    for name in names:
        if name not in DATALIST_SPLITS:
            raise ConfigError(
                f"split '{name}' is unknown; choose one of {', '.join(DATALIST_SPLITS)} or 'all'"
            )
        items.extend(dict(item) for item in datalist.get(name, []))
    if not items:
        counts = ", ".join(f"{name} {len(datalist.get(name, []))}" for name in DATALIST_SPLITS)
        raise ConfigError(
            f"split '{split}' of the datalist is empty ({counts}); choose a split that has items"
        )
    return items


def inference_items(
    *,
    input_dir: str | os.PathLike | None = None,
    datalist: str | os.PathLike | None = None,
    dataset_dir: str | os.PathLike | None = None,
    split: str = "test",
) -> list[dict[str, Any]]:
    """Return the items to segment: the pictures under `input_dir`, or one split of a datalist.

    A datalist is needed for volumes, whose items name the slices (`slice_index`) to segment;
    build one with `python -m autosam.data datalist --layout nifti|dicom ...`.
    """
    if datalist is not None:
        return select_split(prepare_datalist(datalist=datalist, dataset_dir=dataset_dir), split)
    from autosam.engines.writer import list_input_files

    if input_dir is None:
        raise ConfigError("neither input_dir nor datalist is set; pass --input_dir with a folder of images")
    return list_input_files(input_dir)
