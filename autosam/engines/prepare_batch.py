"""Batch preparation for MONAI engines that feeds cached SAM image embeddings to the network."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from monai.engines.utils import PrepareBatch

from autosam.engines.embedding_cache import EmbeddingCache

__all__ = ["AutoSAMPrepareBatch"]


class AutoSAMPrepareBatch(PrepareBatch):
    """Move a batch to the device and, with a cache, add `image_embeddings` as a network kwarg.

    MONAI's `SupervisedTrainer` and `SupervisedEvaluator` call the inferer as
    `inferer(image, network, *args, **kwargs)` with the kwargs returned here, so `AutoSAMNet`
    receives `image_embeddings` and skips SAM's image encoder. Without a cache the batch is
    returned as `(image, label)` and any network (AutoSAMLightNet, a MONAI baseline) works.
    """

    def __init__(
        self,
        *,
        embedding_cache: EmbeddingCache | None = None,
        image_key: str = "image",
        label_key: str = "label",
        sam_image_key: str | None = None,
    ) -> None:
        """
        Args:
            embedding_cache: cache that returns SAM image embeddings; None computes nothing extra.
            image_key: batch key of g's input (B x 3 x H x W).
            label_key: batch key of the label (B x 1 x H x W); a batch without it gives None.
            sam_image_key: batch key of the image SAM embeds, when it differs from g's input
                (an unaugmented copy made before colour augmentation); None uses `image_key`.
        """
        self.embedding_cache = embedding_cache
        self.image_key = image_key
        self.label_key = label_key
        self.sam_image_key = sam_image_key

    def __call__(
        self,
        batchdata: Mapping[str, Any],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor | None] | tuple[torch.Tensor, torch.Tensor | None, tuple, dict]:
        image = batchdata[self.image_key].to(device=device, non_blocking=non_blocking, **kwargs)
        label = batchdata.get(self.label_key)
        if label is not None:
            label = label.to(device=device, non_blocking=non_blocking, **kwargs)
        if self.embedding_cache is None:
            return image, label

        sam_image = image
        if self.sam_image_key is not None:
            sam_image = batchdata[self.sam_image_key].to(device=device, non_blocking=non_blocking, **kwargs)
        if sam_image.shape != image.shape:
            raise ValueError(
                f"'{self.sam_image_key}' has shape {tuple(sam_image.shape)} but '{self.image_key}' has "
                f"{tuple(image.shape)}; spatial augmentation must not run between the copy and the network "
                "when embeddings are cached (set the config's cache_embeddings to false to train with it)"
            )
        image_embeddings = self.embedding_cache(sam_image)  # B x 256 x h x w
        return image, label, (), {"image_embeddings": image_embeddings}
