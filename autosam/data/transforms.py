"""MONAI dictionary transforms and the two transform lists that feed AutoSAM.

Every pipeline ends with `image`: float32 MetaTensor 3 x H x W, RGB in [0, 255], and `label`:
float32 MetaTensor 1 x H x W in {0, 1}. `get_deterministic_transforms` returns the list that
training, validation and inference share (it ends with the invertible `SamGeometryd`);
`get_random_transforms` returns the augmentations that only training appends.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision.transforms.v2.functional as tvf
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import (
    EnsureTyped,
    LoadImaged,
    MapTransform,
    Orientationd,
    RandFlipd,
    RandomizableTransform,
    RandRotated,
    RandZoomd,
    ScaleIntensityRanged,
    ScaleIntensityRangePercentilesd,
    Transform,
)
from monai.utils import convert_to_dst_type

from autosam.data.dicom import DicomReader
from autosam.data.errors import InvalidItemError, warn_once
from autosam.data.io import Image2DReader
from autosam.data.sam_geometry import SamGeometryd
from autosam.data.volume import (
    AlignLabeld,
    CachedImageReader,
    EnsureVolumed,
    ExtractSliced,
    LoadVolumeLabeld,
    volume_readers,
)

__all__ = [
    "EnsureRGBd",
    "BinarizeMaskd",
    "CheckSpatialShaped",
    "RandColorJitterd",
    "SamGeometryd",
    "binarize_mask",
    "to_rgb",
    "get_deterministic_transforms",
    "get_random_transforms",
]

MODALITIES = ("rgb", "ct", "mr")


def _source_name(tensor: Any) -> str:
    """Return the file a MetaTensor was loaded from, or a placeholder for plain tensors."""
    if isinstance(tensor, MetaTensor):
        name = tensor.meta.get("filename_or_obj")
        if name:
            return str(name)
    return "<in-memory array>"


def _source_dtype(tensor: Any) -> str:
    if isinstance(tensor, MetaTensor) and tensor.meta.get("source_dtype"):
        return str(tensor.meta["source_dtype"])
    return str(tensor.dtype).replace("torch.", "")


def to_rgb(
    image: torch.Tensor,
    *,
    source_dtype: str,
    scale: str = "dtype",
    bits_stored: int | None = None,
    name: str = "<in-memory array>",
) -> torch.Tensor:
    """Convert a C x H x W image to float32 3 x H x W RGB in [0, 255].

    One channel is repeated three times, two channels (grey + alpha) keep the grey one, four
    channels (RGBA) drop alpha. With `scale="dtype"`, 8-bit values stay as they are, 16-bit values
    are scaled by 255 / 65535 (255 / (2**`bits_stored` - 1) for DICOM pixels with fewer stored
    bits), boolean values by 255, and other types (signed or float) are scaled from their minimum
    and maximum. `scale="none"` leaves values alone (for example after a CT window).
    """
    channels = image.shape[0]
    if channels in (1, 2):
        image = image[:1].repeat(3, *([1] * (image.ndim - 1)))
    elif channels == 4:
        image = image[:3]
    elif channels != 3:
        raise InvalidItemError(
            f"image '{name}' has {channels} channels; expected 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA)"
        )
    image = image.float()

    if scale == "none" or source_dtype == "uint8":
        return image
    if scale != "dtype":
        raise ValueError(f"scale must be 'dtype' or 'none', got {scale!r}")
    if source_dtype == "uint16":
        return image * (255.0 / float((1 << (bits_stored or 16)) - 1))
    if source_dtype == "bool":
        return image * 255.0
    low, high = image.min(), image.max()
    if high > low:
        return (image - low) * (255.0 / (high - low))
    return torch.zeros_like(image)


def binarize_mask(
    mask: torch.Tensor,
    *,
    source_dtype: str,
    threshold: float | None = None,
    label_values: Sequence[float] | None = None,
    name: str = "<in-memory array>",
) -> torch.Tensor:
    """Turn a C x H x W mask into a float32 1 x H x W mask in {0, 1}.

    Colour masks (RGB, or RGBA with alpha dropped) are foreground where any colour channel is.
    With `label_values`, foreground is where the value is one of them (class ids of a label map).
    With `threshold`, foreground is `value > threshold`. Otherwise the stored encoding decides:
    a mask whose values are only 0 and 1 is used as it is; 8-bit masks are binarised at > 128
    (the SUN-SEG rule, which also absorbs JPEG noise near 0 and 255); 16-bit masks at the same
    fraction of their range (> 128 * 257); float masks in [0, 1] at > 0.5.
    """
    channels = mask.shape[0]
    if channels in (2, 4):
        mask = mask[:-1]  # drop alpha
    if mask.shape[0] > 1:
        mask = mask.amax(dim=0, keepdim=True)  # 1 x H x W: a pixel of any colour counts
    mask = mask.float()

    if label_values is not None:
        values = torch.as_tensor(list(label_values), dtype=mask.dtype, device=mask.device)
        return torch.isin(mask, values).float()
    if threshold is not None:
        return (mask > threshold).float()

    distinct = torch.unique(mask)
    if distinct.numel() <= 2 and bool(((distinct == 0) | (distinct == 1)).all()):
        return (mask > 0.5).float()
    if source_dtype == "uint16" and float(distinct[-1]) > 255:
        cut = 128.0 * 257.0
    elif source_dtype.startswith("float") and float(distinct[-1]) <= 1.0:
        cut = 0.5
    else:
        cut = 128.0
    if distinct.numel() > 2:
        shown = ", ".join(f"{v:g}" for v in distinct[:8].tolist())
        more = ", ..." if distinct.numel() > 8 else ""
        warn_once(
            "mask-values",
            name,
            f"mask '{name}' has {distinct.numel()} distinct values ({shown}{more}), not two; "
            f"foreground is taken as value > {cut:g}. Check the mask if that is not the intended rule.",
        )
    return (mask > cut).float()


class EnsureRGBd(MapTransform):
    """Make each image float32 3 x H x W RGB in [0, 255] (grey to 3 channels, RGBA to RGB, 16-bit scaled)."""

    def __init__(
        self, keys: KeysCollection, *, scale: str = "dtype", allow_missing_keys: bool = False
    ) -> None:
        """
        Args:
            keys: image keys.
            scale: "dtype" scales by the stored bit depth (16-bit / 65535 * 255); "none" keeps values (already 0-255).
            allow_missing_keys: skip keys that an item lacks instead of raising `KeyError`.
        """
        super().__init__(keys, allow_missing_keys)
        self.scale = scale

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            bits_stored = image.meta.get("bits_stored") if isinstance(image, MetaTensor) else None
            rgb = to_rgb(
                image,
                source_dtype=_source_dtype(image),
                scale=self.scale,
                bits_stored=None if bits_stored is None else int(bits_stored),
                name=_source_name(image),
            )
            d[key] = convert_to_dst_type(rgb, dst=image, dtype=torch.float32)[0]
        return d


class BinarizeMaskd(MapTransform):
    """Turn each mask into float32 1 x H x W in {0, 1} by the rule of `binarize_mask`; warn once per JPEG mask."""

    def __init__(
        self,
        keys: KeysCollection,
        *,
        threshold: float | None = None,
        label_values: Sequence[float] | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        """
        Args:
            keys: mask keys.
            threshold: foreground is `value > threshold`; None picks the rule from the stored encoding.
            label_values: class ids that count as foreground in a label map (for example [5] for a liver id).
            allow_missing_keys: skip keys that an item lacks instead of raising `KeyError`.
        """
        super().__init__(keys, allow_missing_keys)
        self.threshold = threshold
        self.label_values = None if label_values is None else [float(v) for v in np.ravel(label_values)]

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            mask = d[key]
            name = _source_name(mask)
            if Path(name).suffix.lower() in (".jpg", ".jpeg"):
                warn_once(
                    "mask-jpeg",
                    name,
                    f"mask '{name}' is a JPEG file; lossy compression spreads its values around 0 and 255, "
                    "so it is binarised at > 128. Store masks as PNG to keep them exact.",
                )
            binary = binarize_mask(
                mask,
                source_dtype=_source_dtype(mask),
                threshold=self.threshold,
                label_values=self.label_values,
                name=name,
            )
            d[key] = convert_to_dst_type(binary, dst=mask, dtype=torch.float32)[0]
        return d


class CheckSpatialShaped(MapTransform):
    """Raise `InvalidItemError` when the keys' spatial shapes differ, naming both files and shapes."""

    def __init__(self, keys: KeysCollection, *, allow_missing_keys: bool = False) -> None:
        """
        Args:
            keys: keys whose spatial shapes must agree; the first present key is the reference.
            allow_missing_keys: skip keys that an item lacks instead of raising `KeyError`.
        """
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> Mapping[Hashable, torch.Tensor]:
        reference_key = None
        for key in self.key_iterator(data):
            if reference_key is None:
                reference_key = key
                continue
            reference, other = data[reference_key], data[key]
            if tuple(reference.shape[1:]) != tuple(other.shape[1:]):
                size = " x ".join(str(s) for s in other.shape[1:])
                reference_size = " x ".join(str(s) for s in reference.shape[1:])
                raise InvalidItemError(
                    f"{key} '{_source_name(other)}' is {size} but its {reference_key} "
                    f"'{_source_name(reference)}' is {reference_size}; pair each {reference_key} with the "
                    f"{key} made for it, or resample the {key} to the {reference_key}'s grid"
                )
        return data


