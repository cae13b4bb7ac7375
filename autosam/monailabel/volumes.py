"""Slices of 3D volumes as 8-bit 2D pictures, so that the 2D AutoSAM bundle can train on and segment volumes.

AutoSAM reads 2D RGB images. A volume (CT or MR, as NIfTI, NRRD, or a DICOM series that MONAI
Label converted) is cut along its last array axis. Each slice is scaled to 8 bits with one
intensity window for the whole volume, and the slices go through the bundle's 2D pipeline. Training and
inference use the same functions here, so the model sees the same intensities in both.

This module needs only numpy, Pillow and MONAI, so it also imports outside the MONAI Label environment.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = [
    "VOLUME_SUFFIXES",
    "is_volume",
    "intensity_window",
    "volume_to_uint8",
    "slice_to_rows",
    "rows_to_slice",
    "export_volume_slices",
]

logger = logging.getLogger(__name__)

VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".seg.nrrd", ".mha", ".mhd")

# Percentiles of the volume that map to 0 and 255 when no fixed window is configured.
DEFAULT_PERCENTILES = (0.5, 99.5)


def is_volume(path: str | os.PathLike) -> bool:
    """Return True for a volume file (NIfTI, NRRD, MetaImage) or a folder (a DICOM series)."""
    path = Path(path)
    if path.is_dir():
        return True
    return path.name.lower().endswith(VOLUME_SUFFIXES)


def intensity_window(
    volume: np.ndarray, intensity_range: Sequence[float] | None = None
) -> tuple[float, float]:
    """Return the (low, high) intensities that map to 0 and 255.

    `intensity_range` fixes them, for example (-160, 240) for an abdominal CT window in HU.
    Without it the 0.5th and 99.5th percentiles of the whole volume are used, which suits CT and MR alike.
    """
    if intensity_range is not None:
        low, high = float(intensity_range[0]), float(intensity_range[1])
        if not high > low:
            raise ValueError(
                f"intensity range ({low:g}, {high:g}) is invalid; give (low, high) with high > low"
            )
        return low, high

    low, high = np.percentile(volume, DEFAULT_PERCENTILES)
    return float(low), float(high)


def volume_to_uint8(volume: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Scale intensities linearly so that `window` maps to [0, 255], clip, and return uint8."""
    low, high = window
    if high <= low:
        return np.zeros(volume.shape, dtype=np.uint8)  # a constant volume
    scaled = (np.asarray(volume, dtype=np.float32) - low) * (255.0 / (high - low))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def slice_to_rows(array_slice: np.ndarray) -> np.ndarray:
    """Turn a slice in MONAI's array order (X x Y) into a picture with rows first (H = Y, W = X)."""
    return np.ascontiguousarray(array_slice.T)


def rows_to_slice(picture: np.ndarray) -> np.ndarray:
    """Invert `slice_to_rows`: H x W picture back to an X x Y slice."""
    return np.ascontiguousarray(picture.T)


def _export_key(image_path: str, label_path: str, window_text: str) -> str:
    """Return a folder name that changes when either file or the window changes."""
    parts = [window_text]
    for path in (image_path, label_path):
        stat = os.stat(path)
        parts += [os.path.realpath(path), str(stat.st_size), str(stat.st_mtime_ns)]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def export_volume_slices(
    image_path: str,
    label_path: str,
    output_dir: str | os.PathLike,
    *,
    intensity_range: Sequence[float] | None = None,
    label_values: Sequence[float] | None = None,
) -> list[dict[str, str]]:
    """Write each slice of a volume and its label as PNG files and return their datalist items.

    The label is resampled onto the image grid (nearest neighbour, through both affines) before
    slicing, because a label converted from DICOM SEG may store its slices in another order.
    Image slices are 8-bit grey (see `volume_to_uint8`); label slices are 0/1, where 1 marks the
    voxels whose value is in `label_values` (any non-zero value when None).

    Args:
        image_path: the volume file, or a DICOM series folder.
        label_path: its label map (any format MONAI's `LoadImage` reads).
        output_dir: folder for the slices; a sub-folder per volume and window is reused when present.
        intensity_range: fixed (low, high) window; None takes percentiles of the volume.
        label_values: label ids that count as foreground.

    Returns:
        items {"image", "label", "case"}, one per slice, in slice order; "case" is the volume's path.
    """
    from monai.transforms import LoadImage, ResampleToMatch

    window_text = "auto" if intensity_range is None else ",".join(f"{v:g}" for v in intensity_range)
    label_text = "any" if label_values is None else ",".join(f"{v:g}" for v in label_values)
    folder = Path(output_dir) / _export_key(image_path, label_path, f"{window_text};{label_text}")
    done_marker = folder / "slices.txt"
    if done_marker.is_file():
        names = done_marker.read_text().split()
        return [_slice_item(folder, name, image_path) for name in names]

    loader = LoadImage(image_only=True, ensure_channel_first=True)
    image = loader(image_path)  # 1 x X x Y x Z
    label = loader(label_path)
    if image.ndim != 4:
        raise ValueError(
            f"image '{image_path}' has array shape {tuple(image.shape[1:])}; expected a 3D volume"
        )
    label = ResampleToMatch(mode="nearest")(label, image)  # onto the image grid

    window = intensity_window(image.numpy(), intensity_range)
    pixels = volume_to_uint8(image[0].numpy(), window)
    label_array = np.rint(label[0].numpy())
    if label_values is None:
        foreground = label_array != 0
    else:
        foreground = np.isin(label_array, np.asarray(label_values, dtype=label_array.dtype))

    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for z in range(pixels.shape[-1]):
        name = f"slice_{z:04d}"
        Image.fromarray(slice_to_rows(pixels[..., z])).save(folder / f"{name}_image.png")
        Image.fromarray(slice_to_rows(foreground[..., z].astype(np.uint8))).save(folder / f"{name}_label.png")
        names.append(name)
    done_marker.write_text("\n".join(names) + "\n")
    logger.info(
        "exported %d slices of '%s' (window %.1f to %.1f) into '%s'", len(names), image_path, *window, folder
    )
    return [_slice_item(folder, name, image_path) for name in names]


def _slice_item(folder: Path, name: str, case: str) -> dict[str, str]:
    return {
        "image": str(folder / f"{name}_image.png"),
        "label": str(folder / f"{name}_label.png"),
        "case": str(case),
    }
