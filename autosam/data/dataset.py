"""MONAI datasets that name the failing item, optionally skip bad items, and a foreground slice sampler."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from monai.data import CacheDataset, Dataset, PersistentDataset
from torch.utils.data import Sampler

__all__ = [
    "ItemDataset",
    "ItemCacheDataset",
    "ItemPersistentDataset",
    "ForegroundSliceSampler",
    "make_dataset",
    "describe_item",
]

logger = logging.getLogger(__name__)


def describe_item(item: Any) -> str:
    """Return a short description of a datalist item (case, slice or frame, and files) for messages."""
    if not isinstance(item, dict):
        return repr(item)[:200]
    parts = [f"case {item['case']!r}"] if "case" in item else []
    for key in ("frame", "slice_index"):
        if key in item:
            parts.append(f"{key} {item[key]}")
    for key in ("image", "label"):
        value = item.get(key)
        if isinstance(value, list):
            value = f"{value[0]} (+{len(value) - 1} files)" if value else "[]"
        if isinstance(value, str):
            parts.append(f"{key} '{value}'")
    return ", ".join(parts) or repr(item)[:200]


class _ItemErrors:
    """Wrap item loading so that an error names the item, or (when skipping) is logged and counted."""

    data: Sequence[Any]
    skip_invalid: bool
    num_skipped: int

    def _init_item_errors(self, skip_invalid: bool) -> None:
        self.skip_invalid = skip_invalid
        self.num_skipped = 0
        self._bad: set[int] = set()

    def _failed(self, index: int, err: Exception) -> None:
        cause = err.__cause__ if isinstance(err, RuntimeError) and err.__cause__ is not None else err
        message = f"item {index} ({describe_item(self.data[index])}) failed: {type(cause).__name__}: {cause}"
        if not self.skip_invalid:
            raise RuntimeError(message) from err
        if index not in self._bad:
            self._bad.add(index)
            self.num_skipped += 1
            logger.warning("%s; skipping it (%d item(s) skipped so far)", message, self.num_skipped)

    def _with_replacement(self, index: int, load: Callable[[int], Any]) -> Any:
        """Load `index`; when skipping, a failed item is replaced by the next item that loads."""
        for offset in range(len(self.data)):
            candidate = (index + offset) % len(self.data)
            if candidate in self._bad:
                continue
            try:
                return load(candidate)
            except Exception as err:  # noqa: BLE001 - any transform error is reported with the item
                self._failed(candidate, err)
        raise RuntimeError(f"all {len(self.data)} items failed to load; see the warnings above")


class ItemDataset(_ItemErrors, Dataset):
    """MONAI `Dataset` whose errors name the item; with `skip_invalid`, bad items are replaced and counted."""

    def __init__(
        self, data: Sequence[Any], transform: Callable | None = None, *, skip_invalid: bool = False
    ) -> None:
        """
        Args:
            data: datalist items.
            transform: transforms applied to each item.
            skip_invalid: replace an item that fails by the next one, with a warning, instead of raising.
        """
        Dataset.__init__(self, data=data, transform=transform)
        self._init_item_errors(skip_invalid)

    def _transform(self, index: int) -> Any:
        return self._with_replacement(index, super()._transform)


class ItemPersistentDataset(_ItemErrors, PersistentDataset):
    """MONAI `PersistentDataset` (deterministic part cached on disk) whose errors name the item."""

    def __init__(
        self,
        data: Sequence[Any],
        transform: Callable,
        *,
        cache_dir: str,
        skip_invalid: bool = False,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            data: datalist items.
            transform: transforms; the part before the first random transform is cached.
            cache_dir: folder of the cache files (one per item, keyed by a hash of the item).
            skip_invalid: replace an item that fails by the next one, with a warning, instead of raising.
            kwargs: other `PersistentDataset` arguments.
        """
        PersistentDataset.__init__(self, data=data, transform=transform, cache_dir=cache_dir, **kwargs)
        self._init_item_errors(skip_invalid)

    def _transform(self, index: int) -> Any:
        return self._with_replacement(index, super()._transform)


