"""Export AutoSAMNet (image in, logits out) and the light path g + h to ONNX and TorchScript.

Both formats hold the whole network. For AutoSAMNet that is SAM's preprocessing and image
encoder, g, SAM's mask decoder and the postprocessing that resizes logits to the input. For
AutoSAMLightNet it is g, h and the same postprocessing. The export fixes the spatial size of the
input, because the resize target of SAM's resize-longest-side step is computed in Python from the
input size. The batch size stays dynamic in ONNX. The bundle's transforms pad every image to
`spatial_size x spatial_size`, so one export serves the whole pipeline.

TorchScript is written by tracing. `torch.jit.script` cannot compile segment_anything's modules,
because its window partition returns a tuple whose element types TorchScript cannot infer and its
mask decoder indexes a ModuleList with a loop variable. A traced module replays the operations
recorded at the traced spatial size: `export_torchscript` adds a check of the input size, while
`monai.bundle ckpt_export` saves the bare trace, which returns a wrongly sized output for other
input sizes without an error.

From the command line, `python -m monai.bundle onnx_export` and `ckpt_export` export the bundle's
`network_def` with a trained checkpoint; docs/deployment.md lists the arguments.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.bundle import ConfigParser
from monai.data import save_net_with_metadata
from monai.networks.utils import convert_to_torchscript

__all__ = [
    "DEFAULT_OPSET",
    "EXTERNAL_DATA_BYTES",
    "export_onnx",
    "export_torchscript",
    "io_names_from_metadata",
    "load_bundle_network",
    "onnx_session",
    "run_onnx",
]

logger = logging.getLogger(__name__)

# torch 2.14's default ONNX opset; the tests run it with onnxruntime 1.32.
DEFAULT_OPSET = 20
# Weights above this size go to an external data file: a protobuf file cannot exceed 2 GiB.
EXTERNAL_DATA_BYTES = 1800 * 1024**2


def io_names_from_metadata(meta_file: str | os.PathLike) -> tuple[str, str]:
    """Read the input and output tensor names from a bundle's `network_data_format`.

    Returns:
        (input name, output name), "image" and "pred" for the AutoSAM bundle.
    """
    with open(meta_file, encoding="utf-8") as stream:
        data_format = json.load(stream).get("network_data_format", {})
    inputs = list(data_format.get("inputs", {}))
    outputs = list(data_format.get("outputs", {}))
    if len(inputs) != 1 or len(outputs) != 1:
        raise ValueError(
            f"'{meta_file}' network_data_format lists inputs {inputs} and outputs {outputs}; "
            "exporting needs exactly one of each"
        )
    return inputs[0], outputs[0]


def _example_image(batch_size: int, spatial_size: int) -> torch.Tensor:
    # A fixed RGB pattern in [0, 255]: the exporters only record operations, never the values.
    generator = torch.Generator().manual_seed(0)
    return torch.rand(batch_size, 3, spatial_size, spatial_size, generator=generator) * 255.0


def export_onnx(
    network: torch.nn.Module,
    filepath: str | os.PathLike,
    *,
    spatial_size: int,
    batch_size: int = 2,
    dynamic_batch: bool = True,
    input_name: str = "image",
    output_name: str = "pred",
    opset_version: int = DEFAULT_OPSET,
) -> Path:
    """Export `network` (B x 3 x S x S image in, B x 1 x S x S logits out) to one ONNX file.

    Args:
        network: AutoSAMNet or AutoSAMLightNet; it is put in eval mode.
        filepath: the .onnx file to write. Weights are stored inside it unless they exceed
            `EXTERNAL_DATA_BYTES` (vit_h: about 2.4 GiB), because a protobuf file is limited to
            2 GiB; larger weights go to `<filepath>.data` beside it.
        spatial_size: S, the height and width of the exported input.
        batch_size: batch size of the example input that the exporter records. It must be at
            least 2 with `dynamic_batch`, because torch.export treats a size-1 dimension as fixed.
        dynamic_batch: let the exported model accept any batch size.
        input_name: name of the ONNX input, the bundle metadata's input key.
        output_name: name of the ONNX output, the bundle metadata's output key.
        opset_version: ONNX opset to target.
    """
    if dynamic_batch and batch_size < 2:
        raise ValueError(
            f"batch_size={batch_size} cannot export a dynamic batch, because torch.export fixes a size-1 "
            "dimension; pass batch_size=2 or more, or dynamic_batch=False"
        )
    filepath = Path(filepath)
    filepath.parent.mkdir(parents=True, exist_ok=True)
    network = network.eval()
    image = _example_image(batch_size, spatial_size)  # B x 3 x S x S
    # AutoSAMNet's state_dict leaves SAM out, so count the tensors themselves.
    tensors = [*network.parameters(), *network.buffers()]
    weight_bytes = sum(tensor.numel() * tensor.element_size() for tensor in tensors)

    # The torch.export-based exporter (torch's default since 2.9) is required: the TorchScript-based
    # one has no ONNX translation of the antialiased bilinear resize in SAM's preprocessing.
    dynamic_shapes = ({0: torch.export.Dim("batch", min=1)},) if dynamic_batch else None
    with torch.no_grad():
        torch.onnx.export(
            network,
            (image,),
            str(filepath),
            input_names=[input_name],
            output_names=[output_name],
            opset_version=opset_version,
            dynamo=True,
            dynamic_shapes=dynamic_shapes,
            external_data=weight_bytes > EXTERNAL_DATA_BYTES,
        )
    logger.info("exported %s to ONNX file '%s' (opset %d)", type(network).__name__, filepath, opset_version)
    return filepath


class _InputSizeGuard(torch.nn.Module):
    """Scripted wrapper that rejects inputs of another size than the one the network was traced at."""

    def __init__(self, traced: torch.nn.Module, spatial_size: int) -> None:
        super().__init__()
        self.traced = traced
        self.spatial_size = spatial_size

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if image.shape[-2] != self.spatial_size or image.shape[-1] != self.spatial_size:
            height, width, size = image.shape[-2], image.shape[-1], self.spatial_size
            raise ValueError(
                f"input is {height}x{width} but this TorchScript network was traced at {size}x{size}; "
                "resize and pad the image to that size, or export again with another spatial_size"
            )
        return self.traced(image)


def export_torchscript(
    network: torch.nn.Module,
    filepath: str | os.PathLike,
    *,
    spatial_size: int,
    batch_size: int = 1,
    meta_values: dict[str, Any] | None = None,
    extra_files: dict[str, bytes] | None = None,
) -> Path:
    """Trace `network` and save it as TorchScript with the bundle metadata inside, as MONAI does.

    The saved module accepts any batch size but only `spatial_size x spatial_size` inputs. Tracing
    records SAM's resize target and the output size as constants, so a traced network would return
    a wrong-sized mask for another input size without an error. The saved module therefore wraps
    the trace in a scripted size check, which raises `torch.jit.Error` with the sizes.

    Args:
        network: AutoSAMNet or AutoSAMLightNet; it is put in eval mode.
        filepath: the .ts file to write.
        spatial_size: height and width of the traced input.
        batch_size: batch size of the traced input.
        meta_values: the bundle's metadata, stored as `metadata.json` in the file.
        extra_files: more files to store in the archive (name -> bytes), for example the configs.
    """
    filepath = Path(filepath)
    filepath.parent.mkdir(parents=True, exist_ok=True)
    network = network.eval()
    image = _example_image(batch_size, spatial_size)  # B x 3 x S x S

    with torch.no_grad():
        traced = convert_to_torchscript(network, inputs=[image], use_trace=True)
    guarded = torch.jit.script(_InputSizeGuard(traced, spatial_size))
    save_net_with_metadata(
        guarded, str(filepath.with_suffix("")), meta_values=meta_values, more_extra_files=extra_files
    )
    logger.info("traced %s to TorchScript file '%s'", type(network).__name__, filepath)
    return filepath.with_suffix(".ts")


def onnx_session(filepath: str | os.PathLike, *, num_threads: int | None = None) -> Any:
    """Open an onnxruntime session on the CPU execution provider.

    Args:
        filepath: the .onnx file.
        num_threads: intra-op threads; None lets onnxruntime use all cores.
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if num_threads is not None:
        options.intra_op_num_threads = num_threads
    return onnxruntime.InferenceSession(
        str(filepath), sess_options=options, providers=["CPUExecutionProvider"]
    )


