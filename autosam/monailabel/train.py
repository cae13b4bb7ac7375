"""MONAI Label training task for the autosam bundle, with volumes cut into 2D slices first.

MONAI Label's `BundleTrainTask` passes the datastore's image/label pairs to the bundle's
`train.json` (as `train#dataset#data` and `validate#dataset#data`) and runs it with
`monai.bundle.run`. The autosam bundle is 2D, so this task exports each labelled volume as PNG
slices (`autosam.monailabel.volumes.export_volume_slices`) and splits the data by volume, so that
slices of one volume never land in both the training and the validation split.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from monailabel.interfaces.datastore import Datastore
from monailabel.tasks.train.bundle import BundleTrainTask

from autosam.data.datalist import split_by_case
from autosam.monailabel.infer import parse_intensity_range
from autosam.monailabel.volumes import export_volume_slices, is_volume

__all__ = ["AutoSAMTrainTask"]

logger = logging.getLogger(__name__)


class AutoSAMTrainTask(BundleTrainTask):
    """Train the autosam bundle on the labels in MONAI Label's datastore."""

    def __init__(self, path: str, conf: dict[str, str], *, slice_dir: str, **kwargs: Any) -> None:
        """
        Args:
            path: the bundle folder inside the app (`model/<name>`).
            conf: the server's `--conf` values; `volume_intensity_range` as for inference.
            slice_dir: folder for the PNG slices exported from labelled volumes.
            kwargs: passed to `BundleTrainTask`.
        """
        super().__init__(path, conf, **kwargs)
        self.slice_dir = slice_dir
        self.intensity_range = parse_intensity_range(conf.get("volume_intensity_range"))

    def _fetch_datalist(self, request: dict[str, Any], datastore: Datastore) -> list[dict[str, Any]]:
        """Return the datastore's labelled pairs, with each volume replaced by its slices."""
        datalist = []
        for item in super()._fetch_datalist(request, datastore):
            if is_volume(item["image"]):
                datalist += export_volume_slices(
                    item["image"], item["label"], self.slice_dir, intensity_range=self.intensity_range
                )
            else:
                datalist.append({**item, "case": item["image"]})
        logger.info("training data: %d 2D items from the datastore", len(datalist))
        return datalist

    def _partition_datalist(
        self, datalist: list[dict[str, Any]], request: dict[str, Any], shuffle: bool = False
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
        """Split by case; `val_split` < 0 keeps the bundle's own validation data (as MONAI Label does)."""
        val_split = float(request.get("val_split", 0.2))
        if val_split < 0:
            return datalist, None
        train, val = split_by_case(datalist, val_fraction=min(val_split, 0.9))
        if not val:
            # One labelled case: the bundle's validation still needs data, so it runs on the training case.
            logger.warning("only one labelled case: validation runs on the training data")
            val = list(train)
        logger.info("split by case: %d training and %d validation items", len(train), len(val))
        return train, val

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict:
        """Train; the slice folder is created first because training runs in a fresh process."""
        os.makedirs(self.slice_dir, exist_ok=True)
        return super().__call__(request, datastore)
