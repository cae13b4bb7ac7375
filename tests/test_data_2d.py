"""2D pictures: readers, mask rule, datalists of the flat / PraNet / SUN-SEG layouts, SAM geometry."""

from __future__ import annotations

import json
import logging
import os

import fire
import numpy as np
import pytest
import torch
from monai.transforms import Compose, Invertd, LoadImaged
from monai.utils import set_determinism
from PIL import Image

from autosam.data import (
    BinarizeMaskd,
    Image2DReader,
    InvalidItemError,
    RandColorJitterd,
    build_datalist,
    get_deterministic_transforms,
    get_random_transforms,
    read_image_2d,
    sam_resized_shape,
    split_by_case,
)
from autosam.data.__main__ import datalist as datalist_command


def _load_mask(path) -> torch.Tensor:
    loader = Compose(
        [LoadImaged("label", reader=Image2DReader(), ensure_channel_first=True), BinarizeMaskd("label")]
    )
    return loader({"label": str(path)})["label"]


def _case(shared_cases, prefix):
    folder = next(p for p in shared_cases.iterdir() if p.name.startswith(prefix))
    return folder, json.loads((folder / "expected.json").read_text())


def test_nonbinary_png_mask_area(shared_cases, caplog):
    folder, expected = _case(shared_cases, "G1")
    with caplog.at_level(logging.WARNING):
        mask = _load_mask(folder / "masks" / "0001.png")
    assert tuple(mask.shape[1:]) == tuple(expected["shape_hw"])
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    assert int(mask.sum()) == expected["png_area_gt128_sunseg_rule"]
    assert "0001.png" in caplog.text
    assert "distinct values" in caplog.text


def test_jpeg_mask_area_and_warning(shared_cases, caplog):
    folder, expected = _case(shared_cases, "G1")
    with caplog.at_level(logging.WARNING):
        mask = _load_mask(folder / "masks_jpeg" / "0001.jpg")
    assert int(mask.sum()) == expected["jpeg_area_gt128"]
    assert "0001.jpg" in caplog.text
    assert "JPEG" in caplog.text


@pytest.mark.parametrize(
    "name",
    [
        "mask_u8_0_255.png",
        "mask_u8_0_1.png",
        "mask_u16_0_1.png",
        "mask_u16_0_65535.png",
        "mask_palette_index1_white.png",
        "mask_rgb_white.png",
    ],
)
def test_mask_encodings_same_area(shared_cases, name):
    folder, expected = _case(shared_cases, "G3")
    mask = _load_mask(folder / name)
    assert tuple(mask.shape) == (1, *expected["shape_hw"])
    assert int(mask.sum()) == expected["every_file_must_yield_area"]


def test_cvc_tiffs_load_in_colour(shared_data):
    frames = sorted((shared_data / "cvc_clinicdb" / "images").glob("*.tif"))
    frames += sorted((shared_data / "cvc_clinicdb_video" / "Frame").glob("*/*.tif"))
    assert len(frames) == 54 + 36
    for path in frames:
        array, meta = read_image_2d(path)
        assert array.shape == (288, 384, 3), path
        assert meta["source_dtype"] == "uint8"
        red, green, blue = (array[..., c].astype(np.int16) for c in range(3))
        # A grey read (first channel copied three times) would make these differences zero.
        assert np.abs(red - green).mean() > 1.0, path
        assert np.abs(red - blue).mean() > 1.0, path


def test_kvasir_flat_layout_loads(shared_data):
    datalist = build_datalist("flat", shared_data / "kvasir_seg", val_fraction=0.2, seed=0)
    assert len(datalist["training"]) + len(datalist["validation"]) == 200
    assert len(datalist["validation"]) == 40

    transforms = Compose(get_deterministic_transforms(spatial_size=256))
    for item in datalist["training"][:3] + datalist["validation"][:2]:
        height, width = Image.open(item["image"]).size[::-1]
        out = transforms(item)
        assert tuple(out["image"].shape) == (3, 256, 256)
        assert tuple(out["label"].shape) == (1, 256, 256)
        assert out["image"].dtype == torch.float32
        assert out["label"].dtype == torch.float32
        assert 0.0 <= float(out["image"].min())
        assert float(out["image"].max()) <= 255.0
        assert set(out["label"].unique().tolist()) == {0.0, 1.0}
        resized_h, resized_w = sam_resized_shape(height, width, 256)
        # SAM pads the bottom and right: nothing of the picture lies there.
        assert float(out["image"][:, resized_h:, :].abs().sum()) == 0.0
        assert float(out["image"][:, :, resized_w:].abs().sum()) == 0.0


