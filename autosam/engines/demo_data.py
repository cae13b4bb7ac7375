"""Embedded demo data: 2D slices of the MNI ICBM152 2009a template that ships inside nilearn.

The nilearn wheel contains the T1 template and its grey- and white-matter probability maps
(uint8, 0-255, 197 x 233 x 189 voxels of 1 mm, RAS). `prepare_mni152_slices` writes PNG slices of
the T1 with the white-matter map thresholded at 50 % as the mask, so the demo trains on real
images without any download. The datalist is split by anatomy: axial slices of the lower and
middle brain for training, a separate axial slab above them for validation, and coronal slices
(a view never seen in training) for the test split.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image

__all__ = ["prepare_mni152_slices", "nilearn_mni152_files"]

logger = logging.getLogger(__name__)

_T1_FILE = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
_LABEL_FILES = {
    "white_matter": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
    "grey_matter": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
}

# Slice indices per split: (axis, start, stop, step). Axis 2 is axial (z), axis 1 coronal (y).
_SPLITS = {
    "training": (2, 40, 120, 2),
    "validation": (2, 124, 150, 4),
    "test": (1, 60, 184, 8),
}


def nilearn_mni152_files(label: str = "white_matter") -> tuple[Path, Path]:
    """Return the paths of the T1 template and the probability map `label` inside the nilearn package."""
    import nilearn.datasets

    if label not in _LABEL_FILES:
        raise ValueError(f"label '{label}' is unknown; choose one of {', '.join(_LABEL_FILES)}")
    data_dir = Path(nilearn.datasets.__file__).parent / "data"
    t1, probability = data_dir / _T1_FILE, data_dir / _LABEL_FILES[label]
    for path in (t1, probability):
        if not path.is_file():
            raise FileNotFoundError(
                f"'{path}' is missing from the installed nilearn; reinstall it (pip install --force-reinstall nilearn)"
            )
    return t1, probability


def _slice(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    plane = np.take(volume, index, axis=axis)  # the two remaining axes, first axis = x
    return np.rot90(plane)  # rows run from superior/anterior to inferior/posterior, as radiologists view them


def prepare_mni152_slices(
    output_dir: str | os.PathLike, *, label: str = "white_matter", threshold: int = 127
) -> Path:
    """Write PNG slices and `datalist.json` under `output_dir`; return the datalist path.

    Files: `images/<view>_<index>.png` (8-bit grey T1), `masks/<view>_<index>.png` (0 or 255,
    probability > `threshold`). Datalist items carry `image`, `label` (paths relative to
    `output_dir`) and `case` (the slab or view the slice belongs to). Existing files are rewritten
    with the same content, so the call is idempotent.
    """
    output = Path(output_dir)
    (output / "images").mkdir(parents=True, exist_ok=True)
    (output / "masks").mkdir(parents=True, exist_ok=True)

    t1_path, probability_path = nilearn_mni152_files(label)
    t1 = np.asarray(nib.load(str(t1_path)).dataobj, dtype=np.uint8)
    probability = np.asarray(nib.load(str(probability_path)).dataobj, dtype=np.uint8)

    datalist: dict[str, list[dict[str, str]]] = {}
    for split, (axis, start, stop, step) in _SPLITS.items():
        view = "axial" if axis == 2 else "coronal"
        items = []
        for index in range(start, stop, step):
            name = f"{view}_{index:03d}.png"
            image = _slice(t1, axis, index)
            mask = (_slice(probability, axis, index) > threshold).astype(np.uint8) * 255
            Image.fromarray(np.ascontiguousarray(image), mode="L").save(output / "images" / name)
            Image.fromarray(np.ascontiguousarray(mask), mode="L").save(output / "masks" / name)
            items.append({"image": f"images/{name}", "label": f"masks/{name}", "case": f"{split}_{view}"})
        datalist[split] = items

    datalist_path = output / "datalist.json"
    datalist_path.write_text(json.dumps(datalist, indent=2))
    counts = ", ".join(f"{split} {len(items)}" for split, items in datalist.items())
    logger.info("wrote MNI152 %s slices to %s (%s)", label, output, counts)
    return datalist_path


if __name__ == "__main__":
    import fire

    logging.basicConfig(level=logging.INFO, format="%(asctime)s - %(name)s - %(levelname)s - %(message)s")
    fire.Fire(prepare_mni152_slices)
