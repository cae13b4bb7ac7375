"""Training epoch time with and without the frozen-SAM image-embedding cache, at the same SAM config.

    python scripts/bench_train.py [--sam_model_type vit_b] [--num_images 8] [--batch_size 2]
        [--encoder_name resnet18] [--encoder_input_size 352] [--spatial_size 352]

SAM of the chosen type is built with random weights (timing does not depend on the values): its
state dict is saved to a temporary file and loaded through the normal checkpoint path. The images
are real Kvasir-SEG frames from AUTOSAM_SHARED_DATA (default ../shared/data beside the checkout),
loaded with the bundle's deterministic transforms. One epoch = every image once, forward,
BCE + Dice loss, backward and an Adam step on g. The cached run is timed in its second epoch, when
every embedding is in the cache. Its first epoch, which fills the cache, is reported too.
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from pathlib import Path

import fire
import torch
from monai.losses import DiceCELoss


def _load_images(num_images: int, spatial_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    from monai.transforms import Compose

    from autosam.data.transforms import get_deterministic_transforms

    data = Path(
        os.environ.get("AUTOSAM_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
    )
    images = sorted((data / "kvasir_seg" / "images").glob("*.jpg"))[:num_images]
    if len(images) < num_images:
        raise FileNotFoundError(
            f"found {len(images)} Kvasir-SEG images under '{data}', need {num_images}; set AUTOSAM_SHARED_DATA"
        )
    transform = Compose(get_deterministic_transforms(keys=["image", "label"], spatial_size=spatial_size))
    items = [
        transform({"image": str(path), "label": str(data / "kvasir_seg" / "masks" / path.name)})
        for path in images
    ]
    return torch.stack([item["image"].as_tensor() for item in items]), torch.stack(
        [item["label"].as_tensor() for item in items]
    )


def _build_network(
    sam_model_type: str, encoder_name: str, encoder_input_size: int, folder: str
) -> torch.nn.Module:
    from segment_anything import sam_model_registry

    from autosam.networks import AutoSAMNet

    if sam_model_type == "tiny":
        return AutoSAMNet(
            sam_model_type="tiny", encoder_name=encoder_name, encoder_input_size=encoder_input_size
        )
    checkpoint = os.path.join(folder, f"random_sam_{sam_model_type}.pth")
    torch.save(sam_model_registry[sam_model_type]().state_dict(), checkpoint)
    return AutoSAMNet(
        sam_model_type=sam_model_type,
        sam_checkpoint=checkpoint,
        encoder_name=encoder_name,
        encoder_input_size=encoder_input_size,
    )


def _epoch(network, optimizer, loss_function, images, labels, batch_size, cache) -> tuple[float, float]:
    """Run one epoch; return (wall seconds, CPU seconds of this process)."""
    network.train()
    start, cpu_start = time.perf_counter(), time.process_time()
    for first in range(0, len(images), batch_size):
        image, label = images[first : first + batch_size], labels[first : first + batch_size]
        kwargs = {"image_embeddings": cache(image)} if cache is not None else {}
        optimizer.zero_grad()
        loss = loss_function(network(image, **kwargs), label)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start, time.process_time() - cpu_start


def main(
    sam_model_type: str = "vit_b",
    num_images: int = 8,
    batch_size: int = 2,
    encoder_name: str = "resnet18",
    encoder_input_size: int = 352,
    spatial_size: int = 352,
) -> None:
    """Print the epoch times (wall clock and CPU time) and the speed-ups as Markdown table rows."""
    from autosam.engines import EmbeddingCache

    torch.manual_seed(0)
    images, labels = _load_images(num_images, spatial_size)
    with tempfile.TemporaryDirectory() as folder:
        network = _build_network(sam_model_type, encoder_name, encoder_input_size, folder)
    optimizer = torch.optim.Adam(network.trainable_parameters(), lr=3e-4, weight_decay=1e-4)
    loss_function = DiceCELoss(sigmoid=True)

    _epoch(
        network, optimizer, loss_function, images[:batch_size], labels[:batch_size], batch_size, None
    )  # warm-up
    uncached = _epoch(network, optimizer, loss_function, images, labels, batch_size, None)
    cache = EmbeddingCache(network=network)
    filling = _epoch(network, optimizer, loss_function, images, labels, batch_size, cache)
    cached = _epoch(network, optimizer, loss_function, images, labels, batch_size, cache)

    hardware = platform.processor() or platform.machine()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {hardware}")
    print(
        "| SAM | g | images | batch | clock | epoch without cache (s) | first cached epoch (s) | cached epoch (s) | speed-up |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for column, clock in enumerate(("wall", "CPU")):
        print(
            f"| {sam_model_type} ({network.sam_input_size} px, random weights) | {encoder_name} @ {encoder_input_size} | "
            f"{num_images} | {batch_size} | {clock} | {uncached[column]:.1f} | {filling[column]:.1f} | "
            f"{cached[column]:.1f} | {uncached[column] / cached[column]:.1f}x |"
        )


if __name__ == "__main__":
    fire.Fire(main)