@pytest.mark.parametrize(
    ("folder", "count", "image_name"),
    [("cvc_clinicdb", 54, "104.tif"), ("monuseg", 3, "TCGA-2Z-A9J9-01A-01-TS1.tif")],
)
def test_tiff_flat_layouts_load(shared_data, folder, count, image_name):
    datalist = build_datalist("flat", shared_data / folder, val_fraction=0.0)
    assert len(datalist["training"]) == count
    item = next(i for i in datalist["training"] if i["image"].endswith(image_name))
    out = Compose(get_deterministic_transforms(spatial_size=128))(item)
    assert tuple(out["image"].shape) == (3, 128, 128)
    assert float(out["label"].sum()) > 0


def test_invertd_restores_non_square_size(shared_data):
    item = {
        "image": str(shared_data / "cvc_clinicdb" / "images" / "104.tif"),
        "label": str(shared_data / "cvc_clinicdb" / "masks" / "104.tif"),
    }
    transforms = Compose(get_deterministic_transforms(spatial_size=256))
    out = transforms(dict(item))
    out["pred"] = out["label"].clone()  # a perfect prediction, in SAM geometry
    inverted = Invertd(keys="pred", transform=transforms, orig_keys="image", nearest_interp=False)(out)
    pred = inverted["pred"]
    assert tuple(pred.shape) == (1, 288, 384)

    original = _load_mask(item["label"])
    binary = pred > 0.5
    dice = 2 * float((binary & (original > 0)).sum()) / float(binary.sum() + (original > 0).sum())
    assert dice > 0.97


def test_sun_seg_frames_sorted_numerically(shared_data):
    datalist = build_datalist("sun-seg", shared_data / "cvc_clinicdb_video", val_fraction=0.0)
    frames = [item["frame"] for item in datalist["training"] if item["case"] == "seq01"]
    assert frames == [str(n) for n in range(1, 26)]
    indices = [item["frame_index"] for item in datalist["training"] if item["case"] == "seq04"]
    assert indices == list(range(11))


def test_sun_seg_test_split_keeps_case(shared_cases):
    folder, _ = _case(shared_cases, "G2")
    datalist = build_datalist("sun-seg", folder)
    assert datalist["training"] == []
    assert len(datalist["test"]) == 11
    assert {item["case"] for item in datalist["test"]} == {"case1_1"}
    assert datalist["test"][9]["frame"].endswith("image10")
    assert {item["split"] for item in datalist["test"]} == {"TestEasyDataset"}


def _write_pair(folder_images, folder_masks, stem, size=(40, 30)):
    folder_images.mkdir(parents=True, exist_ok=True)
    folder_masks.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), 90, np.uint8)).save(folder_images / f"{stem}.png")
    mask = np.zeros((size[1], size[0]), np.uint8)
    mask[5:15, 5:20] = 255
    Image.fromarray(mask).save(folder_masks / f"{stem}.png")


def test_cli_keeps_ids_as_strings(tmp_path, monkeypatch):
    root = tmp_path / "1e3"
    for case in ("0012", "1_3", "12345"):
        _write_pair(root / "Frame" / case, root / "GT" / case, "1")
    monkeypatch.chdir(tmp_path)
    fire.Fire(
        {"datalist": datalist_command},
        command=[
            "datalist",
            "--layout",
            "sun-seg",
            "--root",
            "1e3",
            "--output",
            "0012.json",
            "--val_fraction",
            "0.34",
        ],
    )
    written = json.loads((tmp_path / "0012.json").read_text())
    cases = {item["case"] for item in written["training"] + written["validation"]}
    assert cases == {"0012", "1_3", "12345"}
    first = written["training"][0]
    assert not os.path.isabs(first["image"])
    assert (tmp_path / first["image"]).is_file()
    assert len(written["validation"]) == 1


