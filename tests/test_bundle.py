"""The MONAI bundle end to end: train -> resume -> evaluate -> infer with `python -m monai.bundle run`.

Runs on six real Kvasir-SEG images with the CPU demo settings (tiny SAM, resnet18 encoder) at
128 pixels, from a working directory outside the checkout.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIGS = REPO_ROOT / "bundle" / "configs"
CPU_DEMO = REPO_ROOT / "configs" / "cpu_demo.json"
META_FILE = CONFIGS / "metadata.json"

# Small sizes keep the whole module near a minute of CPU time on 2 cores.
FAST_SETTINGS = {
    "spatial_size": 128,
    "encoder_input_size": 128,
    "max_epochs": 2,
    "batch_size": 2,
    "num_workers": 0,
    "progress_bar": False,
}


def _config_list(*paths: Path) -> str:
    return "[" + ",".join(f"'{path}'" for path in paths) + "]"


def _run_bundle(config_files: list[Path], cwd: Path, **overrides: object) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", _config_list(*config_files)]
    for key, value in overrides.items():
        command += [f"--{key}", str(value)]
    environment = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=environment, timeout=600)
    assert result.returncode == 0, (
        f"monai.bundle run failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    )
    return result


@pytest.fixture(scope="module")
def kvasir_items(shared_data: Path) -> list[dict[str, str]]:
    images = sorted((shared_data / "kvasir_seg" / "images").glob("*.jpg"))[:6]
    return [
        {"image": str(path), "label": str(shared_data / "kvasir_seg" / "masks" / path.name)}
        for path in images
    ]


@pytest.fixture(scope="module")
def bundle_run(tmp_path_factory: pytest.TempPathFactory, kvasir_items: list[dict], shared_data: Path) -> dict:
    """Train 2 epochs, resume to epoch 3, evaluate on validation, infer on a folder of four images."""
    work = tmp_path_factory.mktemp("bundle")
    datalist = {
        "training": [dict(item, case=Path(item["image"]).stem) for item in kvasir_items[:4]],
        "validation": [dict(item, case=Path(item["image"]).stem) for item in kvasir_items[4:]],
    }
    (work / "datalist.json").write_text(json.dumps(datalist))
    (work / "fast.json").write_text(json.dumps(FAST_SETTINGS))
    common = {
        "datalist": work / "datalist.json",
        "dataset_dir": shared_data / "kvasir_seg",
        "ckpt_dir": work / "models",
    }
    train_configs = [CONFIGS / "train.json", CPU_DEMO, work / "fast.json"]

    _run_bundle(train_configs, cwd=work, output_dir=work / "train", **common)
    first_history = (work / "train" / "training_history.csv").read_text()
    _run_bundle(train_configs, cwd=work, output_dir=work / "train", resume=True, max_epochs=3, **common)

    evaluate_configs = [CONFIGS / "train.json", CONFIGS / "evaluate.json", CPU_DEMO, work / "fast.json"]
    _run_bundle(evaluate_configs, cwd=work, output_dir=work / "eval", eval_split="validation", **common)

    # Inference reads a folder: links to four images, so nothing is copied.
    inputs = work / "inputs"
    inputs.mkdir()
    for item in kvasir_items[:4]:
        (inputs / Path(item["image"]).name).symlink_to(item["image"])
    infer_configs = [CONFIGS / "inference.json", CPU_DEMO, work / "fast.json"]
    _run_bundle(
        infer_configs,
        cwd=work,
        input_dir=inputs,
        output_dir=work / "infer",
        ckpt_dir=work / "models",
        write_overlays=True,
    )

    # Volumes: slices of two small MR volumes, stacked back into NIfTI files.
    from autosam.data import build_datalist

    volumes = build_datalist("nifti", shared_data / "monai_anatomical", val_fraction=0.0)
    (work / "volumes.json").write_text(json.dumps(volumes))
    _run_bundle(
        infer_configs,
        cwd=work,
        datalist=work / "volumes.json",
        infer_split="training",
        modality="mr",
        dataset_dir=shared_data / "monai_anatomical",
        output_dir=work / "infer_volumes",
        ckpt_dir=work / "models",
    )
    return {"work": work, "first_history": first_history, "items": kvasir_items}


def test_checkpoint_holds_trainable_weights(bundle_run: dict) -> None:
    from autosam.engines import latest_checkpoint
    from autosam.networks import AutoSAMNet

    models = bundle_run["work"] / "models"
    best = torch.load(models / "model.pt", weights_only=True)
    latest = torch.load(models / "checkpoint_epoch=3.pt", weights_only=True)
    network = AutoSAMNet(
        sam_model_type="tiny", encoder_name="resnet18", encoder_input_size=128, learn_logit_affine=True
    )
    trainable = {name for name, parameter in network.named_parameters() if parameter.requires_grad}

    assert set(best) == set(network.state_dict())
    assert not any(key.startswith("sam.") for key in best)
    assert trainable <= set(best)
    assert set(latest) == {"model", "optimizer", "lr_scheduler", "trainer"}
    assert latest["trainer"]["iteration"] == 3 * latest["trainer"]["epoch_length"]
    assert latest["trainer"]["max_epochs"] == 3
    assert latest_checkpoint(models) == str(models / "checkpoint_epoch=3.pt")
    network.load_state_dict(best)


def test_resume_continues_epochs(bundle_run: dict) -> None:
    first = list(csv.DictReader(bundle_run["first_history"].splitlines()))
    with open(bundle_run["work"] / "train" / "training_history.csv", newline="") as stream:
        resumed = list(csv.DictReader(stream))

    assert [row["epoch"] for row in first] == ["1", "2"]
    assert [row["epoch"] for row in resumed] == ["1", "2", "3"]
    assert all(0.0 <= float(row["val_maxDice"]) <= 1.0 for row in resumed)
    assert all(float(row["train_loss"]) > 0.0 for row in resumed)


def test_evaluation_report_files(bundle_run: dict) -> None:
    eval_dir = bundle_run["work"] / "eval"
    report = json.loads((eval_dir / "metrics.json").read_text())
    with open(eval_dir / "per_case.csv", newline="") as stream:
        per_case_rows = list(csv.DictReader(stream))
    validation_stems = [Path(item["image"]).stem for item in bundle_run["items"][4:]]

    assert report["frames"] == 2
    assert sorted(report["per_case"]) == sorted(validation_stems)
    assert sorted(row["case"] for row in per_case_rows) == sorted(validation_stems)
    for name in ("Smeasure", "wFmeasure", "MAE", "maxDice", "meanDice", "maxIoU", "meanSen"):
        assert 0.0 <= report["overall"][name] <= 1.0, name
    assert {"binaryDice", "binaryIoU", "HD95"} <= set(report["overall"])


def test_evaluation_matches_cli_on_files(bundle_run: dict, shared_data: Path) -> None:
    from autosam.evaluate import evaluate

    work = bundle_run["work"]
    ground_truth = work / "gt"
    ground_truth.mkdir()
    for item in bundle_run["items"][4:]:
        (ground_truth / Path(item["label"]).name).symlink_to(item["label"])
    report = json.loads((work / "eval" / "metrics.json").read_text())

    cli = evaluate(
        str(work / "eval" / "predictions" / "probabilities" / "images"),
        str(ground_truth),
        layout="flat",
        output=str(work / "cli" / "results.json"),
    )

    for name in (
        "Smeasure",
        "wFmeasure",
        "MAE",
        "adpEm",
        "meanEm",
        "maxEm",
        "meanFm",
        "maxDice",
        "meanDice",
        "meanIoU",
    ):
        assert report["overall"][name] == pytest.approx(cli["overall"][name], abs=1e-6), name


def test_inference_predictions(bundle_run: dict) -> None:
    predictions = bundle_run["work"] / "infer" / "predictions"
    inputs = [Path(item["image"]) for item in bundle_run["items"][:4]]

    for folder in ("probabilities", "masks", "overlays"):
        written = sorted(path.name for path in (predictions / folder).iterdir())
        assert written == sorted(f"{path.stem}.png" for path in inputs), folder
    for path in inputs:
        with Image.open(path) as image:
            size = image.size
        with Image.open(predictions / "probabilities" / f"{path.stem}.png") as probability:
            assert probability.size == size
            assert probability.mode == "L"
        with Image.open(predictions / "masks" / f"{path.stem}.png") as mask:
            assert mask.size == size
            assert set(mask.get_flattened_data()) <= {0, 255}
        with Image.open(predictions / "overlays" / f"{path.stem}.png") as overlay:
            assert overlay.size == size
            assert overlay.mode == "RGB"


def test_verify_net_in_out() -> None:
    from monai.bundle import verify_net_in_out

    config_files = [str(CONFIGS / "train.json"), str(CPU_DEMO)]
    verify_net_in_out(net_id="network_def", meta_file=str(META_FILE), config_file=config_files, device="cpu")
    verify_net_in_out(
        net_id="network_def", meta_file=str(META_FILE), config_file=config_files, device="cpu", any=200
    )


def test_metadata_required_fields() -> None:
    metadata = json.loads(META_FILE.read_text())
    required = (
        "schema",
        "version",
        "changelog",
        "monai_version",
        "pytorch_version",
        "numpy_version",
        "required_packages_version",
        "task",
        "description",
        "authors",
        "copyright",
        "network_data_format",
    )
    tensor_fields = (
        "type",
        "format",
        "modality",
        "num_channels",
        "spatial_shape",
        "dtype",
        "value_range",
        "is_patch_data",
        "channel_def",
    )

    for key in required:
        assert metadata.get(key) not in (None, "", {}), key
    assert metadata["version"] in metadata["changelog"]
    image = metadata["network_data_format"]["inputs"]["image"]
    pred = metadata["network_data_format"]["outputs"]["pred"]
    for field in tensor_fields:
        assert field in image, field
        assert field in pred, field
    assert image["num_channels"] == 3
    assert image["value_range"] == [0, 255]
    assert pred["num_channels"] == 1


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"sam_model_type": "vit_b"}, "sam_checkpoint is not set"),
        ({"encoder_name": "resnet_missing"}, "encoder_name 'resnet_missing'"),
        ({"batch_size": 0}, "batch_size must be a positive number"),
    ],
)
def test_bad_config_stops_before_training(
    tmp_path: Path, kvasir_items: list[dict], overrides: dict, message: str
) -> None:
    from monai.bundle import ConfigWorkflow

    datalist = {"training": kvasir_items[:2], "validation": kvasir_items[2:3]}
    (tmp_path / "datalist.json").write_text(json.dumps(datalist))
    workflow = ConfigWorkflow(
        config_file=[str(CONFIGS / "train.json"), str(CPU_DEMO)],
        logging_file=False,
        workflow_type="train",
        datalist=str(tmp_path / "datalist.json"),
        output_dir=str(tmp_path / "out"),
        ckpt_dir=str(tmp_path / "models"),
        **overrides,
    )

    with pytest.raises(Exception) as raised:
        workflow.initialize()
    chain = []
    error: BaseException | None = raised.value
    while error is not None:
        chain.append(str(error))
        error = error.__cause__
    assert any(message in text for text in chain), chain
    assert not (tmp_path / "models").exists()


def test_datalist_without_validation_stops(tmp_path: Path, kvasir_items: list[dict]) -> None:
    from monai.bundle import ConfigWorkflow

    (tmp_path / "datalist.json").write_text(json.dumps({"training": kvasir_items[:2]}))
    workflow = ConfigWorkflow(
        config_file=[str(CONFIGS / "train.json"), str(CPU_DEMO)],
        logging_file=False,
        workflow_type="train",
        datalist=str(tmp_path / "datalist.json"),
        ckpt_dir=str(tmp_path / "models"),
    )

    with pytest.raises(Exception) as raised:
        workflow.initialize()
    assert "no 'validation' items" in str(raised.value.__cause__)


def test_volume_predictions_keep_affine(bundle_run: dict, shared_data: Path) -> None:
    import nibabel as nib
    import numpy as np

    predictions = bundle_run["work"] / "infer_volumes" / "predictions"
    for name in ("anatomical", "reoriented_anat_moved"):
        source = nib.load(str(shared_data / "monai_anatomical" / f"{name}.nii"))
        probability = nib.load(str(predictions / "probabilities" / f"{name}.nii.gz"))
        mask = nib.load(str(predictions / "masks" / f"{name}.nii.gz"))

        assert probability.shape == source.shape[:3], name
        assert np.allclose(probability.affine, source.affine), name
        assert np.allclose(mask.affine, source.affine), name
        values = probability.get_fdata()
        assert values.min() >= 0.0, name
        assert values.max() <= 1.0, name
        assert set(np.unique(mask.get_fdata())) <= {0.0, 1.0}, name
