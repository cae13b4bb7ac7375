"""Volumes and DICOM: photometric handling, slice order, label alignment, slicing and restacking."""

from __future__ import annotations

import json
import logging
import shutil

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from monai.transforms import Compose, Invertd

from autosam.data import InvalidItemError, build_datalist, get_deterministic_transforms
from autosam.data.dicom import read_dicom_picture, read_dicom_series
from autosam.data.sam_geometry import SamGeometryd
from autosam.data.volume import ExtractSliced, stack_slices


def _case(shared_cases, prefix):
    folder = next(p for p in shared_cases.iterdir() if p.name.startswith(prefix))
    return folder, json.loads((folder / "expected.json").read_text())


def _until(transforms, kind):
    """Return the transforms before the first instance of `kind`."""
    index = next(i for i, t in enumerate(transforms) if isinstance(t, kind))
    return Compose(transforms[:index])


def test_monochrome1_inverted_equals_twin(shared_cases):
    folder, _ = _case(shared_cases, "G8")
    inverted, _ = read_dicom_picture(folder / "gray_MONOCHROME1.dcm")
    twin, _ = read_dicom_picture(folder / "gray_MONOCHROME2.dcm")
    stored = pydicom.dcmread(folder / "gray_MONOCHROME1.dcm").pixel_array
    assert inverted.dtype == twin.dtype
    assert np.array_equal(inverted, twin)
    assert np.array_equal(inverted, 4095 - stored)


@pytest.mark.parametrize(
    ("name", "tolerance_key"),
    [
        ("colour_RGB_reference.dcm", None),
        ("colour_YBR_FULL_uncompressed.dcm", "YBR_FULL_uncompressed"),
        ("colour_YBR_FULL_422_jpeg_baseline.dcm", "YBR_FULL_422_jpeg_baseline"),
    ],
)
def test_colour_dicom_converted_to_rgb(shared_cases, name, tolerance_key):
    folder, expected = _case(shared_cases, "G8")
    tolerance = 0 if tolerance_key is None else expected["tolerance"][tolerance_key]
    array, _ = read_dicom_picture(folder / name)
    for patch, (row, column) in expected["patch_centres_rc"].items():
        rgb = array[row, column].astype(int)
        assert np.abs(rgb - np.array(expected["patch_rgb_expected"][patch])).max() <= tolerance, (patch, rgb)


def test_dicom_pictures_through_rgb_pipeline(shared_cases):
    folder, expected = _case(shared_cases, "G8")
    transforms = Compose(get_deterministic_transforms(("image",), spatial_size=80))
    colour = transforms({"image": str(folder / "colour_YBR_FULL_uncompressed.dcm")})["image"]
    assert tuple(colour.shape) == (3, 80, 80)
    row, column = expected["patch_centres_rc"]["red"]
    assert colour[:, row, column].tolist() == pytest.approx(
        [255, 0, 0], abs=expected["tolerance"]["YBR_FULL_uncompressed"]
    )
    grey = transforms({"image": str(folder / "gray_MONOCHROME1.dcm")})["image"]
    assert tuple(grey.shape) == (3, 80, 80)
    assert float(grey.max()) <= 255.0
    assert float(grey.max()) > 100.0  # 12-bit values scaled by 255 / 4095


@pytest.mark.parametrize("variant", ["const_instnum", "reversed_instnum"])
def test_series_sorted_by_position(shared_cases, variant):
    folder, expected = _case(shared_cases, "G9")
    truth = expected["variants"][variant]
    volume, meta = read_dicom_series(folder / variant)
    values = [float(np.median(volume[..., k])) for k in range(volume.shape[2])]
    assert values == truth["expected_values_along_increasing_z"]
    affine = meta["affine"]
    z = [affine[2, 3] + k * affine[2, 2] for k in range(volume.shape[2])]
    assert z == pytest.approx(truth["expected_z_mm"])
    assert affine[2, 2] == pytest.approx(truth["expected_spacing_mm"])


