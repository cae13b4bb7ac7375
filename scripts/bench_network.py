"""Time AutoSAMNet per image: forward, and forward + backward, with precomputed image embeddings.

SAM runs with random weights: the tiny configuration, and a vit_b-sized one whose random state dict
is written to a temporary checkpoint so that it loads through the normal checkpoint path. Image
embeddings are precomputed (random tensors of the right shape), as with the embedding cache, so
the timings cover g, SAM's mask decoder and the postprocessing. `--embed` also times SAM's image
encoder, the cost the embedding cache saves.

Usage: python scripts/bench_network.py [--sam tiny vit_b] [--batch 1 4] [--repeats 3] [--threads N] [--embed]

Prints a Markdown table of seconds per image, the best of the repeats after one warm-up run: the
wall-clock time and the CPU time of this process. On a machine shared with other processes the
wall-clock time grows with the load, while the CPU time of a 1-thread run stays close to the work
done, which makes `--threads 1` the reproducible setting there.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from autosam.networks import AutoSAMNet
from autosam.networks.sam import SAM_CONFIGS, _create_sam


def _random_sam_checkpoint(model_type: str, folder: Path) -> Path:
    torch.manual_seed(0)
    path = folder / f"random_{model_type}.pth"
    torch.save(_create_sam(SAM_CONFIGS[model_type], SAM_CONFIGS[model_type].image_size).state_dict(), path)
    return path


def _time_seconds(step: Callable[[], None], repeats: int) -> tuple[float, float]:
    # Returns the best wall-clock and the best process CPU time of `repeats` runs after a warm-up run.
    step()
    wall_times, cpu_times = [], []
    for _ in range(repeats):
        wall_start, cpu_start = time.perf_counter(), time.process_time()
        step()
        wall_times.append(time.perf_counter() - wall_start)
        cpu_times.append(time.process_time() - cpu_start)
    return min(wall_times), min(cpu_times)


def _bench_net(net: AutoSAMNet, batch: int, size: tuple[int, int], repeats: int) -> list[float]:
    image = torch.rand(batch, 3, *size) * 255
    image_embeddings = torch.randn(batch, 256, *net.embedding_size)

    def forward() -> None:
        net.eval()
        with torch.no_grad():
            net(image, image_embeddings)

    def forward_backward() -> None:
        net.train()
        net.zero_grad(set_to_none=True)
        net(image, image_embeddings).mean().backward()

    timings = [*_time_seconds(forward, repeats), *_time_seconds(forward_backward, repeats)]
    return [seconds / batch for seconds in timings]


def _bench_embedding(net: AutoSAMNet, size: tuple[int, int], repeats: int) -> tuple[float, float]:
    image = torch.rand(1, 3, *size) * 255
    return _time_seconds(lambda: net.embed_images(image), repeats)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sam", nargs="+", default=["tiny", "vit_b"], help="SAM model types to time")
    parser.add_argument("--batch", nargs="+", type=int, default=[1, 4], help="batch sizes")
    parser.add_argument("--encoder", default="hardnet85", help="backbone of g (hardnet85 or a timm name)")
    parser.add_argument("--encoder-input-size", type=int, default=352, help="side of g's input frame, pixels")
    parser.add_argument("--image-size", type=int, nargs=2, default=[288, 384], help="input H W, pixels")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per cell after one warm-up")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--embed", action="store_true", help="also time SAM's image encoder (batch 1)")
    args = parser.parse_args()
    size = (args.image_size[0], args.image_size[1])
    if args.threads:
        torch.set_num_threads(args.threads)

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.machine()} {platform.processor()}"
    )
    print(
        f"g: {args.encoder} at {args.encoder_input_size} px; input {size[0]}x{size[1]}; repeats {args.repeats}"
    )
    # Other processes distort the timings; the load average shows how busy the machine was.
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    print()
    print("| SAM | batch | forward s/image: wall, CPU | forward+backward s/image: wall, CPU |")
    print("|---|---|---|---|")
    embedding_times = {}
    with tempfile.TemporaryDirectory() as folder:
        for model_type in args.sam:
            checkpoint = (
                None if model_type == "tiny" else str(_random_sam_checkpoint(model_type, Path(folder)))
            )
            torch.manual_seed(0)
            net = AutoSAMNet(
                sam_model_type=model_type,
                sam_checkpoint=checkpoint,
                encoder_name=args.encoder,
                encoder_input_size=args.encoder_input_size,
            )
            for batch in args.batch:
                forward_wall, forward_cpu, step_wall, step_cpu = _bench_net(net, batch, size, args.repeats)
                print(
                    f"| {model_type} ({net.sam_input_size} px) | {batch} | {forward_wall:.3f}, {forward_cpu:.3f} "
                    f"| {step_wall:.3f}, {step_cpu:.3f} |"
                )
            if args.embed:
                embedding_times[model_type] = _bench_embedding(net, size, args.repeats)
            del net

    print(f"\nload average at end: {os.getloadavg()[0]:.2f}")
    for model_type, (wall, cpu) in embedding_times.items():
        print(
            f"SAM image encoder, {model_type}: wall {wall:.3f}, CPU {cpu:.3f} s/image (batch 1, no autograd)"
        )


if __name__ == "__main__":
    main()
