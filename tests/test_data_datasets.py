"""Datasets that name failing items, skip bad ones, cache the deterministic part; the foreground sampler."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from monai.data import DataLoader
from monai.transforms import Compose
from PIL import Image

from autosam.data import (
    ForegroundSliceSampler,
    build_datalist,
    get_deterministic_transforms,
    get_random_transforms,
    make_dataset,
)


def _write_items(folder, count=3, broken=1):
    (folder / "images").mkdir()
    (folder / "masks").mkdir()
    items = []
    for i in range(count):
        image, mask = folder / "images" / f"{i}.png", folder / "masks" / f"{i}.png"
        Image.fromarray(np.full((30, 40, 3), 60 + i, np.uint8)).save(image)
        mask_array = np.zeros((30, 40), np.uint8)
        mask_array[5:20, 5:25] = 255
        Image.fromarray(mask_array).save(mask)
        items.append({"image": str(image), "label": str(mask), "case": str(i)})
    (folder / "images" / f"{broken}.png").write_bytes(b"not a png")
    return items


@pytest.mark.parametrize("cache", ["none", "memory", "disk"])
def test_failing_item_named(tmp_path, cache):
    items = _write_items(tmp_path)
    transform = Compose(get_deterministic_transforms(spatial_size=32))
    with pytest.raises(RuntimeError) as raised:
        dataset = make_dataset(items, transform, cache=cache, cache_dir=str(tmp_path / "cache"))
        [dataset[i] for i in range(len(dataset))]
    message = str(raised.value)
    assert "item 1" in message
    assert "case '1'" in message
    assert "1.png" in message
    assert "cannot read image file" in message


@pytest.mark.parametrize("cache", ["none", "memory", "disk"])
def test_skip_invalid_replaces_and_counts(tmp_path, cache, caplog):
    items = _write_items(tmp_path)
    transform = Compose(get_deterministic_transforms(spatial_size=32) + get_random_transforms(prob=0.0))
    with caplog.at_level(logging.WARNING):
        dataset = make_dataset(
            items, transform, cache=cache, cache_dir=str(tmp_path / "cache"), skip_invalid=True
        )
        batches = list(DataLoader(dataset, batch_size=3, num_workers=0))
    assert len(batches) == 1
    batch = batches[0]
    assert tuple(batch["image"].shape) == (3, 3, 32, 32)
    assert batch["case"] == ["0", "2", "2"]  # item 1 is replaced by the next good item
    assert dataset.num_skipped == 1
    assert "skipping it (1 item(s) skipped so far)" in caplog.text


def test_cache_dataset_matches_plain(shared_data):
    datalist = build_datalist("sun-seg", shared_data / "cvc_clinicdb_video", val_fraction=0.0)
    items = [item for item in datalist["training"] if item["case"] == "seq04"][:2]
    transform = Compose(get_deterministic_transforms(spatial_size=64))
    cached = make_dataset(items, transform, cache="memory")
    plain = make_dataset(items, transform, cache="none")
    for i in range(len(items)):
        assert cached[i]["case"] == "seq04"
        np.testing.assert_array_equal(cached[i]["image"].numpy(), plain[i]["image"].numpy())
        np.testing.assert_array_equal(cached[i]["label"].numpy(), plain[i]["label"].numpy())
        assert float(cached[i]["label"].sum()) > 0


def test_foreground_sampler_ratio_and_seed():
    items = [{"foreground": i < 10} for i in range(100)]
    sampler = ForegroundSliceSampler(items, foreground_ratio=0.7, num_samples=2000, seed=5)
    drawn = list(sampler)
    fraction = np.mean([items[i]["foreground"] for i in drawn])
    assert abs(fraction - 0.7) < 0.04  # 0.7 +- 4 binomial standard deviations of 2000 draws
    assert drawn == list(ForegroundSliceSampler(items, foreground_ratio=0.7, num_samples=2000, seed=5))
    sampler.set_epoch(1)
    assert list(sampler) != drawn
    assert len(set(drawn)) > 50


def test_foreground_sampler_needs_flags():
    with pytest.raises(ValueError, match="have no 'foreground'"):
        ForegroundSliceSampler([{"case": "a", "image": "a.png"}])


def test_dicom_layout_ct_series_loads(shared_data):
    folder = shared_data / "totalsegmentator_examples" / "ct_dicom"
    datalist = build_datalist("dicom", folder, val_fraction=0.0, label_values=[5])
    items = datalist["training"]
    assert len(items) == 20
    assert items[0]["image"].endswith("series")
    assert items[0]["label"].endswith("example_seg_dicom.nii.gz")
    out = Compose(get_deterministic_transforms(modality="ct", spatial_size=64, label_values=[5]))(items[10])
    assert tuple(out["image"].shape) == (3, 64, 64)
    assert float(out["label"].sum()) > 0
