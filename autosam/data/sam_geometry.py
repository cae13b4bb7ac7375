"""SAM input geometry as an invertible MONAI transform: resize the longest side, then pad to a square.

Segment Anything resizes an image so that its longest side equals the encoder's input size and
pads the bottom and right edges to a square. `SamGeometryd` does the same with MONAI's `Resize`
(`size_mode="longest"`) and `SpatialPad` (`method="end"`), so every step is recorded on the
MetaTensor and `Invertd` crops the padding and resizes a prediction back to the input's size.

NOTE: MONAI rounds the resized side with Python's `round` (half to even), whereas
`segment_anything.utils.transforms.ResizeLongestSide` adds 0.5 and truncates. The two differ by
one pixel only when the scaled side ends in exactly .5.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import torch
from monai.config import KeysCollection
from monai.transforms import InvertibleTransform, MapTransform, Resize, SpatialPad
from monai.utils import ensure_tuple_rep

__all__ = ["SamGeometryd", "sam_resized_shape"]


def sam_resized_shape(height: int, width: int, spatial_size: int) -> tuple[int, int]:
    """Return (H, W) after scaling the longest side of a `height` x `width` image to `spatial_size`.

    The rounding is MONAI's `Resize(size_mode="longest")`, which `SamGeometryd` applies.
    """
    scale = spatial_size / max(height, width)
    return int(round(height * scale)), int(round(width * scale))


class SamGeometryd(MapTransform, InvertibleTransform):
    """Resize the longest spatial side to `spatial_size` and pad the end of each side to `spatial_size`.

    Input C x H x W (or C x H x W x D: every spatial side is scaled by the same factor); output
    C x S x S with S = `spatial_size`. The image's spatial size before the transform is recorded,
    so `Invertd` (or `inverse`) restores it.
    """

    def __init__(
        self,
        keys: KeysCollection,
        *,
        spatial_size: int = 256,
        mode: Sequence[str] | str = ("bilinear", "nearest"),
        anti_aliasing: Sequence[bool] | bool = (True, False),
        pad_value: float = 0.0,
        allow_missing_keys: bool = False,
    ) -> None:
        """
        Args:
            keys: keys of the items to transform, for example ("image", "label").
            spatial_size: side of the square output in pixels, SAM's `image_encoder.img_size` (1024 for ViT).
            mode: interpolation per key: "bilinear" for images and probabilities, "nearest" for masks.
            anti_aliasing: per key, smooth with a Gaussian before downsampling (Pillow-like quality for images).
            pad_value: constant written into the padded bottom and right margins.
            allow_missing_keys: skip keys that an item lacks instead of raising `KeyError`.
        """
        super().__init__(keys, allow_missing_keys)
        if int(spatial_size) <= 0:
            raise ValueError(f"spatial_size must be a positive int, got {spatial_size!r}")
        self.spatial_size = int(spatial_size)
        self.mode = ensure_tuple_rep(mode, len(self.keys))
        self.anti_aliasing = ensure_tuple_rep(anti_aliasing, len(self.keys))
        self.resizer = Resize(spatial_size=self.spatial_size, size_mode="longest")
        self.padder = SpatialPad(
            spatial_size=self.spatial_size, method="end", mode="constant", value=pad_value
        )

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        """Resize and pad each key; each step is recorded on the key's MetaTensor."""
        d = dict(data)
        for key, mode, anti_aliasing in self.key_iterator(d, self.mode, self.anti_aliasing):
            resized = self.resizer(d[key], mode=mode, anti_aliasing=anti_aliasing)  # C x h x w, max(h, w) = S
            d[key] = self.padder(resized)  # C x S x S
        return d

    def inverse(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        """Crop the padding and resize back to the recorded spatial size, with the forward interpolation mode."""
        d = dict(data)
        for key in self.key_iterator(d):
            cropped = self.padder.inverse(d[key])
            d[key] = self.resizer.inverse(cropped)
        return d
