"""MONAI Label app that serves the autosam bundle: automatic segmentation and training from stored labels.

Start it with an app folder made by `python -m autosam.monailabel init-app APP_DIR --bundle bundle`:

    monailabel start_server --app APP_DIR --studies STUDIES --host 127.0.0.1 --port 8000

`--conf models NAME[,NAME]` picks bundle folders under `APP_DIR/model/` (default: autosam);
`--conf skip_trainers true` serves inference only; `--conf volume_intensity_range LOW,HIGH` fixes
the intensity window for slices of volumes (default: percentiles of each volume).

Compared with MONAI Label's stock bundle app, this app
- rejects bad requests with a 4xx status and a message (the stock endpoints return 500): an
  unknown model or image id with 404, a file type it cannot segment with 415, an unreadable image with 422;
- lists a model as soon as training has written its first checkpoint, without a restart;
- never downloads anything: bundles are local, and dcmqi's `itkimage2segimage` (which MONAI Label
  fetches from the internet to write DICOM SEG) is used only when it is already on PATH.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

import monailabel
from fastapi import HTTPException
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random
from monailabel.utils.others.generic import strtobool

import autosam
from autosam.data.errors import InvalidItemError
from autosam.data.io import IMAGE_2D_SUFFIXES, image_2d_shape
from autosam.monailabel.infer import AutoSAMInferTask
from autosam.monailabel.train import AutoSAMTrainTask
from autosam.monailabel.volumes import VOLUME_SUFFIXES, is_volume

__all__ = ["AutoSAMApp", "check_image_file"]

logger = logging.getLogger(__name__)

DCMQI_TOOL = "itkimage2segimage"


def check_image_file(path: str) -> None:
    """Raise `HTTPException` 415 or 422 unless `path` is a picture or volume that autosam can segment."""
    name = os.path.basename(path)
    if os.path.isdir(path):
        return  # a DICOM series folder; MONAI's loader reports its own errors
    if name.lower().endswith(IMAGE_2D_SUFFIXES):
        try:
            image_2d_shape(path)
        except InvalidItemError as err:
            raise HTTPException(status_code=422, detail=str(err)) from err
        return
    if is_volume(path):
        import SimpleITK

        reader = SimpleITK.ImageFileReader()
        reader.SetFileName(path)
        try:
            reader.ReadImageInformation()
        except RuntimeError as err:
            raise HTTPException(
                status_code=422,
                detail=f"cannot read volume file '{name}': {str(err).strip().splitlines()[-1]}; "
                "re-export it as NIfTI or NRRD",
            ) from err
        return
    supported = ", ".join(sorted(set(IMAGE_2D_SUFFIXES + VOLUME_SUFFIXES)))
    suffix = "".join(Path(name).suffixes) or "(none)"
    raise HTTPException(
        status_code=415,
        detail=f"file type '{suffix}' is not an image type autosam segments; send one of {supported}, "
        "or a DICOM series",
    )


class AutoSAMApp(MONAILabelApp):
    """Serve the bundles in `APP_DIR/model/` with autosam's infer and train tasks."""

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        """
        Args:
            app_dir: the app folder (made by `python -m autosam.monailabel init-app`).
            studies: a folder of studies, or the URL of a DICOMweb service.
            conf: the `--conf` key/value pairs of `monailabel start_server`.
        """
        self.model_dir = Path(app_dir) / "model"
        self.slice_dir = str(Path(app_dir) / "cache" / "slices")
        names = [n.strip() for n in conf.get("models", "autosam").split(",") if n.strip()]
        self.bundles: dict[str, str] = {}
        for name in names:
            bundle = self.model_dir / name
            if not (bundle / "configs" / "inference.json").is_file():
                raise FileNotFoundError(
                    f"bundle '{bundle}' not found (no configs/inference.json); create it with "
                    f"`python -m autosam.monailabel init-app {app_dir} --bundle BUNDLE --name {name}`"
                )
            self.bundles[name] = str(bundle)

        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name=f"autosam {autosam.__version__} (MONAI Label {monailabel.__version__})",
            description="AutoSAM: a learned prompt encoder drives a frozen Segment Anything Model",
            version=autosam.__version__,
        )

    def init_infers(self) -> dict[str, InferTask]:
        """Create one inference task per bundle; it becomes valid once `models/model.pt` exists."""
        return {name: AutoSAMInferTask(path, self.conf) for name, path in self.bundles.items()}

    def init_trainers(self) -> dict[str, TrainTask]:
        """Create one training task per bundle unless `--conf skip_trainers true`."""
        if strtobool(self.conf.get("skip_trainers", "false")):
            return {}
        trainers: dict[str, TrainTask] = {}
        for name, path in self.bundles.items():
            task = AutoSAMTrainTask(path, self.conf, slice_dir=self.slice_dir)
            if task.is_valid():
                trainers[name] = task
        return trainers

    def init_strategies(self) -> dict[str, Strategy]:
        """Offer the next study to label at random or in datastore order."""
        return {"random": Random(), "first": First()}

    def _refresh_infers(self) -> None:
        """Re-create a model's inference task once its first checkpoint exists."""
        for name, path in self.bundles.items():
            task = self._infers.get(name)
            if task is not None and task.is_valid():
                continue
            if (Path(path) / "models" / "model.pt").is_file():
                logger.info("checkpoint found for model '%s'; serving it", name)
                self._infers[name] = AutoSAMInferTask(path, self.conf)

    def info(self) -> dict[str, Any]:
        """Describe the app; models trained since the start are listed too."""
        self._refresh_infers()
        return super().info()

    def infer(self, request: dict[str, Any], datastore: Datastore | None = None) -> dict[str, Any]:
        """Check the request (model, image id or file) and run inference."""
        self._refresh_infers()
        model = request.get("model")
        task = self._infers.get(model)
        if task is None or not task.is_valid():
            available = sorted(n for n, t in self._infers.items() if t.is_valid())
            reason = "has no checkpoint yet (train it first)" if task is not None else "is not served"
            raise HTTPException(
                status_code=404, detail=f"model '{model}' {reason}; available models: {available}"
            )

        image = request.get("image")
        if isinstance(image, str):
            if os.path.exists(image):
                check_image_file(image)  # an uploaded file
            else:
                store = datastore if datastore else self.datastore()
                if image not in store.list_images():
                    raise HTTPException(
                        status_code=404,
                        detail=f"image id '{image}' not found in the datastore; GET /datastore/?output=all lists the ids",
                    )
                uri = store.get_image_uri(image)
                if uri and os.path.exists(uri):
                    check_image_file(uri)
        return super().infer(request, datastore)

    def bundle_path(self, model: str | None) -> str | None:
        """Return a model's bundle folder; raise 404 for a model name this app does not serve.

        MONAI Label's `/train/{model}`, `/batch/infer/{model}` and `/scoring/` endpoints call this in
        the server process before they start a background process, so it is the one place where an
        unknown model can still get a 4xx response. Scoring passes no model.
        """
        if model and model not in self._trainers and model not in self._infers:
            raise HTTPException(
                status_code=404,
                detail=f"model '{model}' is not served; trainable models: {sorted(self._trainers)}",
            )
        return super().bundle_path(model)

    def _download_dcmqi_tools(self) -> None:
        """Use dcmqi's DICOM SEG writer only if it is installed; never download it."""
        if shutil.which(DCMQI_TOOL) or (Path(self.app_dir) / "bin" / DCMQI_TOOL).exists():
            return
        logger.warning(
            "%s (dcmqi) is not on PATH: reading studies and DICOM SEG labels from the DICOMweb store works, "
            "but saving a final label back as DICOM SEG fails; install dcmqi to enable it",
            DCMQI_TOOL,
        )