class RandColorJitterd(RandomizableTransform, MapTransform):
    """Random brightness, contrast, saturation and hue changes of RGB images in [0, 255], in random order.

    The factors follow torchvision's `ColorJitter` (brightness 0.4 draws a factor in [0.6, 1.4]; hue
    0.1 draws a shift in [-0.1, 0.1] of the colour circle) and come from MONAI's random state, so
    `set_random_state` and `monai.utils.set_determinism` make them reproducible.
    """

    def __init__(
        self,
        keys: KeysCollection,
        *,
        brightness: float = 0.4,
        contrast: float = 0.4,
        saturation: float = 0.4,
        hue: float = 0.1,
        prob: float = 1.0,
        allow_missing_keys: bool = False,
    ) -> None:
        """
        Args:
            keys: image keys (3 x H x W RGB in [0, 255]).
            brightness: maximum relative brightness change; the factor is drawn from [1 - b, 1 + b].
            contrast: maximum relative contrast change; the factor is drawn from [1 - c, 1 + c].
            saturation: maximum relative saturation change; the factor is drawn from [1 - s, 1 + s].
            hue: maximum hue shift as a fraction of the colour circle, at most 0.5.
            prob: probability of changing an item.
            allow_missing_keys: skip keys that an item lacks instead of raising `KeyError`.
        """
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        if not 0.0 <= hue <= 0.5:
            raise ValueError(f"hue must be in [0, 0.5], got {hue}")
        self.brightness, self.contrast, self.saturation, self.hue = brightness, contrast, saturation, hue
        self._order: list[int] = [0, 1, 2, 3]
        self._factors: list[float] = [1.0, 1.0, 1.0, 0.0]

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        if not self._do_transform:
            return
        self._order = [int(i) for i in self.R.permutation(4)]
        self._factors = [
            float(self.R.uniform(max(0.0, 1 - self.brightness), 1 + self.brightness)),
            float(self.R.uniform(max(0.0, 1 - self.contrast), 1 + self.contrast)),
            float(self.R.uniform(max(0.0, 1 - self.saturation), 1 + self.saturation)),
            float(self.R.uniform(-self.hue, self.hue)),
        ]

    def _jitter(self, image: torch.Tensor) -> torch.Tensor:
        adjust = (tvf.adjust_brightness, tvf.adjust_contrast, tvf.adjust_saturation, tvf.adjust_hue)
        out = (torch.as_tensor(image, dtype=torch.float32) / 255.0).clamp(0.0, 1.0)  # 3 x H x W in [0, 1]
        for index in self._order:
            out = adjust[index](out, self._factors[index])
        return out * 255.0

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        self.randomize()
        if not self._do_transform:
            return d
        for key in self.key_iterator(d):
            image = d[key]
            plain = image.as_tensor() if isinstance(image, MetaTensor) else image
            d[key] = convert_to_dst_type(self._jitter(plain), dst=image, dtype=torch.float32)[0]
        return d


