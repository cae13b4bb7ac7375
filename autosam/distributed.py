"""Helpers that the multi-GPU bundle configs call to run AutoSAM under `torchrun`.

`torchrun` starts one process per device and sets `RANK`, `LOCAL_RANK`, `WORLD_SIZE`,
`MASTER_ADDR` and `MASTER_PORT` in each. The functions here read those variables, so the same
config runs on one node with several GPUs, on several nodes, and on CPUs with the gloo backend.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from typing import Any

import ignite.distributed as idist
import torch
import torch.distributed as dist
from monai.data import partition_dataset
from monai.handlers import CheckpointSaver, TensorBoardImageHandler, TensorBoardStatsHandler
from monai.utils import evenly_divisible_all_gather, string_list_all_gather

from autosam.engines import EpochHistoryLogger, EvaluationReport, SunSegMetricHandler
from autosam.metrics.protocol import NUM_THRESHOLDS
from autosam.metrics.suite import CURVE_FIELDS, SCALAR_FIELDS

__all__ = [
    "AttributeForwardingDDP",
    "DistributedSunSegMetricHandler",
    "RANK_ZERO_HANDLER_TYPES",
    "default_backend",
    "destroy_distributed",
    "get_rank",
    "get_world_size",
    "handlers_for_rank",
    "init_distributed",
    "local_device",
    "partition_for_rank",
    "quiet_other_ranks",
    "wrap_ddp",
]

logger = logging.getLogger(__name__)

# Handlers that write files or draw progress bars; `handlers_for_rank` attaches them on rank 0 only.
# Every rank computes the same values after the gradient all-reduce and the metric all-gather.
# Handlers that gather across ranks themselves (MONAI's MetricsSaver) must run on every rank.
RANK_ZERO_HANDLER_TYPES: tuple[type, ...] = (
    CheckpointSaver,
    TensorBoardStatsHandler,
    TensorBoardImageHandler,
)


def default_backend() -> str:
    """Return "nccl" when CUDA devices are visible, else "gloo" (the CPU backend)."""
    return "nccl" if torch.cuda.is_available() else "gloo"


def local_device(backend: str) -> torch.device:
    """Return the device of this process: `cuda:LOCAL_RANK` for nccl, the CPU for gloo."""
    if backend != "nccl":
        return torch.device("cpu")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    return torch.device(f"cuda:{local_rank}")


def init_distributed(backend: str | None = None) -> None:
    """Join the process group that `torchrun` set up, once; a second call does nothing.

    Args:
        backend: "nccl" (GPUs), "gloo" (CPUs) or None for `default_backend()`.
    """
    if dist.is_initialized():
        return

    missing = [
        name for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if name not in os.environ
    ]
    if missing:
        raise RuntimeError(
            f"environment variables {missing} are not set; start the multi-GPU configs with "
            "`torchrun --nproc_per_node=N -m monai.bundle run ...`, not with plain `python`"
        )

    backend = backend or default_backend()
    if backend == "nccl":
        torch.cuda.set_device(local_device(backend))
    dist.init_process_group(backend=backend)
    # ignite's first look at the process group is a collective call (a new gloo group and an
    # all-reduce). Making it here on every rank keeps a later call on rank 0 alone, such as the
    # disk saver of MONAI's CheckpointSaver, from waiting for the other ranks forever.
    idist.sync()
    logger.info("joined process group: rank %d of %d, backend %s", get_rank(), get_world_size(), backend)


def destroy_distributed() -> None:
    """Leave the process group if this process joined one."""
    if dist.is_initialized():
        dist.destroy_process_group()


def get_rank() -> int:
    """Return this process's global rank: the process group's, else torchrun's `RANK`, else 0."""
    if dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


def get_world_size() -> int:
    """Return the number of processes: the process group's, else torchrun's `WORLD_SIZE`, else 1."""
    if dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


class AttributeForwardingDDP(torch.nn.parallel.DistributedDataParallel):
    """DistributedDataParallel that forwards unknown attributes to the wrapped network.

    The bundle configs call `network.trainable_parameters()`, and the embedding cache calls
    `network.embed_images(...)` and reads `network.sam_config_id`. With this wrapper those calls
    reach AutoSAMNet unchanged. They run outside DDP's forward, which is right for them: they need
    no gradient synchronisation.
    """

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            # Until DDP's constructor registers the wrapped module there is nothing to forward to.
            if "module" not in self.__dict__.get("_modules", {}):
                raise
            return getattr(self._modules["module"], name)