def test_split_by_case_seeded_and_disjoint():
    items = [{"case": f"c{c}", "frame": f} for c in range(10) for f in range(3)]
    training, validation = split_by_case(items, val_fraction=0.3, seed=7)
    again = split_by_case(items, val_fraction=0.3, seed=7)
    assert (training, validation) == again
    assert len({i["case"] for i in validation}) == 3
    assert not {i["case"] for i in training} & {i["case"] for i in validation}
    other = split_by_case(items, val_fraction=0.3, seed=8)[1]
    assert {i["case"] for i in other} != {i["case"] for i in validation}


def test_pranet_layout(tmp_path, shared_data):
    (tmp_path / "TrainDataset").mkdir()
    (tmp_path / "TestDataset" / "CVC-ClinicDB").mkdir(parents=True)
    for name in ("images", "masks"):
        (tmp_path / "TrainDataset" / name).symlink_to(shared_data / "kvasir_seg" / name)
        (tmp_path / "TestDataset" / "CVC-ClinicDB" / name).symlink_to(shared_data / "cvc_clinicdb" / name)
    datalist = build_datalist("pranet", tmp_path, check_sizes=False)
    assert len(datalist["training"]) + len(datalist["validation"]) == 200
    assert len(datalist["test"]) == 54
    assert {item["dataset"] for item in datalist["test"]} == {"CVC-ClinicDB"}


def test_image_without_mask_named(tmp_path):
    _write_pair(tmp_path / "images", tmp_path / "masks", "a")
    _write_pair(tmp_path / "images", tmp_path / "masks", "b")
    (tmp_path / "masks" / "b.png").unlink()
    with pytest.raises(InvalidItemError, match=r"image '.*b\.png' has no mask"):
        build_datalist("flat", tmp_path)
    datalist = build_datalist("flat", tmp_path, skip_invalid=True, val_fraction=0.0)
    assert [item["case"] for item in datalist["training"]] == ["a"]
    assert len(datalist["skipped"]) == 1
    assert datalist["skipped"][0]["file"].endswith("b.png")


def test_mask_size_mismatch_named(tmp_path):
    _write_pair(tmp_path / "images", tmp_path / "masks", "a")
    Image.fromarray(np.zeros((31, 40), np.uint8)).save(tmp_path / "masks" / "a.png")
    with pytest.raises(InvalidItemError, match=r"mask '.*a\.png' is 40x31 .* image '.*a\.png' is 40x30"):
        build_datalist("flat", tmp_path)
    item = {"image": str(tmp_path / "images" / "a.png"), "label": str(tmp_path / "masks" / "a.png")}
    with pytest.raises(RuntimeError) as raised:
        Compose(get_deterministic_transforms())(item)
    assert isinstance(raised.value.__cause__, InvalidItemError)
    assert "31 x 40" in str(raised.value.__cause__)


def test_empty_folder_named(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(InvalidItemError, match="contains no pictures"):
        build_datalist("flat", tmp_path)


def test_truncated_file_named(tmp_path, shared_data):
    source = (shared_data / "kvasir_seg" / "images").iterdir().__next__()
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(source.read_bytes()[:2000])
    with pytest.raises(InvalidItemError, match=r"cannot read image file '.*broken\.jpg'"):
        read_image_2d(broken)


def test_random_transforms_keep_contract(shared_data):
    set_determinism(seed=0)
    try:
        item = {
            "image": str(shared_data / "cvc_clinicdb" / "images" / "104.tif"),
            "label": str(shared_data / "cvc_clinicdb" / "masks" / "104.tif"),
        }
        transforms = Compose(get_deterministic_transforms(spatial_size=128) + get_random_transforms(prob=1.0))
        out = transforms(item)
    finally:
        set_determinism(seed=None)
    assert tuple(out["image"].shape) == (3, 128, 128)
    assert set(out["label"].unique().tolist()) <= {0.0, 1.0}
    assert float(out["image"].min()) >= 0.0
    assert float(out["image"].max()) <= 255.0 + 1e-3


def test_color_jitter_brightness_matches_factor():
    image = torch.rand(3, 16, 16) * 200.0
    jitter = RandColorJitterd("image", brightness=0.4, contrast=0.0, saturation=0.0, hue=0.0)
    jitter.set_random_state(seed=3)
    out = jitter({"image": image})["image"]
    factor = jitter._factors[0]
    assert 0.6 <= factor <= 1.4
    assert factor != 1.0
    torch.testing.assert_close(out, (image * factor).clamp(0, 255), atol=1e-3, rtol=1e-5)