def _split_keys(keys: KeysCollection, image_key: str) -> tuple[list[str], list[str]]:
    keys = [keys] if isinstance(keys, str) else list(keys)
    image_keys = [k for k in keys if k == image_key]
    label_keys = [k for k in keys if k != image_key]
    return image_keys, label_keys


def _interpolation(keys: Sequence[str], image_key: str, image_mode: str, label_mode: str) -> tuple[str, ...]:
    return tuple(image_mode if k == image_key else label_mode for k in keys)


def _picture_loading(keys: list[str], missing: bool) -> list[Transform]:
    return [
        LoadImaged(
            keys,
            reader=[DicomReader(), Image2DReader()],
            image_only=True,
            ensure_channel_first=True,
            allow_missing_keys=missing,
        ),
    ]


def _volume_loading(
    image_keys: list[str],
    label_keys: list[str],
    *,
    image_key: str,
    axcodes: str,
    allow_uneven_spacing: bool,
    resample_labels: bool,
    segment_numbers: Sequence[int] | None,
    missing: bool,
) -> list[Transform]:
    keys = image_keys + label_keys
    reader = CachedImageReader(volume_readers(allow_uneven_spacing=allow_uneven_spacing), maxsize=2)
    transforms: list[Transform] = []
    if image_keys:
        transforms.append(
            LoadImaged(
                image_keys,
                reader=reader,
                image_only=True,
                ensure_channel_first=True,
                allow_missing_keys=missing,
            )
        )
    if label_keys:
        transforms.append(
            LoadVolumeLabeld(
                label_keys,
                reference_key=image_key,
                segment_numbers=segment_numbers,
                allow_missing_keys=missing,
            )
        )
    transforms += [
        EnsureVolumed(keys, allow_missing_keys=missing),
        Orientationd(keys, axcodes=axcodes, labels=None, allow_missing_keys=missing),
    ]
    if image_keys and label_keys:
        transforms.append(
            AlignLabeld(
                label_keys, reference_key=image_key, resample=resample_labels, allow_missing_keys=missing
            )
        )
    return transforms


