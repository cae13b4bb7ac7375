"""The MONAI Label app folder writer and the volume slicing, which need no MONAI Label server."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from autosam.monailabel.app_dir import MAIN_PY, create_app_dir, merge_config_files
from autosam.monailabel.volumes import (
    export_volume_slices,
    intensity_window,
    rows_to_slice,
    slice_to_rows,
    volume_to_uint8,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


def _write_json(path: Path, content: dict) -> Path:
    path.write_text(json.dumps(content))
    return path


def test_merge_sets_nested_and_top_level_ids(tmp_path: Path):
    base = _write_json(
        tmp_path / "train.json", {"max_epochs": 100, "train": {"trainer": {"max_epochs": 100}}}
    )
    override = _write_json(tmp_path / "o.json", {"max_epochs": 2, "train#trainer#max_epochs": 3, "new_id": 1})

    merged = merge_config_files(base, [override])

    assert merged["max_epochs"] == 2
    assert merged["train"]["trainer"]["max_epochs"] == 3
    assert merged["new_id"] == 1


def test_merge_skips_id_without_parent(tmp_path: Path):
    base = _write_json(tmp_path / "inference.json", {"spatial_size": 352})
    override = _write_json(tmp_path / "o.json", {"train#trainer#max_epochs": 3, "spatial_size": 256})

    merged = merge_config_files(base, [override])

    assert merged == {"spatial_size": 256}


def test_merge_applies_files_in_order(tmp_path: Path):
    base = _write_json(tmp_path / "b.json", {"handlers": [{"a": 1}, {"a": 2}]})
    first = _write_json(tmp_path / "1.json", {"handlers#1#a": 5, "lr": 0.1})
    second = _write_json(tmp_path / "2.json", {"lr": 0.2})

    merged = merge_config_files(base, [first, second])

    assert merged["handlers"] == [{"a": 1}, {"a": 5}]
    assert merged["lr"] == 0.2


def test_create_app_dir_copies_bundle(tmp_path: Path):
    bundle = create_app_dir(
        tmp_path / "app",
        bundle=REPO_ROOT / "bundle",
        overrides=[REPO_ROOT / "configs" / "cpu_demo.json", REPO_ROOT / "configs" / "monailabel.json"],
    )

    assert (tmp_path / "app" / "main.py").read_text() == MAIN_PY
    assert bundle == tmp_path / "app" / "model" / "autosam"
    assert list((bundle / "models").iterdir()) == []  # no weights are copied from the source bundle
    inference = json.loads((bundle / "configs" / "inference.json").read_text())
    train = json.loads((bundle / "configs" / "train.json").read_text())
    demo = json.loads((REPO_ROOT / "configs" / "cpu_demo.json").read_text())
    assert inference["sam_model_type"] == demo["sam_model_type"]
    assert train["encoder_name"] == demo["encoder_name"]
    assert train["data"] == {"training": "@train#dataset#data", "validation": "@validate#dataset#data"}
    metadata = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert metadata == json.loads((REPO_ROOT / "bundle" / "configs" / "metadata.json").read_text())


def test_create_app_dir_renames_label(tmp_path: Path):
    bundle = create_app_dir(tmp_path / "app", bundle=REPO_ROOT / "bundle", label="liver")

    metadata = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert metadata["network_data_format"]["outputs"]["pred"]["channel_def"] == {
        "0": "background",
        "1": "liver",
    }
    source = json.loads((REPO_ROOT / "bundle" / "configs" / "metadata.json").read_text())
    assert source["network_data_format"]["outputs"]["pred"]["channel_def"]["1"] != "liver"


def test_create_app_dir_keeps_existing_configs(tmp_path: Path):
    create_app_dir(tmp_path / "app", bundle=REPO_ROOT / "bundle")
    with pytest.raises(FileExistsError, match="--force"):
        create_app_dir(tmp_path / "app", bundle=REPO_ROOT / "bundle")
    create_app_dir(tmp_path / "app", bundle=REPO_ROOT / "bundle", force=True)


def test_create_app_dir_rejects_non_bundle(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="metadata.json"):
        create_app_dir(tmp_path / "app", bundle=tmp_path)


def test_slice_rows_are_array_columns():
    array_slice = np.arange(12).reshape(3, 4)  # X = 3, Y = 4
    picture = slice_to_rows(array_slice)

    assert picture.shape == (4, 3)
    assert picture[1, 2] == array_slice[2, 1]
    np.testing.assert_array_equal(rows_to_slice(picture), array_slice)


def test_intensity_window_fixed_and_invalid():
    volume = np.linspace(-1000, 1000, 1001)

    assert intensity_window(volume, (-160, 240)) == (-160.0, 240.0)
    with pytest.raises(ValueError, match="high > low"):
        intensity_window(volume, (240, -160))
    low, high = intensity_window(volume)
    assert low == pytest.approx(-990.0)
    assert high == pytest.approx(990.0)
    np.testing.assert_array_equal(
        volume_to_uint8(np.array([-200.0, -160.0, 40.0, 240.0, 500.0]), (-160, 240)), [0, 0, 128, 255, 255]
    )


def test_export_volume_slices_matches_nibabel(tmp_path: Path, shared_data: Path):
    folder = shared_data / "totalsegmentator_examples" / "ct_sm"
    image_file, label_file = folder / "example_ct_sm.nii.gz", folder / "example_seg.nii.gz"
    liver_id = 5

    items = export_volume_slices(str(image_file), str(label_file), tmp_path, label_values=[liver_id])

    image = np.asarray(nib.load(image_file).dataobj, dtype=np.float32)  # X x Y x Z
    label = np.asarray(nib.load(label_file).dataobj)
    assert len(items) == image.shape[2]
    assert {item["case"] for item in items} == {str(image_file)}

    liver_voxels = sum(int((np.asarray(Image.open(item["label"])) == 1).sum()) for item in items)
    assert liver_voxels == int((label == liver_id).sum())

    z = image.shape[2] // 2
    window = (float(np.percentile(image, 0.5)), float(np.percentile(image, 99.5)))
    expected = slice_to_rows(volume_to_uint8(image[..., z], window))
    exported = np.asarray(Image.open(items[z]["image"]))
    assert exported.shape == (image.shape[1], image.shape[0])
    assert np.abs(exported.astype(int) - expected.astype(int)).max() <= 1
    np.testing.assert_array_equal(
        np.asarray(Image.open(items[z]["label"])), slice_to_rows(label[..., z] == liver_id)
    )

    # A second export reuses the files instead of writing them again.
    assert export_volume_slices(str(image_file), str(label_file), tmp_path, label_values=[liver_id]) == items
