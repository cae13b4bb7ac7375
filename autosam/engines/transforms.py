"""Post-processing transforms of the bundle's evaluators."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from monai.config import KeysCollection
from monai.transforms import Compose, MapTransform, Transform

__all__ = ["ReloadOriginald"]


class ReloadOriginald(MapTransform):
    """Replace each key's resized tensor by the file it was loaded from, read again at its original size.

    Validation and evaluation score predictions (mapped back with `Invertd`) against the label as
    stored, not against a label resized to the SAM frame and back, which would blur thin structures.
    """

    def __init__(
        self, keys: KeysCollection, *, transforms: Sequence[Transform], allow_missing_keys: bool = False
    ) -> None:
        """
        Args:
            keys: keys to reload, e.g. "label"; each must be a MetaTensor with `filename_or_obj`.
            transforms: loading transforms for these keys, without the SAM geometry, e.g.
                `get_deterministic_transforms(keys=["label"])[:-1]`.
            allow_missing_keys: skip keys that an item lacks.
        """
        super().__init__(keys, allow_missing_keys)
        self.loader = Compose(list(transforms))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            meta = getattr(d[key], "meta", {})
            source = meta.get("filename_or_obj")
            if not source:
                raise KeyError(
                    f"'{key}' has no meta 'filename_or_obj', so its original file cannot be reloaded"
                )
            d[key] = self.loader({key: source})[key]
        return d
