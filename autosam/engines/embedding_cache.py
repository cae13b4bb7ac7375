"""Cache of frozen-SAM image embeddings, keyed by image content and SAM configuration.

SAM's image encoder never changes during AutoSAM training, so the image embedding of an image that
is not spatially augmented is the same in every epoch. The cache computes it once (through
`network.embed_images`) and returns the stored copy afterwards, so an epoch costs only the
prompt encoder g and SAM's mask decoder.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

__all__ = ["EmbeddingCache", "image_content_key"]

logger = logging.getLogger(__name__)


def image_content_key(image: torch.Tensor) -> str:
    """Return a hex digest of one image's shape, dtype and values (3 x H x W, any device)."""
    array = image.detach().to("cpu", torch.float32).contiguous().numpy()
    digest = hashlib.blake2b(digest_size=20)
    digest.update(repr(tuple(array.shape)).encode())
    digest.update(array.tobytes())
    return digest.hexdigest()


class EmbeddingCache:
    """Image embeddings of a frozen SAM, computed once per image and reused.

    The key of an entry is the image's content (`image_content_key`) inside a namespace given by
    the network's `sam_config_id` (SAM type, checkpoint content and input size), so a changed SAM
    never returns a stale embedding. Entries live in memory and, when `cache_dir` is given, also
    as `<cache_dir>/<sam_config_id>/<key>.pt` files that later runs reuse.
    """

    def __init__(
        self,
        *,
        network: nn.Module,
        cache_dir: str | os.PathLike | None = None,
        max_items_in_memory: int | None = None,
        storage_dtype: torch.dtype = torch.float32,
    ) -> None:
        """
        Args:
            network: an `AutoSAMNet` (provides `embed_images` and `sam_config_id`).
            cache_dir: folder for persistent entries; None keeps the cache in memory only.
            max_items_in_memory: the least recently used entries beyond this count leave memory
                (they stay on disk when `cache_dir` is set); None keeps every entry.
            storage_dtype: dtype of stored embeddings; float16 halves memory and disk use at the
                cost of rounding the embedding SAM's decoder reads.
        """
        for attribute in ("embed_images", "sam_config_id"):
            if not hasattr(network, attribute):
                raise TypeError(
                    f"EmbeddingCache needs a network with `{attribute}` (an AutoSAMNet), got "
                    f"{type(network).__name__}; set the embedding cache to null for other networks"
                )
        if max_items_in_memory is not None and max_items_in_memory < 0:
            raise ValueError(f"max_items_in_memory must be >= 0 or None, got {max_items_in_memory}")

        self.network = network
        self.namespace = str(network.sam_config_id)
        self.cache_dir = None if cache_dir is None else Path(cache_dir) / self.namespace
        self.max_items_in_memory = max_items_in_memory
        self.storage_dtype = storage_dtype
        self._memory: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.hits = 0
        self.misses = 0

        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            logger.info("image embedding cache on disk: %s", self.cache_dir)

    def __len__(self) -> int:
        return len(self._memory)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Return the image embeddings (B x 256 x h x w) of `images` (B x 3 x H x W), on their device."""
        keys = [image_content_key(image) for image in images]
        found = [self._lookup(key) for key in keys]

        missing = [index for index, embedding in enumerate(found) if embedding is None]
        if missing:
            computed = self.network.embed_images(images[missing])  # M x 256 x h x w
            for row, index in enumerate(missing):
                embedding = computed[row].detach().to("cpu", self.storage_dtype)
                self._store(keys[index], embedding)
                found[index] = embedding
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)

        stacked = torch.stack(found)  # B x 256 x h x w
        return stacked.to(device=images.device, dtype=torch.float32)

    def clear_memory(self) -> None:
        """Drop the in-memory entries (files on disk stay)."""
        self._memory.clear()

    def _lookup(self, key: str) -> torch.Tensor | None:
        if key in self._memory:
            self._memory.move_to_end(key)
            return self._memory[key]
        if self.cache_dir is None:
            return None

        path = self.cache_dir / f"{key}.pt"
        if not path.is_file():
            return None
        embedding = torch.load(path, map_location="cpu", weights_only=True)
        self._remember(key, embedding)
        return embedding

    def _store(self, key: str, embedding: torch.Tensor) -> None:
        self._remember(key, embedding)
        if self.cache_dir is None:
            return

        # Write to a temporary file and rename, so a reader never sees half a file.
        handle, temporary = tempfile.mkstemp(dir=self.cache_dir, suffix=".tmp")
        os.close(handle)
        torch.save(embedding.clone(), temporary)
        os.replace(temporary, self.cache_dir / f"{key}.pt")

    def _remember(self, key: str, embedding: torch.Tensor) -> None:
        if self.max_items_in_memory == 0:
            return
        self._memory[key] = embedding
        self._memory.move_to_end(key)
        if self.max_items_in_memory is not None:
            while len(self._memory) > self.max_items_in_memory:
                self._memory.popitem(last=False)