def test_missing_slice_raises_or_warns(shared_cases, caplog):
    folder, expected = _case(shared_cases, "G9")
    with pytest.raises(InvalidItemError) as raised:
        read_dicom_series(folder / "missing_slice")
    message = str(raised.value)
    assert "missing_slice" in message
    assert "SeriesInstanceUID" in message
    assert "2.500 mm" in message
    assert "7.500 mm" in message
    assert "5.000 mm apart" in message

    with caplog.at_level(logging.WARNING):
        volume, _ = read_dicom_series(folder / "missing_slice", allow_uneven_spacing=True)
    values = [float(np.median(volume[..., k])) for k in range(volume.shape[2])]
    assert values == expected["variants"]["missing_slice"]["expected_values_along_increasing_z"]
    assert "unevenly spaced" in caplog.text


def test_duplicated_slice_named(shared_cases, tmp_path):
    folder, _ = _case(shared_cases, "G9")
    source = sorted((folder / "const_instnum").glob("*.dcm"))
    for path in source:
        shutil.copy(path, tmp_path / path.name)
    shutil.copy(source[0], tmp_path / "copy.dcm")
    with pytest.raises(
        InvalidItemError, match=r"same position .*copy\.dcm|same position .*" + source[0].name
    ):
        read_dicom_series(tmp_path)


def test_dicom_without_pixel_data_named(shared_cases, tmp_path):
    folder, _ = _case(shared_cases, "G9")
    dataset = pydicom.dcmread(sorted((folder / "const_instnum").glob("*.dcm"))[0])
    del dataset.PixelData
    dataset.save_as(tmp_path / "no_pixels.dcm")
    with pytest.raises(InvalidItemError, match=r"'.*no_pixels\.dcm' has no pixel data"):
        read_dicom_picture(tmp_path / "no_pixels.dcm")


def test_ct_dicom_series_aligns_with_label(shared_data):
    folder = shared_data / "totalsegmentator_examples" / "ct_dicom"
    item = {
        "image": str(folder / "series"),
        "label": str(folder / "example_seg_dicom.nii.gz"),
        "slice_index": 7,
    }
    transforms = get_deterministic_transforms(
        modality="ct", window_level=40, window_width=400, label_values=[5]
    )
    loaded = _until(transforms, ExtractSliced)(dict(item))
    image, label = loaded["image"], loaded["label"]
    assert tuple(image.shape) == tuple(label.shape) == (1, 512, 512, 20)
    nifti = nib.load(folder / "example_seg_dicom.nii.gz")
    oriented_label = nib.as_closest_canonical(nifti)
    np.testing.assert_allclose(np.asarray(label.affine), oriented_label.affine, atol=1e-3)
    assert int(label.sum()) == int((np.asarray(oriented_label.dataobj) == 5).sum())

    # Oracle for the ordering, orientation and window: pydicom pixels of the 8th slice from the bottom.
    datasets = sorted(
        (pydicom.dcmread(p) for p in (folder / "series").iterdir()),
        key=lambda d: float(d.ImagePositionPatient[2]),
    )
    hounsfield = datasets[7].pixel_array * float(datasets[7].RescaleSlope) + float(
        datasets[7].RescaleIntercept
    )
    expected = np.clip((hounsfield - (40 - 200)) / 400.0 * 255.0, 0, 255).T[
        ::-1, ::-1
    ]  # rows x cols -> RAS x, y
    sliced = _until(transforms, SamGeometryd)(dict(item))["image"]
    assert tuple(sliced.shape) == (3, 512, 512)
    np.testing.assert_allclose(sliced[0].numpy(), expected, atol=1e-3)

    liver = label[0] > 0
    liver_hu = (image[0][liver] / 255.0 * 400.0 - 160.0).mean()
    assert 0.0 < float(liver_hu) < 150.0  # soft tissue, inside the window


def test_dicom_seg_aligns_with_ct(shared_data):
    folder = shared_data / "dcmqi_ct3slice_seg"
    transforms = get_deterministic_transforms(modality="ct")
    load = _until(transforms, ExtractSliced)
    from_seg = load({"image": str(folder / "ct-3slice"), "label": str(folder / "liver.dcm")})["label"]
    from_nrrd = load({"image": str(folder / "ct-3slice"), "label": str(folder / "liver_seg.nrrd")})["label"]
    assert int(from_seg.sum()) == 107098
    assert torch.equal(from_seg.as_tensor(), from_nrrd.as_tensor())