def _volume_intensity(
    image_keys: list[str],
    *,
    modality: str,
    window_level: float,
    window_width: float,
    percentiles: Sequence[float],
    missing: bool,
) -> list[Transform]:
    if not image_keys:
        return []
    if modality == "ct":
        low, high = window_level - window_width / 2.0, window_level + window_width / 2.0
        return [
            ScaleIntensityRanged(
                image_keys,
                a_min=low,
                a_max=high,
                b_min=0.0,
                b_max=255.0,
                clip=True,
                allow_missing_keys=missing,
            )
        ]
    lower, upper = (float(p) for p in percentiles)
    return [
        ScaleIntensityRangePercentilesd(
            image_keys,
            lower=lower,
            upper=upper,
            b_min=0.0,
            b_max=255.0,
            clip=True,
            allow_missing_keys=missing,
        )
    ]


def get_deterministic_transforms(
    keys: KeysCollection = ("image", "label"),
    *,
    modality: str = "rgb",
    spatial_size: int = 256,
    image_key: str = "image",
    mask_threshold: float | None = None,
    label_values: Sequence[float] | None = None,
    axcodes: str = "RAS",
    slice_axis: int = 2,
    window_level: float = 40.0,
    window_width: float = 400.0,
    percentiles: Sequence[float] = (0.5, 99.5),
    allow_uneven_spacing: bool = False,
    resample_labels: bool = False,
    segment_numbers: Sequence[int] | None = None,
    allow_missing_keys: bool = False,
) -> list[Transform]:
    """Return the transforms that training, validation and inference share, ending with `SamGeometryd`.

    "rgb" items are 2D pictures (PNG, JPEG, BMP, TIFF, single-frame DICOM). "ct" and "mr" items
    are slices of volumes (NIfTI, NRRD, DICOM series with NIfTI/NRRD/DICOM SEG labels): each item
    names the volume and its `slice_index` (and optionally `slice_axis`), as the nifti and dicom
    datalist layouts write them.

    Args:
        keys: keys to load; `image_key` is the image and every other key a mask.
        modality: "rgb", "ct" (window in Hounsfield units) or "mr" (percentile scaling, also for other uncalibrated grey volumes).
        spatial_size: side of the square SAM input in pixels.
        image_key: which of `keys` is the image.
        mask_threshold: foreground is `value > mask_threshold`; None picks the rule from the mask's
            encoding for pictures and takes every non-zero label for volumes.
        label_values: class ids that count as foreground in a label map (for example [5] for the liver).
        axcodes: orientation volumes are turned to before slicing (MONAI `Orientationd` codes).
        slice_axis: spatial axis of the oriented volume across which slices are taken, unless the item sets it.
        window_level: CT window centre in Hounsfield units.
        window_width: CT window width in Hounsfield units; the window maps to [0, 255].
        percentiles: MR intensity percentiles mapped to 0 and 255.
        allow_uneven_spacing: read DICOM series with a missing slice (with a warning) instead of raising.
        resample_labels: resample a label on another grid to the image's grid instead of raising.
        segment_numbers: DICOM SEG segments to read (None reads all).
        allow_missing_keys: skip keys that an item lacks (for example no label at inference).
    """
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
    keys = [keys] if isinstance(keys, str) else list(keys)
    image_keys, label_keys = _split_keys(keys, image_key)
    missing = allow_missing_keys

    if modality == "rgb":
        transforms = _picture_loading(keys, missing)
        image_scale, threshold = "dtype", mask_threshold
    else:
        transforms = _volume_loading(
            image_keys,
            label_keys,
            image_key=image_key,
            axcodes=axcodes,
            allow_uneven_spacing=allow_uneven_spacing,
            resample_labels=resample_labels,
            segment_numbers=segment_numbers,
            missing=missing,
        )
        transforms += _volume_intensity(
            image_keys,
            modality=modality,
            window_level=window_level,
            window_width=window_width,
            percentiles=percentiles,
            missing=missing,
        )
        image_scale = "none"
        threshold = 0.0 if mask_threshold is None and label_values is None else mask_threshold

    if label_keys:
        transforms.append(
            BinarizeMaskd(
                label_keys, threshold=threshold, label_values=label_values, allow_missing_keys=missing
            )
        )
    if modality != "rgb":
        transforms.append(ExtractSliced(keys, axis=slice_axis, allow_missing_keys=missing))
    transforms.append(CheckSpatialShaped(keys, allow_missing_keys=missing))
    if image_keys:
        transforms.append(EnsureRGBd(image_keys, scale=image_scale, allow_missing_keys=missing))
    transforms += [
        EnsureTyped(keys, dtype=torch.float32, track_meta=True, allow_missing_keys=missing),
        SamGeometryd(
            keys,
            spatial_size=spatial_size,
            mode=_interpolation(keys, image_key, "bilinear", "nearest"),
            anti_aliasing=tuple(k == image_key for k in keys),
            allow_missing_keys=missing,
        ),
    ]
    return transforms


