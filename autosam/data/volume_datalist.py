"""Datalist builders for volumes: NIfTI / NRRD folders, MSD `dataset.json`, and DICOM series.

With `slices=True` (the default) each volume becomes one item per slice across `slice_axis` of
the volume oriented to `axcodes`, the same orientation the transforms use. Each item carries the
volume path, `slice_index`, `slice_axis`, `num_slices` and `foreground` (whether the slice contains
label), which `ForegroundSliceSampler` uses. With `slices=False` each volume is one item.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import torch
from monai.data import MetaTensor
from monai.transforms import LoadImage, Orientation

from autosam.data.dicom import (
    SEGMENTATION_STORAGE,
    _series_affine,
    is_dicom_file,
    read_dicom_seg_on_series,
    sort_series,
)
from autosam.data.errors import InvalidItemError, ItemProblems
from autosam.data.volume import CachedImageReader

__all__ = ["nifti_layout", "dicom_layout", "VOLUME_SUFFIXES", "volume_stem"]

logger = logging.getLogger(__name__)

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
IMAGE_VOLUME_DIRS = ("imagesTr", "images", "image", "imgs")
LABEL_VOLUME_DIRS = ("labelsTr", "labels", "label", "masks", "segmentations")
LABEL_SUFFIXES = ("_label", "_seg", "_mask", "_gt")


def volume_stem(path: str | Path) -> str:
    """Return the file name without its volume suffix ('case_001.nii.gz' -> 'case_001')."""
    name = Path(path).name
    for suffix in VOLUME_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(path).stem


def _list_volumes(folder: Path) -> dict[str, Path]:
    found = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and not path.name.startswith(".") and path.name.lower().endswith(VOLUME_SUFFIXES):
            found[volume_stem(path)] = path
    return found


def _foreground_per_slice(
    label: MetaTensor, *, axcodes: str, slice_axis: int, label_values: Sequence[float] | None
) -> list[bool]:
    """Return, for each slice of the label oriented to `axcodes`, whether it contains foreground."""
    oriented = Orientation(axcodes=axcodes, labels=None)(label)  # 1 x X x Y x Z
    values = oriented.as_tensor()
    if label_values is None:
        foreground = values > 0
    else:
        foreground = torch.isin(values, torch.as_tensor([float(v) for v in label_values], dtype=values.dtype))
    other_axes = tuple(a for a in range(4) if a != slice_axis + 1)
    return [bool(v) for v in foreground.any(dim=other_axes[2]).any(dim=other_axes[1]).any(dim=other_axes[0])]


def _slice_items(item: dict[str, Any], foreground: list[bool], slice_axis: int) -> list[dict[str, Any]]:
    return [
        {
            **item,
            "slice_index": index,
            "slice_axis": slice_axis,
            "num_slices": len(foreground),
            "foreground": has_foreground,
        }
        for index, has_foreground in enumerate(foreground)
    ]


def _load_label(path: Path | str) -> MetaTensor:
    loader = LoadImage(reader=CachedImageReader(maxsize=1), image_only=True, ensure_channel_first=True)
    label = loader(str(path))
    if label.ndim != 4 or label.shape[0] != 1:
        raise InvalidItemError(f"label '{path}' has shape {tuple(label.shape)}; expected one 3D volume")
    return label


def _unlabelled_slice_items(
    item: dict[str, Any], problems: ItemProblems, *, axcodes: str, slice_axis: int
) -> list[dict[str, Any]]:
    """List the slices of a volume without label (for inference); the items have no `foreground` flag."""
    try:
        image = _load_label(item["image"])  # the generic volume loader also serves images
    except (InvalidItemError, RuntimeError, OSError, ValueError) as err:
        problems.report(item["image"], f"cannot read volume '{item['image']}': {err}")
        return []
    oriented = Orientation(axcodes=axcodes, labels=None)(image)
    num_slices = int(oriented.shape[slice_axis + 1])
    return [
        {**item, "slice_index": index, "slice_axis": slice_axis, "num_slices": num_slices}
        for index in range(num_slices)
    ]


def _expand(
    items: list[dict[str, Any]],
    problems: ItemProblems,
    *,
    slices: bool,
    axcodes: str,
    slice_axis: int,
    label_values: Sequence[float] | None,
    label_loader: Any = None,
) -> list[dict[str, Any]]:
    if not slices:
        return items
    expanded = []
    for item in items:
        if item.get("label") is None:
            expanded.extend(_unlabelled_slice_items(item, problems, axcodes=axcodes, slice_axis=slice_axis))
            continue
        try:
            label = label_loader(item) if label_loader is not None else _load_label(item["label"])
            foreground = _foreground_per_slice(
                label, axcodes=axcodes, slice_axis=slice_axis, label_values=label_values
            )
        except (InvalidItemError, RuntimeError, OSError, ValueError) as err:
            problems.report(item["label"], f"cannot read label '{item['label']}': {err}")
            continue
        expanded.extend(_slice_items(item, foreground, slice_axis))
    return expanded


def _msd_items(root: Path, problems: ItemProblems) -> tuple[list[dict], list[dict]]:
    description = json.loads((root / "dataset.json").read_text())
    pool, test = [], []
    for entry in description.get("training", []):
        image, label = (root / entry["image"]).resolve(), (root / entry["label"]).resolve()
        for path in (image, label):
            if not path.is_file():
                problems.report(path, f"'{path}' listed in '{root / 'dataset.json'}' not found")
                break
        else:
            pool.append({"image": str(image), "label": str(label), "case": volume_stem(image)})
    for entry in description.get("test", []):
        image = (root / (entry["image"] if isinstance(entry, dict) else entry)).resolve()
        test.append({"image": str(image), "case": volume_stem(image)})
    return pool, test


def _folder_items(
    root: Path, problems: ItemProblems, image_dir: str | None, mask_dir: str | None
) -> list[dict[str, Any]] | None:
    image_folder = next(
        (root / n for n in ([image_dir] if image_dir else IMAGE_VOLUME_DIRS) if (root / n).is_dir()), None
    )
    label_folder = next(
        (root / n for n in ([mask_dir] if mask_dir else LABEL_VOLUME_DIRS) if (root / n).is_dir()), None
    )
    if image_folder is None or label_folder is None:
        return None
    images, labels = _list_volumes(image_folder), _list_volumes(label_folder)
    if not images:
        raise InvalidItemError(
            f"image folder '{image_folder}' contains no volumes ({', '.join(VOLUME_SUFFIXES)})"
        )
    for stem in sorted(set(labels) - set(images)):
        problems.report(
            labels[stem], f"label '{labels[stem]}' has no image named '{stem}' in '{image_folder}'"
        )
    items = []
    for stem in sorted(images):
        if stem not in labels:
            problems.report(
                images[stem], f"image '{images[stem]}' has no label named '{stem}' in '{label_folder}'"
            )
            continue
        items.append({"image": str(images[stem]), "label": str(labels[stem]), "case": stem})
    return items


def _suffix_items(root: Path, problems: ItemProblems, label_suffixes: Sequence[str]) -> list[dict[str, Any]]:
    """Pair `X.nii.gz` with `X_label.nii.gz` (or another suffix) in the same folder, searching below `root`."""
    items = []
    volumes = sorted(p for p in root.rglob("*") if p.is_file() and p.name.lower().endswith(VOLUME_SUFFIXES))
    by_folder_stem = {(p.parent, volume_stem(p)): p for p in volumes}
    label_paths = set()
    for (folder, stem), path in sorted(by_folder_stem.items()):
        if any(stem.endswith(suffix) for suffix in label_suffixes):
            continue
        label = next(
            (
                by_folder_stem.get((folder, stem + s))
                for s in label_suffixes
                if (folder, stem + s) in by_folder_stem
            ),
            None,
        )
        if label is None:
            continue
        label_paths.add(label)
        case = (folder.relative_to(root) / stem).as_posix()
        items.append({"image": str(path), "label": str(label), "case": case})
    if not items:
        raise InvalidItemError(
            f"no volumes found in '{root}': expected dataset.json, imagesTr/ + labelsTr/ (or images/ + labels/), "
            f"or image/label pairs named X and X{label_suffixes[0]} ({', '.join(VOLUME_SUFFIXES)})"
        )
    return items


def nifti_layout(
    root: Path,
    problems: ItemProblems,
    *,
    image_dir: str | None = None,
    mask_dir: str | None = None,
    slices: bool = True,
    axcodes: str = "RAS",
    slice_axis: int = 2,
    label_values: Sequence[float] | None = None,
    label_suffixes: Sequence[str] = LABEL_SUFFIXES,
    **_: Any,
) -> tuple[list[dict], list[dict]]:
    """NIfTI / NRRD volumes from an MSD `dataset.json`, image and label folders, or X / X_label pairs."""
    if (root / "dataset.json").is_file():
        pool, test = _msd_items(root, problems)
    else:
        folder_items = _folder_items(root, problems, image_dir, mask_dir)
        pool = (
            folder_items if folder_items is not None else _suffix_items(root, problems, tuple(label_suffixes))
        )
        test_folder = root / "imagesTs"
        test = (
            [{"image": str(p), "case": s} for s, p in _list_volumes(test_folder).items()]
            if test_folder.is_dir()
            else []
        )
    options = {"slices": slices, "axcodes": axcodes, "slice_axis": slice_axis, "label_values": label_values}
    return _expand(pool, problems, **options), _expand(test, problems, **options)


def _scan_dicom(
    root: Path,
) -> tuple[dict[str, list[tuple[Path, pydicom.Dataset]]], list[tuple[Path, pydicom.Dataset]]]:
    series: dict[str, list[tuple[Path, pydicom.Dataset]]] = {}
    segs = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")):
        if not is_dicom_file(path):
            continue
        header = pydicom.dcmread(path, stop_before_pixels=True)
        if str(header.get("SOPClassUID", "")) == SEGMENTATION_STORAGE:
            segs.append((path, header))
        elif "PixelData" in header or "Rows" in header:
            series.setdefault(str(header.get("SeriesInstanceUID", "")), []).append((path, header))
    return series, segs


def _seg_for_series(uid: str, segs: list[tuple[Path, pydicom.Dataset]]) -> Path | None:
    matches = [
        path
        for path, header in segs
        if any(
            str(ref.get("SeriesInstanceUID", "")) == uid for ref in header.get("ReferencedSeriesSequence", [])
        )
    ]
    if len(matches) > 1:
        logger.warning("series %s has %d DICOM SEG files; using '%s'", uid, len(matches), matches[0])
    return matches[0] if matches else None


def _label_file_for_folder(folder: Path) -> Path | None:
    """Find the label volume beside a series folder: `<folder>.nii.gz`, or the only volume file in the parent folder."""
    parent = folder.parent
    named = [parent / f"{folder.name}{suffix}" for suffix in VOLUME_SUFFIXES]
    for path in named:
        if path.is_file():
            return path
    volumes = [p for p in parent.iterdir() if p.is_file() and p.name.lower().endswith(VOLUME_SUFFIXES)]
    return volumes[0] if len(volumes) == 1 else None


def dicom_layout(
    root: Path,
    problems: ItemProblems,
    *,
    slices: bool = True,
    axcodes: str = "RAS",
    slice_axis: int = 2,
    label_values: Sequence[float] | None = None,
    allow_uneven_spacing: bool = False,
    **_: Any,
) -> tuple[list[dict], list[dict]]:
    """List the DICOM series below `root`, distinguished by SeriesInstanceUID, with their labels.

    Series without a label go to "test". A series' label is the DICOM SEG that references it, else a volume file named after its folder
    (`<folder>.nii.gz`, `.nrrd`, ...) beside the folder, else the only volume file beside the folder.
    The image is the series folder when the folder contains only that series, else the list of its files.
    """
    series, segs = _scan_dicom(root)
    if not series:
        raise InvalidItemError(f"no DICOM image series found in '{root}' or below it")

    folder_counts: dict[Path, int] = {}
    for members in series.values():
        for folder in {path.parent for path, _ in members}:
            folder_counts[folder] = folder_counts.get(folder, 0) + 1

    pool, unlabelled = [], []
    seg_geometry: dict[str, tuple[list[str], np.ndarray, tuple[int, int, int]]] = {}
    for uid, members in sorted(series.items(), key=lambda kv: str(kv[1][0][0])):
        files = [path for path, _ in members]
        folders = {path.parent for path in files}
        try:
            ordered = sort_series(files, [h for _, h in members], allow_uneven_spacing=allow_uneven_spacing)
        except InvalidItemError as err:
            problems.report(files[0].parent, str(err))
            continue
        folder = files[0].parent
        own_folder = len(folders) == 1 and folder_counts[folder] == 1
        image: str | list[str] = str(folder) if own_folder else [str(p) for p in ordered.files]
        case = (
            folder.relative_to(root).as_posix()
            if own_folder
            else f"{folder.relative_to(root).as_posix()}/{uid}"
        )

        seg = _seg_for_series(uid, segs)
        label = seg
        if label is None and own_folder:
            label = _label_file_for_folder(folder)
        if label is None:
            # Series without a label can still be segmented, so they are listed under "test".
            logger.warning("DICOM series %s in '%s' has no label (DICOM SEG or volume file)", uid, folder)
            unlabelled.append({"image": image, "case": case})
            continue
        pool.append({"image": image, "label": str(label), "case": case})
        if seg is not None:
            first = ordered.headers[0]
            shape = (int(first.Columns), int(first.Rows), len(ordered.headers))
            seg_geometry[case] = (
                [str(h.SOPInstanceUID) for h in ordered.headers],
                _series_affine(ordered),
                shape,
            )

    def load_label(item: dict[str, Any]) -> MetaTensor:
        if item["case"] not in seg_geometry:
            return _load_label(item["label"])
        uids, affine, shape = seg_geometry[item["case"]]
        array = read_dicom_seg_on_series(item["label"], uids, affine, shape)
        return MetaTensor(torch.from_numpy(array[None].astype(np.float32)), affine=torch.as_tensor(affine))

    options = {"slices": slices, "axcodes": axcodes, "slice_axis": slice_axis, "label_values": label_values}
    return _expand(pool, problems, label_loader=load_label, **options), _expand(
        unlabelled, problems, **options
    )
