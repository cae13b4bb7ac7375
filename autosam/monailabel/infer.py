"""MONAI Label inference task for the autosam bundle: 2D pictures as they are, volumes slice by slice.

MONAI Label's `BundleInferTask` runs the bundle's `preprocessing`, `inferer` and `postprocessing`
on one image. Two things do not fit AutoSAM there, and this task handles them:
- Its writer transposes 2D arrays for ITK, but autosam reads pictures rows first (H x W), so a mask
  of a colonoscopy frame would come back transposed. This task writes 2D masks as PNG with Pillow.
- The bundle is 2D. A volume (NIfTI, NRRD, or a DICOM series MONAI Label converted) is cut into
  8-bit slices (`autosam.monailabel.volumes`), each slice runs through the bundle's pipeline, and
  the masks are stacked into a label volume with the image's affine.
"""

from __future__ import annotations

import copy
import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.transforms import LoadImage, SaveImaged
from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.bundle import BundleInferTask
from monailabel.transform.writer import write_itk
from monailabel.utils.others.generic import name_to_device
from PIL import Image

from autosam.monailabel.volumes import (
    intensity_window,
    is_volume,
    rows_to_slice,
    slice_to_rows,
    volume_to_uint8,
)

__all__ = ["AutoSAMInferTask", "parse_intensity_range"]

logger = logging.getLogger(__name__)


def parse_intensity_range(text: str | None) -> tuple[float, float] | None:
    """Parse the `--conf volume_intensity_range LOW,HIGH` value; empty means percentiles of each volume."""
    if not text:
        return None
    try:
        low, high = (float(part) for part in text.split(","))
    except ValueError as err:
        raise ValueError(
            f"volume_intensity_range '{text}' is invalid; give two numbers LOW,HIGH such as -160,240"
        ) from err
    return low, high


def _mask_array(pred: Any, threshold: float) -> np.ndarray:
    """Return the mask `pred > threshold` as uint8 with the channel axis dropped.

    The bundle's postprocessing may end with probabilities or with a 0/1 mask; both work.
    """
    if isinstance(pred, torch.Tensor):
        pred = pred.detach().cpu().numpy()
    mask = np.asarray(pred)
    if mask.ndim == 3 and mask.shape[0] == 1:
        mask = mask[0]
    return (mask > threshold).astype(np.uint8)


class AutoSAMInferTask(BundleInferTask):
    """Segment a 2D picture, or each slice of a volume, with the autosam bundle."""

    def __init__(self, path: str, conf: dict[str, str], **kwargs: Any) -> None:
        """
        Args:
            path: the bundle folder inside the app (`model/<name>`).
            conf: the server's `--conf` values; `volume_intensity_range` (LOW,HIGH) fixes the window
                used to turn volume slices into 8-bit pictures.
            kwargs: passed to `BundleInferTask`.
        """
        # Writing files is this task's job (see `writer`); drop any saver in the bundle's postprocessing.
        kwargs.setdefault("post_filter", [SaveImaged])
        super().__init__(path, conf, type=InferType.SEGMENTATION, load_strict=True, **kwargs)
        self.intensity_range = parse_intensity_range(conf.get("volume_intensity_range"))
        bundle_config = getattr(self, "bundle_config", None)  # absent when the bundle has no inference config
        self.threshold = 0.5
        if bundle_config is not None:
            self.threshold = float(bundle_config.get_parsed_content("threshold", default=0.5))

    def info(self) -> dict[str, Any]:
        """Describe the model to clients; `volumes` marks that 3D studies are segmented slice by slice."""
        info = super().info()
        info["volumes"] = "slice-wise"
        return info

    def __call__(self, request: dict[str, Any], callbacks: dict | None = None) -> tuple[str | None, dict]:
        """Run inference on `request["image"]`, a file path, and return (mask file, result JSON)."""
        image = request.get("image")
        if isinstance(image, str) and is_volume(image):
            return self._infer_volume(request)
        return super().__call__(request, callbacks)

    def writer(
        self, data: dict[str, Any], extension: str | None = None, dtype: Any = None
    ) -> tuple[Any, Any]:
        """Write a 2D mask as an 8-bit PNG of label ids (0 background, 1 the label), rows first."""
        mask = _mask_array(data[self.output_label_key], self.threshold)
        if mask.ndim != 2:
            return super().writer(data, extension, dtype)

        label_id = max(self.labels.values()) if isinstance(self.labels, dict) and self.labels else 1
        output_file = tempfile.NamedTemporaryFile(suffix=".png", delete=False).name
        Image.fromarray(mask * np.uint8(label_id)).save(output_file)
        return output_file, data.get(self.output_json_key, {})

    def _infer_slices(self, slices: np.ndarray, request: dict[str, Any], device: str) -> np.ndarray:
        """Segment Z x H x W uint8 slices one at a time; return the Z x H x W masks."""
        pre: Sequence[Callable] = self.pre_transforms(request)
        post: Sequence[Callable] = self.post_transforms(request)
        masks = []
        with tempfile.TemporaryDirectory(prefix="autosam-slices-") as folder:
            for z, picture in enumerate(slices):
                # The bundle's preprocessing starts from a file path, as in training on exported slices.
                slice_file = str(Path(folder) / f"slice_{z:04d}.png")
                Image.fromarray(picture).save(slice_file)
                data = {**request, "image": slice_file, "image_path": slice_file}
                data = self.run_pre_transforms(data, pre)
                data = self.run_inferer(data, device=device)
                data = self.run_invert_transforms(data, pre, self.inverse_transforms(data))
                data = self.run_post_transforms(data, post)
                masks.append(_mask_array(data[self.output_label_key], self.threshold))
        return np.stack(masks)

    def _infer_volume(self, request: dict[str, Any]) -> tuple[str, dict]:
        """Segment every slice along the volume's last array axis and write the label volume."""
        begin = time.time()
        data = copy.deepcopy(self._config)
        data.update(request)
        device = name_to_device(data.get("device", "cuda"))
        data["device"] = device

        volume = LoadImage(image_only=True)(data["image"])  # X x Y x Z
        if volume.ndim != 3:
            raise ValueError(
                f"image '{data['image']}' has array shape {tuple(volume.shape)}; expected X x Y x Z"
            )
        window = intensity_window(volume.numpy(), self.intensity_range)
        pixels = volume_to_uint8(volume.numpy(), window)
        slices = np.stack([slice_to_rows(pixels[..., z]) for z in range(pixels.shape[-1])])  # Z x H x W
        logger.info(
            "volume '%s': %d slices of %s, window %.1f to %.1f",
            data["image"],
            slices.shape[0],
            "x".join(str(s) for s in slices.shape[1:]),
            *window,
        )

        masks = self._infer_slices(slices, data, device)  # Z x H x W
        label_id = max(self.labels.values()) if isinstance(self.labels, dict) and self.labels else 1
        label = np.stack([rows_to_slice(mask) for mask in masks], axis=-1) * np.uint8(label_id)  # X x Y x Z

        output_file = tempfile.NamedTemporaryFile(suffix=".nii.gz", delete=False).name
        write_itk(label, output_file, volume.affine.numpy(), np.uint8, True)
        latency = round(time.time() - begin, 2)
        logger.info("volume label written to '%s' in %.2f s", output_file, latency)
        return output_file, {
            "label_names": self.labels,
            "latencies": {"total": latency},
            "slices": int(len(masks)),
        }