def get_random_transforms(
    keys: KeysCollection = ("image", "label"),
    *,
    image_key: str = "image",
    prob: float = 0.5,
    rotate_degrees: float = 90.0,
    min_zoom: float = 0.75,
    max_zoom: float = 1.25,
    brightness: float = 0.4,
    contrast: float = 0.4,
    saturation: float = 0.4,
    hue: float = 0.1,
    allow_missing_keys: bool = False,
) -> list[Transform]:
    """Return the training augmentations used for polyps: colour jitter, flips, rotation and zoom.

    Images interpolate bilinearly and masks by nearest neighbour; areas moved into view are zero.

    Args:
        keys: keys to augment; `image_key` is the image and every other key a mask.
        image_key: which of `keys` is the image (the only key that gets colour jitter).
        prob: probability of each flip, of the rotation and of the zoom (colour jitter is always drawn).
        rotate_degrees: maximum rotation angle either way, in degrees.
        min_zoom: smallest isotropic zoom factor.
        max_zoom: largest isotropic zoom factor.
        brightness: colour jitter brightness (see `RandColorJitterd`).
        contrast: colour jitter contrast.
        saturation: colour jitter saturation.
        hue: colour jitter hue.
        allow_missing_keys: skip keys that an item lacks.
    """
    keys = [keys] if isinstance(keys, str) else list(keys)
    image_keys, _ = _split_keys(keys, image_key)
    missing = allow_missing_keys
    mode = _interpolation(keys, image_key, "bilinear", "nearest")

    transforms: list[Transform] = []
    if image_keys:
        transforms.append(
            RandColorJitterd(
                image_keys,
                brightness=brightness,
                contrast=contrast,
                saturation=saturation,
                hue=hue,
                allow_missing_keys=missing,
            )
        )
    transforms += [
        RandFlipd(keys, prob=prob, spatial_axis=1, allow_missing_keys=missing),  # horizontal: along W
        RandFlipd(keys, prob=prob, spatial_axis=0, allow_missing_keys=missing),  # vertical: along H
        RandRotated(
            keys,
            range_x=math.radians(rotate_degrees),
            prob=prob,
            mode=mode,
            padding_mode="zeros",
            allow_missing_keys=missing,
        ),
        RandZoomd(
            keys,
            prob=prob,
            min_zoom=min_zoom,
            max_zoom=max_zoom,
            mode=mode,
            padding_mode="constant",
            keep_size=True,
            allow_missing_keys=missing,
        ),
    ]
    return transforms