class ItemCacheDataset(_ItemErrors, CacheDataset):
    """MONAI `CacheDataset` (deterministic part cached in memory) whose errors name the item.

    With `skip_invalid`, an item that fails while the cache fills is left out of the cache and
    replaced by the next good item whenever it is requested.
    """

    def __init__(
        self,
        data: Sequence[Any],
        transform: Callable,
        *,
        skip_invalid: bool = False,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            data: datalist items.
            transform: transforms; the part before the first random transform is cached.
            skip_invalid: replace an item that fails by the next one, with a warning, instead of raising.
            kwargs: other `CacheDataset` arguments (cache_rate, num_workers, ...).
        """
        self._init_item_errors(skip_invalid)
        kwargs.setdefault("num_workers", 0)
        CacheDataset.__init__(self, data=data, transform=transform, **kwargs)

    def _load_cache_item(self, idx: int) -> Any:
        try:
            return super()._load_cache_item(idx)
        except Exception as err:  # noqa: BLE001 - any transform error is reported with the item
            self._failed(idx, err)
            return None

    def _transform(self, index: int) -> Any:
        def load(candidate: int) -> Any:
            if self._cache is not None and candidate < len(self._cache) and self._cache[candidate] is None:
                if candidate in self._bad:
                    raise RuntimeError("failed while the cache was filled")
            return CacheDataset._transform(self, candidate)

        return self._with_replacement(index, load)


def make_dataset(
    data: Sequence[Any],
    transform: Callable,
    *,
    cache: str = "none",
    cache_dir: str | None = None,
    skip_invalid: bool = False,
    **kwargs: Any,
) -> Dataset:
    """Build the dataset for `cache` = "none", "memory" (`CacheDataset`) or "disk" (`PersistentDataset`).

    Args:
        data: datalist items.
        transform: deterministic then random transforms (a `Compose` or a list).
        cache: where the deterministic part is cached.
        cache_dir: folder for "disk" caching.
        skip_invalid: replace items that fail by the next good one (warning and count) instead of raising.
        kwargs: other arguments of the chosen MONAI dataset.
    """
    if cache == "none":
        return ItemDataset(data, transform, skip_invalid=skip_invalid)
    if cache == "memory":
        return ItemCacheDataset(data, transform, skip_invalid=skip_invalid, **kwargs)
    if cache == "disk":
        if cache_dir is None:
            raise ValueError("cache='disk' needs cache_dir, a folder for the cached items")
        return ItemPersistentDataset(
            data, transform, cache_dir=cache_dir, skip_invalid=skip_invalid, **kwargs
        )
    raise ValueError(f"cache must be 'none', 'memory' or 'disk', got {cache!r}")


class ForegroundSliceSampler(Sampler[int]):
    """Draw slice items so that a chosen fraction of them hold foreground.

    Each draw picks a slice whose datalist item has `foreground: true` with probability
    `foreground_ratio`, otherwise a slice without foreground, uniformly within each group. When one
    group is empty every draw comes from the other. Reseeded per epoch with `set_epoch`.
    """

    def __init__(
        self,
        data: Sequence[dict[str, Any]],
        *,
        foreground_ratio: float = 0.5,
        num_samples: int | None = None,
        seed: int = 0,
        foreground_key: str = "foreground",
    ) -> None:
        """
        Args:
            data: datalist items with a boolean `foreground_key`.
            foreground_ratio: expected fraction of drawn slices that contain foreground, in [0, 1].
            num_samples: draws per epoch; None draws `len(data)`.
            seed: seed of the draws (combined with the epoch).
            foreground_key: item key that is true when the slice contains foreground.
        """
        if not 0.0 <= foreground_ratio <= 1.0:
            raise ValueError(f"foreground_ratio must be in [0, 1], got {foreground_ratio}")
        missing = [i for i, item in enumerate(data) if foreground_key not in item]
        if missing:
            raise ValueError(
                f"{len(missing)} item(s), first {describe_item(data[missing[0]])}, have no '{foreground_key}'; "
                "build the datalist with slices (nifti or dicom layout)"
            )
        self.positive = np.array([i for i, item in enumerate(data) if item[foreground_key]], dtype=np.int64)
        self.negative = np.array(
            [i for i, item in enumerate(data) if not item[foreground_key]], dtype=np.int64
        )
        self.foreground_ratio = foreground_ratio
        self.num_samples = len(data) if num_samples is None else int(num_samples)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch, so that each epoch draws another sequence."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        ratio = self.foreground_ratio
        if len(self.positive) == 0:
            ratio = 0.0
        elif len(self.negative) == 0:
            ratio = 1.0
        use_positive = torch.rand(self.num_samples, generator=generator) < ratio
        for positive in use_positive.tolist():
            group = self.positive if positive else self.negative
            yield int(group[int(torch.randint(len(group), (1,), generator=generator))])