def test_dicom_layout_lists_seg_label(shared_data):
    datalist = build_datalist("dicom", shared_data / "dcmqi_ct3slice_seg", val_fraction=0.0)
    items = datalist["training"]
    assert [item["slice_index"] for item in items] == [0, 1, 2]
    assert all(item["label"].endswith("liver.dcm") for item in items)
    assert all(item["foreground"] for item in items)


def test_volume_slices_restack_to_file(shared_data):
    folder = shared_data / "monai_anatomical"
    datalist = build_datalist("nifti", folder, val_fraction=0.0, axcodes="RAS")
    items = [item for item in datalist["training"] if item["case"] == "anatomical"]
    assert len(items) == 25
    assert items[0]["num_slices"] == 25
    transforms = get_deterministic_transforms(modality="mr", spatial_size=64, axcodes="RAS")
    geometry = next(t for t in transforms if isinstance(t, SamGeometryd))
    before_geometry = _until(transforms, SamGeometryd)
    compose = Compose(transforms)
    invert = Invertd(keys="pred", transform=geometry, orig_keys="image", nearest_interp=False)

    exact_slices, predictions = [], []
    for item in items:
        exact_slices.append(before_geometry(dict(item))["label"])
        out = compose(dict(item))
        assert tuple(out["image"].shape) == (3, 64, 64)
        out["pred"] = out["label"].clone()
        predictions.append(invert(out)["pred"])

    original = nib.load(folder / "anatomical_label.nii.gz")
    truth = np.asarray(original.dataobj) > 0
    exact = stack_slices(exact_slices)
    assert tuple(exact.shape) == (1, *original.shape)
    np.testing.assert_allclose(np.asarray(exact.affine), original.affine, atol=1e-4)
    assert np.array_equal(exact[0].numpy() > 0.5, truth)

    # Through SAM geometry and back (33 x 41 -> 64 x 64 -> 33 x 41) small masks lose a few edge pixels.
    restored = stack_slices(predictions)[0].numpy() > 0.5
    dice = 2 * (restored & truth).sum() / (restored.sum() + truth.sum())
    assert dice > 0.9
    foreground_slices = int((truth.sum(axis=(0, 1)) > 0).sum())
    assert sum(item["foreground"] for item in items) == foreground_slices


def test_invertd_through_slice_to_volume(shared_data):
    folder = shared_data / "monai_anatomical"
    item = {
        "image": str(folder / "reoriented_anat_moved.nii"),
        "label": str(folder / "reoriented_anat_moved_label.nii.gz"),
        "slice_index": 9,
        "slice_axis": 1,
    }
    transforms = Compose(get_deterministic_transforms(modality="mr", spatial_size=48, axcodes="LPS"))
    out = transforms(item)
    out["pred"] = torch.ones_like(out["label"])  # mark the whole slice
    pred = Invertd(keys="pred", transform=transforms, orig_keys="image", nearest_interp=True)(out)["pred"]
    original = nib.load(folder / "reoriented_anat_moved.nii")
    assert tuple(pred.shape) == (1, *original.shape)
    np.testing.assert_allclose(np.asarray(pred.affine), original.affine, atol=1e-4)
    # Exactly one plane of the file's grid is marked: the 10th along the axis that LPS put second.
    marked = np.argwhere(pred[0].numpy() > 0.5)
    varying = [axis for axis in range(3) if len(np.unique(marked[:, axis])) > 1]
    fixed_axis = next(axis for axis in range(3) if axis not in varying)
    assert len(varying) == 2
    assert len(np.unique(marked[:, fixed_axis])) == 1
    assert len(marked) == np.prod([original.shape[a] for a in varying])


