"""ONNX and TorchScript exports of AutoSAMNet and AutoSAMLightNet, run on real polyp images.

The oracle of every export is the PyTorch network itself, built from the same config and
checkpoint and run on the same real frames. The frames are two Kvasir-SEG images and one
CVC-ClinicDB image, brought to the pipeline's 320 x 320 input by the bundle's deterministic
transforms. 320 differs from the tiny SAM's 256-pixel frame, so SAM's antialiased resize is part
of every exported graph.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ckpt_export, onnx_export
from monai.data import load_net_with_metadata
from monai.transforms import Compose
from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

from autosam.data.transforms import get_deterministic_transforms
from autosam.export import (
    export_onnx,
    export_torchscript,
    io_names_from_metadata,
    load_bundle_network,
    onnx_session,
    run_onnx,
)
from autosam.networks import AutoSAMLightNet, AutoSAMNet

REPO_ROOT = Path(__file__).resolve().parents[1]
BUNDLE_ROOT = REPO_ROOT / "bundle"
META_FILE = BUNDLE_ROOT / "configs" / "metadata.json"
CONFIG_FILES = [BUNDLE_ROOT / "configs" / "inference.json", REPO_ROOT / "configs" / "cpu_demo.json"]
SPATIAL_SIZE = 320
ENCODER_INPUT_SIZE = 128
MAX_ABS_DIFFERENCE = 1e-4


@pytest.fixture(scope="module")
def real_frames(shared_data: Path) -> torch.Tensor:
    """Three real RGB frames, 3 x 3 x 320 x 320 in [0, 255], as the bundle's pipeline makes them."""
    paths = sorted((shared_data / "kvasir_seg" / "images").glob("*.jpg"))[:2]
    paths += sorted((shared_data / "cvc_clinicdb" / "images").glob("*.tif"))[:1]
    transforms = Compose(get_deterministic_transforms(keys=["image"], spatial_size=SPATIAL_SIZE))
    return torch.stack([torch.as_tensor(transforms({"image": str(path)})["image"]) for path in paths])


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An AutoSAMNet checkpoint in the bundle's layout whose weights differ from a fresh network's."""
    torch.manual_seed(1)
    network = AutoSAMNet(
        sam_model_type="tiny",
        encoder_name="resnet18",
        encoder_input_size=ENCODER_INPUT_SIZE,
        learn_logit_affine=True,
    )
    with torch.no_grad():
        for parameter in network.trainable_parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    path = tmp_path_factory.mktemp("export") / "model.pt"
    torch.save({"model": network.state_dict()}, path)
    return path


def _bundle_network(checkpoint: Path) -> torch.nn.Module:
    return load_bundle_network(
        BUNDLE_ROOT,
        config_file=[str(path) for path in CONFIG_FILES],
        ckpt_file=checkpoint,
        overrides={"encoder_input_size": ENCODER_INPUT_SIZE},
    )


def _bundle_export_arguments(filepath: Path, checkpoint: Path) -> dict:
    # The arguments of `python -m monai.bundle onnx_export / ckpt_export network_def ...`.
    return {
        "net_id": "network_def",
        "filepath": str(filepath),
        "ckpt_file": str(checkpoint),
        "meta_file": str(META_FILE),
        "config_file": [str(path) for path in CONFIG_FILES],
        "key_in_ckpt": "model",
        "input_shape": [1, 3, SPATIAL_SIZE, SPATIAL_SIZE],
        "encoder_input_size": ENCODER_INPUT_SIZE,
    }


def _max_abs_difference(actual: np.ndarray, expected: torch.Tensor) -> float:
    assert actual.shape == tuple(expected.shape)
    return float(np.abs(actual - expected.numpy()).max())


def test_metadata_names_image_and_pred() -> None:
    assert io_names_from_metadata(META_FILE) == ("image", "pred")


def test_metadata_with_two_inputs_rejected(tmp_path: Path) -> None:
    metadata = json.loads(META_FILE.read_text())
    metadata["network_data_format"]["inputs"]["mask"] = metadata["network_data_format"]["inputs"]["image"]
    meta_file = tmp_path / "metadata.json"
    meta_file.write_text(json.dumps(metadata))
    with pytest.raises(ValueError, match="lists inputs \\['image', 'mask'\\]"):
        io_names_from_metadata(meta_file)


def test_dynamic_batch_needs_example_batch_of_two(tmp_path: Path) -> None:
    network = torch.nn.Conv2d(3, 1, 1)
    with pytest.raises(ValueError, match="batch_size=1 cannot export a dynamic batch"):
        export_onnx(network, tmp_path / "conv.onnx", spatial_size=8, batch_size=1)


def test_bundle_onnx_export_matches_pytorch(
    tmp_path: Path, trained_checkpoint: Path, real_frames: torch.Tensor
) -> None:
    filepath = tmp_path / "model.onnx"
    onnx_export(
        **_bundle_export_arguments(filepath, trained_checkpoint),
        converter_kwargs={
            "input_names": ["image"],
            "output_names": ["pred"],
            "opset_version": 20,
            "dynamic_axes": {"image": {0: "batch"}, "pred": {0: "batch"}},
        },
    )
    session = onnx_session(filepath)
    metadata = json.loads(META_FILE.read_text())["network_data_format"]
    assert [node.name for node in session.get_inputs()] == list(metadata["inputs"])
    assert [node.name for node in session.get_outputs()] == list(metadata["outputs"])

    network = _bundle_network(trained_checkpoint)
    with torch.no_grad():
        expected = network(real_frames)  # 3 x 1 x 320 x 320 logits
    assert _max_abs_difference(run_onnx(session, real_frames), expected) <= MAX_ABS_DIFFERENCE
    assert _max_abs_difference(run_onnx(session, real_frames[:1]), expected[:1]) <= MAX_ABS_DIFFERENCE

    # The trained weights, not a fresh network's, are inside the file.
    fresh = AutoSAMNet(
        sam_model_type="tiny",
        encoder_name="resnet18",
        encoder_input_size=ENCODER_INPUT_SIZE,
        learn_logit_affine=True,
    ).eval()
    with torch.no_grad():
        assert _max_abs_difference(run_onnx(session, real_frames), fresh(real_frames)) > 1e-2

    # The spatial size is fixed at export.
    with pytest.raises(InvalidArgument, match="Got invalid dimensions"):
        run_onnx(session, torch.zeros(1, 3, 256, 256))


def test_light_path_onnx_matches_pytorch(
    tmp_path: Path, trained_checkpoint: Path, real_frames: torch.Tensor
) -> None:
    torch.manual_seed(2)
    network = AutoSAMLightNet(
        encoder_name="resnet18",
        encoder_input_size=ENCODER_INPUT_SIZE,
        embedding_size=16,
        sam_input_size=256,
        encoder_checkpoint=str(trained_checkpoint),
    ).eval()
    input_name, output_name = io_names_from_metadata(META_FILE)
    filepath = export_onnx(
        network,
        tmp_path / "light.onnx",
        spatial_size=SPATIAL_SIZE,
        input_name=input_name,
        output_name=output_name,
    )

    session = onnx_session(filepath)
    assert [node.name for node in session.get_inputs()] == ["image"]
    assert [node.name for node in session.get_outputs()] == ["pred"]
    assert not list(tmp_path.glob("*.data"))  # weights inside the .onnx file

    with torch.no_grad():
        expected = network(real_frames)
    assert _max_abs_difference(run_onnx(session, real_frames), expected) <= MAX_ABS_DIFFERENCE


def test_bundle_torchscript_export_matches_pytorch(
    tmp_path: Path, trained_checkpoint: Path, real_frames: torch.Tensor
) -> None:
    filepath = tmp_path / "model.ts"
    ckpt_export(**_bundle_export_arguments(filepath, trained_checkpoint), use_trace=True)
    traced, metadata, extra_files = load_net_with_metadata(str(filepath), more_extra_files=["inference.json"])
    assert metadata["network_data_format"] == json.loads(META_FILE.read_text())["network_data_format"]
    assert "network_def" in json.loads(extra_files["inference.json"])

    network = _bundle_network(trained_checkpoint)
    with torch.no_grad():
        expected = network(real_frames)
        actual = traced(real_frames)  # traced at batch 1, run at batch 3
    assert _max_abs_difference(actual.numpy(), expected) <= MAX_ABS_DIFFERENCE


def test_light_path_torchscript_checks_input_size(tmp_path: Path, real_frames: torch.Tensor) -> None:
    torch.manual_seed(3)
    network = AutoSAMLightNet(
        encoder_name="resnet18", encoder_input_size=ENCODER_INPUT_SIZE, embedding_size=16, sam_input_size=256
    ).eval()
    filepath = export_torchscript(
        network,
        tmp_path / "light.ts",
        spatial_size=SPATIAL_SIZE,
        meta_values=json.loads(META_FILE.read_text()),
    )
    traced, metadata, _ = load_net_with_metadata(str(filepath))
    assert metadata["network_data_format"]["inputs"]["image"]["num_channels"] == 3

    with torch.no_grad():
        assert _max_abs_difference(traced(real_frames).numpy(), network(real_frames)) <= MAX_ABS_DIFFERENCE
    # A bare trace would return a 320 x 320 mask for this input; the saved module rejects it.
    with pytest.raises(
        torch.jit.Error, match="input is 256x256 but this TorchScript network was traced at 320x320"
    ):
        traced(torch.zeros(1, 3, 256, 256))
