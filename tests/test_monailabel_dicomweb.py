"""A live MONAI Label server reads a CT series and its DICOM SEG from Orthanc (DICOMweb) and serves autosam.

Orthanc (Debian's package with its DICOMweb plugin) and MONAI Label both listen on 127.0.0.1 on
free ports. The 3-slice CT and its liver DICOM SEG from dcmqi's test data are uploaded to Orthanc.
Before the server segments the series, the bundle's network is fitted for a few steps to the three
liver slices. The served label volume is then compared with the liver label and with the same
network run in this process, and its geometry with the DICOM headers.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from monailabel_support import (
    MonaiLabelServer,
    OrthancServer,
    dice,
    http,
    predict_mask,
    serve_fitted_bundle,
)
from PIL import Image

from autosam.monailabel.volumes import export_volume_slices

pytestmark = pytest.mark.slow

FIT_STEPS = 20
TEST_OVERRIDES = {"max_epochs": 1, "batch_size": 3, "num_workers": 0, "progress_bar": False}


@dataclass
class ServedCT:
    server: MonaiLabelServer
    orthanc: OrthancServer
    series_uid: str
    ct_files: list[Path]
    slices: list[dict[str, str]]  # exported PNG slices of the CT and the liver label
    bundle: Path
    network: torch.nn.Module
    spatial_size: int


@pytest.fixture(scope="module")
def served_ct(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Iterator[ServedCT]:
    work = tmp_path_factory.mktemp("monailabel-dicomweb")
    source = shared_data / "dcmqi_ct3slice_seg"
    ct_files = sorted((source / "ct-3slice").glob("*.dcm"))

    (work / "orthanc").mkdir()
    orthanc = OrthancServer(work / "orthanc")
    orthanc.start()
    for dicom_file in [*ct_files, source / "liver.dcm"]:
        orthanc.upload(dicom_file)

    slices: list[dict[str, str]] = []

    def fit_items() -> list[dict[str, str]]:
        # The same export the training task runs on the SEG, here from the NRRD copy of the liver label.
        slices.extend(
            export_volume_slices(str(source / "ct-3slice"), str(source / "liver_seg.nrrd"), work / "slices")
        )
        return slices

    series_uid = str(pydicom.dcmread(ct_files[0], stop_before_pixels=True).SeriesInstanceUID)
    try:
        with serve_fitted_bundle(
            work,
            orthanc.dicomweb_url,
            fit_items,
            overrides=TEST_OVERRIDES,
            fit_steps=FIT_STEPS,
            label="liver",
        ) as running:
            yield ServedCT(
                running.server,
                orthanc,
                series_uid,
                ct_files,
                slices,
                running.bundle,
                running.network,
                running.spatial_size,
            )
    finally:
        orthanc.stop()


def test_info_lists_series(served_ct: ServedCT):
    info = http("GET", f"{served_ct.server.url}/info/").json()
    assert info["models"]["autosam"]["labels"] == {"liver": 1}
    assert "autosam" in info["trainers"]
    assert info["datastore"]["total"] == 1
    assert info["datastore"]["completed"] == 1  # the liver SEG in Orthanc labels the series


def test_infer_series_returns_label_volume(served_ct: ServedCT, tmp_path: Path):
    answer = http(
        "POST",
        f"{served_ct.server.url}/infer/autosam",
        params={"image": served_ct.series_uid, "output": "image"},
        files={"params": (None, b"{}")},
        timeout=300,
    )
    assert answer.status == 200, answer.text
    result_file = tmp_path / "label.nii.gz"
    result_file.write_bytes(answer.body)
    result = nib.load(result_file)
    label = np.asarray(result.dataobj)  # X x Y x Z

    # Geometry against the DICOM headers: 512 x 512 pixels of 0.810547 mm, 3 slices 1 mm apart.
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in served_ct.ct_files]
    assert label.shape == (int(headers[0].Columns), int(headers[0].Rows), len(headers))
    spacing = [float(v) for v in headers[0].PixelSpacing]
    positions = sorted(float(h.ImagePositionPatient[2]) for h in headers)
    np.testing.assert_allclose(result.header.get_zooms()[:2], spacing[::-1], rtol=1e-4)
    np.testing.assert_allclose(result.header.get_zooms()[2], positions[1] - positions[0], rtol=1e-3)

    assert set(np.unique(label).tolist()) <= {0, 1}
    assert label.sum() > 0

    # Slice by slice against the liver label and the same network run here.
    for z, item in enumerate(served_ct.slices):
        served_slice = label[..., z].T  # H x W, rows first like the exported PNG
        liver = np.asarray(Image.open(item["label"])) > 0
        assert dice(served_slice, liver) > 0.5, f"slice {z}"
        expected = predict_mask(served_ct.network, item["image"], spatial_size=served_ct.spatial_size)
        assert float((served_slice == expected).mean()) > 0.99, f"slice {z}"


def test_unknown_series_gets_404(served_ct: ServedCT):
    answer = http(
        "POST",
        f"{served_ct.server.url}/infer/autosam",
        params={"image": "1.2.3.4.5.6.7.8.9"},
        files={"params": (None, b"{}")},
    )
    assert answer.status == 404, answer.text
    assert "1.2.3.4.5.6.7.8.9" in answer.json()["detail"]
    assert http("GET", f"{served_ct.server.url}/info/").status == 200


def test_train_on_seg_from_orthanc(served_ct: ServedCT):
    checkpoint = served_ct.bundle / "models" / "model.pt"
    before = checkpoint.stat().st_mtime_ns

    answer = http(
        "POST",
        f"{served_ct.server.url}/train/autosam",
        json_body={"max_epochs": 1, "val_split": 0.2, "device": "cpu", "multi_gpu": False},
    )
    assert answer.status == 200, answer.text
    task = served_ct.server.wait_for_training()
    assert task["status"] == "DONE", "\n".join(task.get("details", []))
    assert checkpoint.stat().st_mtime_ns > before

    # The SEG was converted and cut into the same three slices the fitted checkpoint saw.
    slice_labels = sorted((served_ct.bundle.parents[1] / "cache" / "slices").rglob("*_label.png"))
    assert len(slice_labels) == 3
    for exported, reference in zip(slice_labels, served_ct.slices, strict=True):
        served_liver = np.asarray(Image.open(exported)) > 0
        reference_liver = np.asarray(Image.open(reference["label"])) > 0
        assert dice(served_liver, reference_liver) > 0.99


def test_servers_stop_cleanly(served_ct: ServedCT):
    assert served_ct.server.stop() == 0
    assert served_ct.orthanc.stop() == 0