def wrap_ddp(
    network: torch.nn.Module, device: torch.device, *, find_unused_parameters: bool = False
) -> AttributeForwardingDDP:
    """Move `network` to `device` and wrap it in DistributedDataParallel.

    DDP broadcasts rank 0's parameters and buffers when it wraps the network, frozen SAM tensors
    included, so every rank starts from the same weights. Gradients are all-reduced only for
    parameters with `requires_grad` (g, the logit affine, h).

    Args:
        network: AutoSAMNet, AutoSAMLightNet or any module with a trainable parameter.
        device: this process's device, from `local_device`.
        find_unused_parameters: set when some trainable parameters take no part in the loss of an
            iteration. DDP then searches the autograd graph in every step, which costs time.
    """
    network = network.to(device)
    device_ids = [device] if device.type == "cuda" else None
    return AttributeForwardingDDP(
        network, device_ids=device_ids, find_unused_parameters=find_unused_parameters
    )


def handlers_for_rank(handlers: Iterable[Any] | None, *, rank: int | None = None) -> list[Any] | None:
    """Drop the file-writing handlers on every rank but 0, after every rank has built them.

    Every rank builds the handlers from the same config and attaches what this returns. The
    file-writing handlers are `RANK_ZERO_HANDLER_TYPES`, autosam's EpochHistoryLogger and
    EvaluationReport, and ignite's ProgressBar. autosam's PredictionWriter stays on every rank,
    because each rank writes the predictions of its own images.

    Args:
        handlers: the handler list of a trainer or evaluator; None stays None.
        rank: the global rank; None reads it from the process group.
    """
    if handlers is None:
        return None
    rank = get_rank() if rank is None else rank
    if rank == 0:
        return list(handlers)
    return [handler for handler in handlers if not _writes_files(handler)]


def _writes_files(handler: Any) -> bool:
    if isinstance(handler, (*RANK_ZERO_HANDLER_TYPES, EpochHistoryLogger, EvaluationReport)):
        return True
    # Ignite's progress bar is matched by name because tqdm is an optional dependency of ignite.
    return type(handler).__name__ == "ProgressBar"


def partition_for_rank(
    data: Sequence[Any], *, shuffle: bool = False, seed: int = 0, even_divisible: bool = True
) -> list[Any]:
    """Return this rank's share of a datalist, so that a per-rank cache stores only that share.

    With a `DistributedSampler`, the images a rank receives change every epoch, so an in-memory
    embedding cache on each rank would end up holding every image's embedding. Partitioning
    the datalist once instead gives each rank a fixed 1 / world_size of the images (shuffled
    within the rank by its data loader), and the caches of all ranks together hold each image once.

    Args:
        data: the datalist entries (dicts with `image`, `label`, ...).
        shuffle: shuffle before partitioning, with `seed`, the same on every rank.
        seed: the shuffle seed.
        even_divisible: True pads the short partitions with repeated items so that every rank
            runs the same number of iterations (needed for training); False keeps every item once.
    """
    world_size = get_world_size()
    if world_size == 1:
        return list(data)
    if len(data) < world_size:
        raise ValueError(
            f"datalist has {len(data)} items but the process group has {world_size} ranks; "
            "give it at least one item per rank or start fewer processes"
        )
    partitions = partition_dataset(
        data=data, num_partitions=world_size, shuffle=shuffle, seed=seed, even_divisible=even_divisible
    )
    return list(partitions[get_rank()])


def quiet_other_ranks() -> None:
    """Drop log records below WARNING on every rank but 0, so each message appears once."""
    if get_rank() > 0:
        logging.disable(logging.INFO)


class DistributedSunSegMetricHandler(SunSegMetricHandler):
    """The SUN-SEG suite metric with the frames of all ranks gathered before averaging.

    Each rank scores its own frames. `compute` gathers every rank's packed frame rows and case ids,
    so every rank returns the suite over the whole data set, and `num_frames` and `per_case`
    then count all ranks' frames. Rows are ordered rank by rank, which changes only the order of
    `per_case`, not its values.
    """

    def reset(self) -> None:
        super().reset()
        self._gathered = False

    def iteration_completed(self, engine: Any) -> None:
        """Score the iteration's frames; frames without a case id get ids unique across ranks."""
        first_new = len(self._cases)
        super().iteration_completed(engine)

        batch = engine.state.batch
        items = batch if isinstance(batch, list) else []
        for offset, index in enumerate(range(first_new, len(self._cases))):
            item = items[offset] if offset < len(items) else {}
            if not isinstance(item, dict) or item.get(self.case_key) is None:
                # Each rank numbers its own frames from 0, so the rank keeps the ids apart.
                self._cases[index] = f"rank{get_rank()}_frame_{index}"

    def compute(self) -> float:
        if get_world_size() > 1 and not self._gathered:
            self._gather()
        return super().compute()

    def _gather(self) -> None:
        width = len(SCALAR_FIELDS) + len(CURVE_FIELDS) * NUM_THRESHOLDS
        local_rows = torch.cat(self._rows) if self._rows else torch.zeros(0, width, dtype=torch.float64)

        rows = evenly_divisible_all_gather(local_rows, concat=True)  # N x F, N over all ranks
        cases = string_list_all_gather(self._cases)
        self._rows = list(rows.split(1))
        self._cases = cases
        self._gathered = True