def run_onnx(session: Any, image: torch.Tensor | np.ndarray) -> np.ndarray:
    """Run an exported network on a B x 3 x S x S float32 image batch; return its logits."""
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    input_name = session.get_inputs()[0].name
    return session.run(None, {input_name: np.ascontiguousarray(image, dtype=np.float32)})[0]


def load_bundle_network(
    bundle_root: str | os.PathLike,
    *,
    config_file: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    ckpt_file: str | os.PathLike | None = None,
    net_id: str = "network_def",
    key_in_ckpt: str = "model",
    overrides: dict[str, Any] | None = None,
) -> torch.nn.Module:
    """Build the network that a bundle config defines and load a trained checkpoint into it.

    Args:
        bundle_root: the bundle folder, with `configs/metadata.json`.
        config_file: config(s) that define `net_id`; None reads `configs/inference.json`.
        ckpt_file: checkpoint written by the bundle (MONAI's CheckpointSaver layout or a raw state
            dict); None keeps the network's initial weights.
        net_id: id of the network in the config.
        key_in_ckpt: entry of the checkpoint dict that contains the network's state dict. A
            checkpoint without that entry is read as the state dict itself.
        overrides: config ids and values to override, as `--id value` does for `monai.bundle run`.
    """
    bundle_root = Path(bundle_root)
    parser = ConfigParser()
    parser.read_config(config_file or bundle_root / "configs" / "inference.json")
    parser.read_meta(bundle_root / "configs" / "metadata.json")
    parser["bundle_root"] = str(bundle_root)
    for key, value in (overrides or {}).items():
        parser[key] = value
    network = parser.get_parsed_content(net_id)

    if ckpt_file is not None:
        checkpoint = torch.load(ckpt_file, map_location="cpu", weights_only=True)
        if isinstance(checkpoint, dict) and key_in_ckpt in checkpoint:
            checkpoint = checkpoint[key_in_ckpt]
        network.load_state_dict(checkpoint)
    return network.eval()
