"""Measure inference throughput (images per second): PyTorch eager against onnxruntime on the CPU.

Networks, all with random weights (only the speed is measured):
- tiny: AutoSAMNet with the tiny SAM (256 px) and a resnet18 g at 256 px, input 256 x 256, as in
  the CPU demo config;
- vit_b: AutoSAMNet with a vit_b-sized SAM (1024 px) and the HarDNet-85 g at 352 px, input
  352 x 352, as in configs/paper_polyp.json. The random SAM state dict comes from
  segment_anything's own vit_b builder and is loaded from a temporary checkpoint file;
- light: AutoSAMLightNet (HarDNet-85 g + h) at 352 px, the path that skips SAM.

Each network is exported once with `autosam.export.export_onnx` (dynamic batch). Each cell runs
one warm-up batch, then `--repeats` timed batches, and prints the best and the median images per
second. The best run is the headline figure, because other processes only ever add time.

A cell whose estimated peak memory exceeds the memory available is skipped and reported. The
estimate counts the attention matrices of SAM's global-attention blocks, which dominate: eager
PyTorch holds about three of them at once (scores, scores plus relative positions, softmax).

Usage: python scripts/bench_infer.py [--networks tiny vit_b light] [--batch 1 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from segment_anything import sam_model_registry

from autosam.export import export_onnx, onnx_session, run_onnx
from autosam.networks import AutoSAMLightNet, AutoSAMNet

GIB = 1024**3


def _build_network(name: str, folder: Path) -> tuple[torch.nn.Module, int]:
    """Return the network called `name` and its input size in pixels."""
    torch.manual_seed(0)
    if name == "tiny":
        network = AutoSAMNet(sam_model_type="tiny", encoder_name="resnet18", encoder_input_size=256)
        return network.eval(), 256
    if name == "vit_b":
        checkpoint = folder / "random_vit_b.pth"
        torch.save(sam_model_registry["vit_b"](checkpoint=None).state_dict(), checkpoint)
        network = AutoSAMNet(
            sam_model_type="vit_b",
            sam_checkpoint=str(checkpoint),
            encoder_name="hardnet85",
            encoder_input_size=352,
        )
        return network.eval(), 352
    if name == "light":
        network = AutoSAMLightNet(encoder_name="hardnet85", encoder_input_size=352)
        return network.eval(), 352
    raise ValueError(f"network '{name}' is unknown; choose tiny, vit_b or light")


def _attention_peak_bytes(network: torch.nn.Module, batch: int) -> int:
    """Estimate the peak bytes of SAM's global attention for one batch (0 without SAM)."""
    sam = getattr(network, "sam", None)
    if sam is None:
        return 0
    tokens = (sam.image_encoder.img_size // 16) ** 2
    num_heads = sam.image_encoder.blocks[0].attn.num_heads
    return 3 * batch * num_heads * tokens * tokens * 4


def _available_bytes() -> int:
    with open("/proc/meminfo", encoding="ascii") as stream:
        for line in stream:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("MemAvailable is missing from /proc/meminfo")


def _run_eager(network: torch.nn.Module, image: torch.Tensor) -> None:
    with torch.no_grad():
        network(image)


def _images_per_second(run_batch: Callable[[], object], batch: int, repeats: int) -> tuple[float, float]:
    run_batch()  # warm-up: first-call allocations and onnxruntime's graph set-up
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        run_batch()
        seconds.append(time.perf_counter() - start)
    return batch / min(seconds), batch / statistics.median(seconds)


def _bench_network(name: str, batches: list[int], repeats: int, threads: int, folder: Path) -> list[str]:
    network, size = _build_network(name, folder)
    export_start = time.perf_counter()
    onnx_file = export_onnx(network, folder / f"{name}.onnx", spatial_size=size)
    export_seconds = time.perf_counter() - export_start
    session = onnx_session(onnx_file, num_threads=threads)

    rows = []
    for batch in batches:
        label = f"| {name} | {size} | {batch} |"
        needed = _attention_peak_bytes(network, batch)
        available = _available_bytes()
        if needed > 0.8 * available:
            rows.append(
                f"{label} skipped: SAM attention needs about {needed / GIB:.1f} GiB, "
                f"{available / GIB:.1f} GiB available | |"
            )
            continue

        image = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(batch)) * 255
        eager_best, eager_median = _images_per_second(partial(_run_eager, network, image), batch, repeats)
        onnx_best, onnx_median = _images_per_second(partial(run_onnx, session, image), batch, repeats)
        rows.append(f"{label} {eager_best:.3g} ({eager_median:.3g}) | {onnx_best:.3g} ({onnx_median:.3g}) |")

    print(f"{name}: ONNX export took {export_seconds:.0f} s, file {onnx_file.stat().st_size / 2**20:.0f} MiB")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--networks", nargs="+", default=["tiny", "vit_b", "light"], help="networks to time")
    parser.add_argument("--batch", nargs="+", type=int, default=[1, 8], help="batch sizes")
    parser.add_argument("--repeats", type=int, default=3, help="timed batches per cell after one warm-up")
    parser.add_argument(
        "--threads", type=int, default=torch.get_num_threads(), help="intra-op threads of both runtimes"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import onnxruntime

    print(
        f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, {args.threads} threads, "
        f"{platform.machine()}, {os.cpu_count()} CPUs; repeats {args.repeats}"
    )
    # Other processes distort the timings; the load average shows how busy the machine was.
    print(f"load average at start: {os.getloadavg()[0]:.2f}")

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in args.networks:
            rows += _bench_network(name, args.batch, args.repeats, args.threads, Path(folder))

    print(f"load average at end: {os.getloadavg()[0]:.2f}\n")
    print(
        "| network | input px | batch | PyTorch eager images/s, best (median) | onnxruntime images/s, best (median) |"
    )
    print("|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
