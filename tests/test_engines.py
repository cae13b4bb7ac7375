"""Engine pieces of the bundle: embedding cache, batch preparation, prediction writer, config checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from autosam.engines import (
    AutoSAMPrepareBatch,
    ConfigError,
    EmbeddingCache,
    PredictionWriter,
    SunSegMetricHandler,
    as_bool,
    check_bundle_config,
    check_no_spatial_augmentation,
    check_sam_checkpoint,
    latest_checkpoint,
    prepare_datalist,
    select_split,
)
from autosam.metrics.protocol import prepare_uint8_frames
from autosam.metrics.suite import frame_values, summarize_cases
from autosam.networks import AutoSAMNet, build_sam


@pytest.fixture(scope="module")
def tiny_net() -> AutoSAMNet:
    torch.manual_seed(0)
    return AutoSAMNet(sam_model_type="tiny", encoder_name="resnet18", encoder_input_size=64).eval()


def _images(count: int = 3, size: int = 64, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(count, 3, size, size, generator=generator) * 255


# Embedding cache


def test_cache_matches_sam_embeddings(tiny_net: AutoSAMNet) -> None:
    images = _images()
    cache = EmbeddingCache(network=tiny_net)

    first = cache(images)
    second = cache(images)

    assert torch.equal(first, tiny_net.embed_images(images))
    assert torch.equal(first, second)
    assert cache.misses == 3
    assert cache.hits == 3


def test_cache_key_follows_content(tiny_net: AutoSAMNet) -> None:
    images = _images(2)
    cache = EmbeddingCache(network=tiny_net)
    cache(images)

    changed = images.clone()
    changed[1, 0, 0, 0] += 1.0
    cache(changed)

    assert cache.hits == 1
    assert cache.misses == 3


def test_cache_persists_on_disk(tiny_net: AutoSAMNet, tmp_path: Path) -> None:
    images = _images(2)
    EmbeddingCache(network=tiny_net, cache_dir=tmp_path)(images)

    reloaded = EmbeddingCache(network=tiny_net, cache_dir=tmp_path)
    embeddings = reloaded(images)

    assert reloaded.misses == 0
    assert reloaded.hits == 2
    assert torch.equal(embeddings, tiny_net.embed_images(images))
    assert len(list((tmp_path / tiny_net.sam_config_id).glob("*.pt"))) == 2


def test_cache_namespace_per_sam_config(tiny_net: AutoSAMNet, tmp_path: Path) -> None:
    other = AutoSAMNet(
        sam_model_type="tiny", sam_input_size=128, encoder_name="resnet18", encoder_input_size=64
    )
    images = _images(1)
    EmbeddingCache(network=tiny_net, cache_dir=tmp_path)(images)
    other_cache = EmbeddingCache(network=other, cache_dir=tmp_path)
    embeddings = other_cache(images)

    assert other.sam_config_id != tiny_net.sam_config_id
    assert other_cache.misses == 1
    assert embeddings.shape[-2:] == (8, 8)


def test_cache_memory_limit(tiny_net: AutoSAMNet) -> None:
    cache = EmbeddingCache(network=tiny_net, max_items_in_memory=2)
    cache(_images(3))

    assert len(cache) == 2


def test_cache_rejects_other_networks() -> None:
    with pytest.raises(TypeError, match="embed_images"):
        EmbeddingCache(network=torch.nn.Conv2d(3, 1, 1))


# Batch preparation


def test_prepare_batch_embeddings_reach_network(tiny_net: AutoSAMNet) -> None:
    images = _images(2)
    batch = {"image": images, "label": torch.zeros(2, 1, 64, 64), "sam_image": images.clone()}
    prepare = AutoSAMPrepareBatch(embedding_cache=EmbeddingCache(network=tiny_net), sam_image_key="sam_image")

    image, label, args, kwargs = prepare(batch, torch.device("cpu"))
    with torch.no_grad():
        from_cache = tiny_net(image, *args, **kwargs)
        direct = tiny_net(images)

    assert set(kwargs) == {"image_embeddings"}
    assert label.shape == (2, 1, 64, 64)
    assert torch.allclose(from_cache, direct, atol=1e-5)


def test_prepare_batch_without_cache() -> None:
    batch = {"image": torch.ones(1, 3, 8, 8), "label": torch.zeros(1, 1, 8, 8)}

    prepared = AutoSAMPrepareBatch()(batch, torch.device("cpu"))

    assert len(prepared) == 2
    assert torch.equal(prepared[0], batch["image"])


def test_prepare_batch_rejects_moved_sam_image(tiny_net: AutoSAMNet) -> None:
    batch = {"image": _images(1, 64), "sam_image": _images(1, 32)}
    prepare = AutoSAMPrepareBatch(embedding_cache=EmbeddingCache(network=tiny_net), sam_image_key="sam_image")

    with pytest.raises(ValueError, match="cache_embeddings"):
        prepare(batch, torch.device("cpu"))


# Prediction writer


def _item(source: Path, probability: np.ndarray) -> dict:
    from monai.data import MetaTensor

    return {
        "image": MetaTensor(torch.zeros(3, *probability.shape), meta={"filename_or_obj": str(source)}),
        "pred": torch.as_tensor(probability)[None],
    }


def test_writer_keeps_relative_path(tmp_path: Path) -> None:
    source = tmp_path / "data" / "Frame" / "case1" / "0007.jpg"
    source.parent.mkdir(parents=True)
    source.write_bytes(b"")
    probability = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    writer = PredictionWriter(output_dir=tmp_path / "out", input_root=tmp_path / "data")

    written = writer.write_item(_item(source, probability))

    assert written == [
        tmp_path / "out" / "probabilities" / "Frame" / "case1" / "0007.png",
        tmp_path / "out" / "masks" / "Frame" / "case1" / "0007.png",
    ]
    grey = np.asarray(Image.open(written[0]))
    mask = np.asarray(Image.open(written[1]))
    assert grey.dtype == np.uint8
    assert grey.shape == (3, 4)
    assert np.array_equal(grey, np.rint(probability * 255).astype(np.uint8))
    assert np.array_equal(mask, np.where(probability >= 0.5, 255, 0).astype(np.uint8))


def test_writer_never_overwrites(tmp_path: Path) -> None:
    source = tmp_path / "data" / "a.png"
    source.parent.mkdir()
    source.write_bytes(b"")
    item = _item(source, np.zeros((2, 2), np.float32))
    PredictionWriter(output_dir=tmp_path / "out", input_root=tmp_path / "data").write_item(item)

    with pytest.raises(FileExistsError, match="overwrite"):
        PredictionWriter(output_dir=tmp_path / "out", input_root=tmp_path / "data").write_item(item)
    PredictionWriter(output_dir=tmp_path / "out", input_root=tmp_path / "data", overwrite="true").write_item(
        item
    )


@pytest.mark.parametrize("relative_output", [".", "images", "images/predictions"])
def test_writer_rejects_input_folder(tmp_path: Path, relative_output: str) -> None:
    (tmp_path / "images").mkdir()

    with pytest.raises(ValueError, match="input folder"):
        PredictionWriter(output_dir=tmp_path / relative_output, input_root=tmp_path / "images")


def test_writer_rejects_folder_containing_inputs(tmp_path: Path) -> None:
    (tmp_path / "data" / "images").mkdir(parents=True)

    with pytest.raises(ValueError, match="contains the input folder"):
        PredictionWriter(output_dir=tmp_path / "data", input_root=tmp_path / "data" / "images")


def test_writer_volume_keeps_affine(tmp_path: Path) -> None:
    import nibabel as nib

    source = tmp_path / "data" / "ct.nii.gz"
    source.parent.mkdir()
    source.write_bytes(b"")
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    affine[:3, 3] = (-10.0, 5.0, 30.0)
    probability = np.random.default_rng(0).random((4, 5, 3)).astype(np.float32)
    writer = PredictionWriter(output_dir=tmp_path / "out", input_root=tmp_path / "data")

    written = writer.write_volume(source, probability, affine)

    loaded = nib.load(str(written[0]))
    assert written[0].name == "ct.nii.gz"
    assert np.allclose(loaded.affine, affine)
    assert np.allclose(loaded.get_fdata(), probability, atol=1e-6)
    assert set(np.unique(nib.load(str(written[1])).get_fdata())) <= {0.0, 1.0}


# Configuration checks


def test_check_vit_without_checkpoint() -> None:
    with pytest.raises(ConfigError, match="sam_checkpoint is not set for sam_model_type 'vit_b'.*tiny"):
        check_sam_checkpoint("vit_b", None)


def test_check_missing_checkpoint_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        check_sam_checkpoint("vit_b", tmp_path / "sam_vit_b_01ec64.pth")


def test_check_checkpoint_of_other_type(tmp_path: Path) -> None:
    path = tmp_path / "tiny_sam.pth"
    torch.save(build_sam("tiny").state_dict(), path)

    with pytest.raises(ConfigError, match="saved from a tiny SAM but sam_model_type is 'vit_b'"):
        check_sam_checkpoint("vit_b", path)
    check_sam_checkpoint("tiny", path)


def test_check_unknown_model_type() -> None:
    with pytest.raises(ConfigError, match="vit_x"):
        check_sam_checkpoint("vit_x", None)


def test_check_unknown_encoder() -> None:
    with pytest.raises(ConfigError, match="encoder_name 'resnet_missing'"):
        check_bundle_config(encoder_name="resnet_missing")
    check_bundle_config(encoder_name="resnet18")
    check_bundle_config(encoder_name="hardnet85")


def test_check_empty_dataset_dir(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="contains no files"):
        prepare_datalist(dataset_dir=tmp_path, layout="flat")
    with pytest.raises(ConfigError, match="is not a folder"):
        prepare_datalist(dataset_dir=tmp_path / "missing", layout="flat")


def test_check_datalist_without_validation() -> None:
    datalist = {"training": [{"image": "a.png"}], "validation": [], "test": []}

    with pytest.raises(ConfigError, match="no 'validation' items.*val_fraction"):
        check_bundle_config(datalist=datalist)


@pytest.mark.parametrize("name, value", [("batch_size", 0), ("learning_rate", -1.0), ("max_epochs", "ten")])
def test_check_positive_values(name: str, value: object) -> None:
    with pytest.raises(ConfigError, match=name):
        check_bundle_config(positive={name: value})


def test_check_spatial_augmentation_with_cache() -> None:
    from autosam.data.transforms import get_random_transforms

    with pytest.raises(ConfigError, match="RandFlipd.*cache_embeddings false"):
        check_no_spatial_augmentation(get_random_transforms(keys=["image", "label"]))
    check_no_spatial_augmentation(get_random_transforms(keys=["image", "label"])[:1])


def test_check_missing_model_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="model.pt.*train first"):
        check_bundle_config(model_checkpoint=tmp_path / "model.pt")


# Datalists, flags, checkpoints


def test_datalist_file_paths_joined(tmp_path: Path) -> None:
    path = tmp_path / "datalist.json"
    path.write_text(
        json.dumps({"training": [{"image": "images/a.png", "label": "masks/a.png"}], "validation": []})
    )

    datalist = prepare_datalist(datalist=path)

    assert datalist["training"][0]["image"] == str(tmp_path / "images" / "a.png")
    assert datalist["test"] == []
    assert select_split(datalist, "all") == datalist["training"]
    with pytest.raises(ConfigError, match="empty"):
        select_split(datalist, "validation")


@pytest.mark.parametrize(
    "value, expected", [(True, True), ("false", False), ("True", True), (0, False), (None, False)]
)
def test_as_bool_values(value: object, expected: bool) -> None:
    assert as_bool(value) is expected


def test_as_bool_rejects_other_text() -> None:
    with pytest.raises(ValueError, match="maybe"):
        as_bool("maybe")


def test_latest_checkpoint_by_epoch(tmp_path: Path) -> None:
    for name in ("checkpoint_epoch=2.pt", "checkpoint_epoch=10.pt", "model.pt"):
        (tmp_path / name).write_bytes(b"")

    assert latest_checkpoint(tmp_path) == str(tmp_path / "checkpoint_epoch=10.pt")
    assert latest_checkpoint(tmp_path / "missing") is None


# SUN-SEG metric handler


def test_metric_handler_matches_suite() -> None:
    from ignite.engine import Engine

    generator = torch.Generator().manual_seed(3)
    predictions = [torch.rand(1, 20, 24, generator=generator) for _ in range(4)]
    labels = [(torch.rand(1, 20, 24, generator=generator) > 0.6).float() for _ in range(4)]
    cases = ["a", "a", "b", "c"]
    batches = [
        [
            {"pred": p, "label": y, "case": c}
            for p, y, c in zip(predictions[:2], labels[:2], cases[:2], strict=True)
        ],
        [
            {"pred": p, "label": y, "case": c}
            for p, y, c in zip(predictions[2:], labels[2:], cases[2:], strict=True)
        ],
    ]

    def step(engine: Engine, batch: list[dict]) -> list[dict]:
        engine.state.batch = batch
        return batch

    engine = Engine(step)
    handler = SunSegMetricHandler(key_metric="Smeasure")
    handler.attach(engine, "key")
    engine.run(batches, max_epochs=1)

    rows = []
    for prediction, label in zip(predictions, labels, strict=True):
        pred8 = torch.round(prediction[0] * 255).to(torch.uint8)[None]
        gt8 = (label[0] * 255).to(torch.uint8)[None]
        rows.append(frame_values(*prepare_uint8_frames(pred8, gt8)))
    overall, per_case = summarize_cases(torch.cat(rows), cases)

    assert engine.state.metrics["key"] == overall["Smeasure"]
    assert engine.state.metrics["maxDice"] == overall["maxDice"]
    assert handler.per_case == per_case
    assert list(handler.per_case) == ["a", "b", "c"]