def test_4d_volume_rejected_singleton_squeezed(shared_data, tmp_path):
    source = nib.load(shared_data / "monai_anatomical" / "anatomical.nii")
    data = np.asarray(source.dataobj)
    label = np.asarray(nib.load(shared_data / "monai_anatomical" / "anatomical_label.nii.gz").dataobj)
    nib.save(nib.Nifti1Image(np.stack([data] * 3, axis=-1), source.affine), tmp_path / "four_d.nii.gz")
    nib.save(nib.Nifti1Image(data[..., None], source.affine), tmp_path / "singleton.nii.gz")
    nib.save(nib.Nifti1Image(label, source.affine), tmp_path / "label.nii.gz")
    transforms = Compose(get_deterministic_transforms(modality="mr", spatial_size=32))

    with pytest.raises(RuntimeError) as raised:
        transforms(
            {
                "image": str(tmp_path / "four_d.nii.gz"),
                "label": str(tmp_path / "label.nii.gz"),
                "slice_index": 3,
            }
        )
    cause = raised.value.__cause__
    assert isinstance(cause, InvalidItemError)
    assert "four_d.nii.gz" in str(cause)
    assert "4th dimension of size 3" in str(cause)

    out = transforms(
        {
            "image": str(tmp_path / "singleton.nii.gz"),
            "label": str(tmp_path / "label.nii.gz"),
            "slice_index": 3,
        }
    )
    assert tuple(out["image"].shape) == (3, 32, 32)


def test_msd_dataset_json_ct_and_mr(shared_data, tmp_path):
    examples = shared_data / "totalsegmentator_examples"
    description = {
        "training": [
            {
                "image": str(examples / "ct_sm" / "example_ct_sm.nii.gz"),
                "label": str(examples / "ct_sm" / "example_seg.nii.gz"),
            },
            {
                "image": str(examples / "mr_sm" / "example_mr_sm.nii.gz"),
                "label": str(examples / "mr_sm" / "example_seg_mr.nii.gz"),
            },
        ]
    }
    (tmp_path / "dataset.json").write_text(json.dumps(description))
    datalist = build_datalist("nifti", tmp_path, val_fraction=0.5, seed=1, label_values=[5])
    cases = {item["case"] for item in datalist["training"]} | {
        item["case"] for item in datalist["validation"]
    }
    assert cases == {"example_ct_sm", "example_mr_sm"}
    assert not {i["case"] for i in datalist["training"]} & {i["case"] for i in datalist["validation"]}

    for case, modality in (("example_ct_sm", "ct"), ("example_mr_sm", "mr")):
        items = [
            i for i in datalist["training"] + datalist["validation"] if i["case"] == case and i["foreground"]
        ]
        out = Compose(get_deterministic_transforms(modality=modality, spatial_size=64, label_values=[5]))(
            items[len(items) // 2]
        )
        assert tuple(out["image"].shape) == (3, 64, 64)
        assert 0.0 <= float(out["image"].min())
        assert float(out["image"].max()) <= 255.0
        assert float(out["label"].sum()) > 0


def test_probability_map_threshold(shared_data, tmp_path):
    mni = shared_data / "mni152_nilearn"
    description = {
        "training": [
            {
                "image": str(mni / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"),
                "label": str(mni / "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz"),
            }
        ]
    }
    (tmp_path / "dataset.json").write_text(json.dumps(description))
    datalist = build_datalist("nifti", tmp_path, val_fraction=0.0, slices=False)
    item = dict(datalist["training"][0], slice_index=94)
    out = Compose(get_deterministic_transforms(modality="mr", spatial_size=64, mask_threshold=127))(item)
    assert float(out["label"].sum()) > 0
    assert set(out["label"].unique().tolist()) == {0.0, 1.0}


def test_dicom_layout_reports_missing_slice(shared_cases):
    folder, _ = _case(shared_cases, "G9")
    with pytest.raises(InvalidItemError, match="missing_slice"):
        build_datalist("dicom", folder)
    datalist = build_datalist("dicom", folder, skip_invalid=True)
    assert len(datalist["skipped"]) == 1
    assert datalist["skipped"][0]["file"].endswith("missing_slice")
    # Unlabelled series are listed, slice by slice, under "test" for inference.
    assert datalist["training"] == []
    assert sorted({item["case"] for item in datalist["test"]}) == ["const_instnum", "reversed_instnum"]
    assert [item["slice_index"] for item in datalist["test"] if item["case"] == "const_instnum"] == [
        0,
        1,
        2,
        3,
    ]
