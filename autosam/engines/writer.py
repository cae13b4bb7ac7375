"""Prediction writer: probability maps and binary masks at the input's size and relative path.

For an input `<input_root>/<relative>.<ext>` the writer creates
`<output_dir>/probabilities/<relative>.png` (8-bit, round(255 * p)) and
`<output_dir>/masks/<relative>.png` (0 or 255, p >= threshold), and optionally
`<output_dir>/overlays/<relative>.png` (the input with the mask tinted green and its outline in
yellow). The relative path is kept, so a
SUN-SEG tree `Frame/<case>/<frame>` comes out as `probabilities/Frame/<case>/<frame>.png`, which
the evaluation CLI reads next to the ground truth. Slices of a volume are collected and stacked
back into `<relative>.nii.gz` files with the input volume's affine when the run completes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from PIL import Image

from autosam.engines.utils import as_bool

__all__ = ["PredictionWriter", "check_output_dir", "relative_output_path", "list_input_files", "overlay_mask"]

logger = logging.getLogger(__name__)

VOLUME_SUFFIXES = (".nii.gz", ".nii")
_MASK_FOLDER_NAMES = {"masks", "mask", "gt", "labels", "label", "annotations", "ground_truth", "groundtruth"}


def list_input_files(input_dir: str | os.PathLike) -> list[dict[str, str]]:
    """List the 2D pictures under `input_dir` (recursively, mask folders skipped) as datalist items."""
    from autosam.data.io import IMAGE_2D_SUFFIXES

    root = Path(input_dir).expanduser().resolve()
    if not root.is_dir():
        raise FileNotFoundError(
            f"input_dir '{root}' is not a folder; pass --input_dir with the folder of your images"
        )
    files = [
        path
        for path in sorted(root.rglob("*"))
        if path.is_file()
        and path.suffix.lower() in IMAGE_2D_SUFFIXES
        and not any(part.lower() in _MASK_FOLDER_NAMES for part in path.relative_to(root).parts[:-1])
    ]
    if not files:
        raise FileNotFoundError(
            f"input_dir '{root}' contains no images ({', '.join(IMAGE_2D_SUFFIXES)}); pass the folder of your images"
        )
    return [{"image": str(path)} for path in files]


def overlay_mask(image: np.ndarray, mask: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """Return H x W x 3 uint8: `image` (H x W x 3 uint8) with `mask` (H x W bool) tinted green, outlined yellow."""
    overlay = image.astype(np.float32)
    green = np.array([0.0, 255.0, 0.0], dtype=np.float32)
    overlay[mask] = (1 - alpha) * overlay[mask] + alpha * green

    # The outline is the mask minus its 4-neighbour erosion.
    eroded = mask.copy()
    eroded[1:, :] &= mask[:-1, :]
    eroded[:-1, :] &= mask[1:, :]
    eroded[:, 1:] &= mask[:, :-1]
    eroded[:, :-1] &= mask[:, 1:]
    overlay[mask & ~eroded] = (255.0, 255.0, 0.0)
    return np.rint(overlay).astype(np.uint8)


def _strip_suffix(path: Path) -> Path:
    name = path.name
    for suffix in VOLUME_SUFFIXES:
        if name.endswith(suffix):
            return path.with_name(name[: -len(suffix)])
    return path.with_suffix("")


def _is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_output_dir(output_dir: str | os.PathLike, input_roots: Sequence[str | os.PathLike]) -> Path:
    """Return `output_dir` resolved, or raise if it lies inside an input folder or contains one."""
    output = Path(output_dir).resolve()
    for root in input_roots:
        input_root = Path(root).resolve()
        if _is_within(output, input_root):
            raise ValueError(
                f"output_dir '{output}' is inside the input folder '{input_root}'; predictions are never "
                "written among the inputs, so choose an output_dir outside it"
            )
        if _is_within(input_root, output):
            raise ValueError(
                f"output_dir '{output}' contains the input folder '{input_root}'; choose an output_dir "
                "that holds no input data"
            )
    return output


def relative_output_path(source: str | os.PathLike, input_root: str | os.PathLike) -> Path:
    """Return the path of `source` relative to `input_root`, without its file suffix."""
    # Absolute paths without resolving links, so a folder of symbolic links keeps its own names.
    source_path = Path(os.path.abspath(source))
    root = Path(os.path.abspath(input_root))
    if root not in source_path.parents:
        raise ValueError(
            f"input file '{source_path}' is not under the input folder '{root}'; set the writer's "
            "input_root (the config's dataset_dir) to a folder that contains every input"
        )
    return _strip_suffix(source_path.relative_to(root))


def _source_path(item: dict, image_key: str) -> str:
    image = item.get(image_key)
    meta = getattr(image, "meta", None) or item.get(f"{image_key}_meta_dict") or {}
    source = meta.get("filename_or_obj")
    if not source:
        raise KeyError(
            f"the batch item has no '{image_key}' file name (meta 'filename_or_obj'); the writer needs "
            "images loaded from files by LoadImaged"
        )
    return str(source)


def _to_probability_array(pred: torch.Tensor | np.ndarray) -> np.ndarray:
    array = pred.detach().cpu().numpy() if isinstance(pred, torch.Tensor) else np.asarray(pred)
    array = np.squeeze(array.astype(np.float32), axis=0) if array.ndim == 3 else array.astype(np.float32)
    if array.ndim != 2:
        raise ValueError(f"expected a 1 x H x W or H x W probability map, got shape {array.shape}")
    return np.clip(array, 0.0, 1.0)


class PredictionWriter:
    """Ignite handler that writes each item's prediction after every iteration.

    It expects `engine.state.output` to be a list of per-item dicts (MONAI decollates batches) whose
    `pred` contains probabilities (1 x H x W, rows first as `autosam.data`'s reader loads images,
    after sigmoid and `Invertd`).
    """

    def __init__(
        self,
        *,
        output_dir: str | os.PathLike,
        input_root: str | os.PathLike,
        pred_key: str = "pred",
        image_key: str = "image",
        threshold: float = 0.5,
        write_masks: bool = True,
        write_overlays: bool = False,
        overwrite: bool = False,
        output_transform: Callable[[Any], Any] = lambda output: output,
    ) -> None:
        """
        Args:
            output_dir: folder that receives `probabilities/` and `masks/`; never an input folder.
            input_root: folder the relative paths of the inputs are taken from (the dataset root).
            pred_key: item key of the probability map.
            image_key: item key whose meta `filename_or_obj` names the input file.
            threshold: probability at or above which a pixel is foreground in the mask.
            write_masks: also write the binary masks.
            write_overlays: also write the input image with the mask drawn on it.
            overwrite: replace existing prediction files; otherwise an existing file raises.
            output_transform: maps `engine.state.output` to the list of item dicts.
        """
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be within [0, 1], got {threshold}")
        self.input_root = Path(os.path.abspath(input_root))
        self.output_dir = check_output_dir(output_dir, [self.input_root])
        self.pred_key = pred_key
        self.image_key = image_key
        self.threshold = threshold
        self.write_masks = as_bool(write_masks)
        self.write_overlays = as_bool(write_overlays)
        self.overwrite = as_bool(overwrite)
        self.output_transform = output_transform
        self.written: list[Path] = []
        self._pending_slices: dict[str, list[torch.Tensor]] = {}

    def attach(self, engine: Any) -> None:
        """Write pictures after every iteration of `engine`, and volumes when its run completes."""
        from ignite.engine import Events

        engine.add_event_handler(Events.ITERATION_COMPLETED, self)
        engine.add_event_handler(Events.COMPLETED, self.write_volumes)

    def __call__(self, engine: Any) -> None:
        items = self.output_transform(engine.state.output)
        for item in items:
            pred = item[self.pred_key]
            if "slice_index" in getattr(pred, "meta", {}):
                self._pending_slices.setdefault(_source_path(item, self.image_key), []).append(pred)
            else:
                self.write_item(item)

    def write_volumes(self, engine: Any = None) -> None:
        """Stack the collected slice predictions of each volume and write them as NIfTI files.

        Each slice must be a MetaTensor with the metadata of `autosam.data.ExtractSliced`, mapped
        back through `SamGeometryd` only; slices a volume lacks stay zero.
        """
        from autosam.data import stack_slices

        for source, slices in self._pending_slices.items():
            volume = stack_slices(slices)  # 1 x X x Y x Z on the file's grid
            self.write_volume(source, volume[0].numpy(), volume.affine.numpy())
        self._pending_slices.clear()

    def write_item(self, item: dict) -> list[Path]:
        """Write one item's probability map (and mask); return the written files."""
        source = _source_path(item, self.image_key)
        relative = relative_output_path(source, self.input_root)
        probability = _to_probability_array(item[self.pred_key])

        written = [self._write_png(self.output_dir / "probabilities" / relative, probability * 255.0)]
        if self.write_masks:
            mask = (probability >= self.threshold).astype(np.float32) * 255.0
            written.append(self._write_png(self.output_dir / "masks" / relative, mask))
        if self.write_overlays:
            written.append(self._write_overlay(self.output_dir / "overlays" / relative, source, probability))
        self.written.extend(written)
        return written

    def write_volume(
        self, source: str | os.PathLike, probability: np.ndarray, affine: np.ndarray
    ) -> list[Path]:
        """Write a probability volume (X x Y x Z) and its mask as NIfTI files with `affine`."""
        relative = relative_output_path(source, self.input_root)
        volume = np.clip(np.asarray(probability, dtype=np.float32), 0.0, 1.0)

        written = [self._write_nifti(self.output_dir / "probabilities" / relative, volume, affine)]
        if self.write_masks:
            mask = (volume >= self.threshold).astype(np.uint8)
            written.append(self._write_nifti(self.output_dir / "masks" / relative, mask, affine))
        self.written.extend(written)
        return written

    def _target(self, path: Path) -> Path:
        if path.exists() and not self.overwrite:
            raise FileExistsError(
                f"prediction '{path}' exists; choose another output_dir or set overwrite to true to replace it"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def _write_png(self, stem: Path, values: np.ndarray) -> Path:
        path = self._target(stem.with_name(stem.name + ".png"))
        pixels = np.rint(values).astype(np.uint8)  # H x W
        Image.fromarray(pixels, mode="L").save(path)
        return path

    def _write_overlay(self, stem: Path, source: str, probability: np.ndarray) -> Path:
        from autosam.data.io import read_image_2d
        from autosam.data.transforms import to_rgb

        array, meta = read_image_2d(source)  # H x W or H x W x C, stored dtype
        channels_first = (
            torch.as_tensor(array.astype(np.float32)).reshape(*array.shape[:2], -1).permute(2, 0, 1)
        )
        rgb = to_rgb(channels_first, source_dtype=meta["source_dtype"], name=source)  # 3 x H x W in [0, 255]
        image = np.rint(rgb.permute(1, 2, 0).numpy()).astype(np.uint8)
        if image.shape[:2] != probability.shape:
            raise ValueError(
                f"prediction is {probability.shape} but image '{source}' is {image.shape[:2]}; map the "
                "prediction back to the input size (Invertd) before writing overlays"
            )

        path = self._target(stem.with_name(stem.name + ".png"))
        Image.fromarray(overlay_mask(image, probability >= self.threshold), mode="RGB").save(path)
        return path

    def _write_nifti(self, stem: Path, values: np.ndarray, affine: np.ndarray) -> Path:
        path = self._target(stem.with_name(stem.name + ".nii.gz"))
        nib.save(nib.Nifti1Image(values, np.asarray(affine, dtype=np.float64)), str(path))
        logger.info("wrote %s", path)
        return path
