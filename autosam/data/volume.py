"""Volume transforms: label loading (DICOM SEG included), shape and grid checks, slicing and restacking.

A volume goes through `LoadImaged` -> `LoadVolumeLabeld` -> `EnsureVolumed` -> `Orientationd` ->
`AlignLabeld` -> intensity scaling -> `ExtractSliced`, after which it is a 2D item like a picture.
`ExtractSliced` records the slice, so `Invertd` with the whole transform list returns a prediction
as a volume on the original grid, and `stack_slices` rebuilds a volume from many 2D predictions
at the cost of one volume in memory.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Hashable, Mapping, Sequence
from copy import deepcopy
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import ImageReader, ITKReader, MetaTensor, NibabelReader
from monai.transforms import (
    InvertibleTransform,
    LoadImage,
    MapTransform,
    Orientation,
    ResampleToMatch,
)
from monai.utils import ImageMetaKey, MetaKeys, TraceKeys

from autosam.data.dicom import DicomReader, is_dicom_seg, read_dicom_seg_on_series
from autosam.data.errors import InvalidItemError

__all__ = [
    "CachedImageReader",
    "volume_readers",
    "LoadVolumeLabeld",
    "EnsureVolumed",
    "AlignLabeld",
    "ExtractSliced",
    "stack_slices",
]

logger = logging.getLogger(__name__)


def volume_readers(*, allow_uneven_spacing: bool = False) -> list[ImageReader]:
    """Return readers for NIfTI (NiBabel), NRRD / MetaImage (ITK) and DICOM, in MONAI's registration order.

    `LoadImage` tries the last reader first: DICOM folders and files, then NIfTI, then ITK for the rest.
    """
    return [ITKReader(), NibabelReader(), DicomReader(allow_uneven_spacing=allow_uneven_spacing)]


class CachedImageReader(ImageReader):
    """An `ImageReader` that remembers the last `maxsize` files it read (array and metadata).

    Slice items of one volume each load that volume; with items in volume order the volume is
    decoded once. Copies are returned, so later transforms never change the cached array.
    """

    def __init__(self, readers: Sequence[ImageReader] | None = None, *, maxsize: int = 2) -> None:
        """
        Args:
            readers: readers to choose from by `verify_suffix`, last first (as `LoadImage` does); None uses `volume_readers()`.
            maxsize: number of files kept in memory.
        """
        super().__init__()
        self.readers = list(readers) if readers is not None else volume_readers()
        self.maxsize = maxsize
        self._cache: OrderedDict[tuple[str, ...], tuple[np.ndarray, dict]] = OrderedDict()

    def verify_suffix(self, filename: Sequence[str | Path] | str | Path) -> bool:
        """Return True when one of the wrapped readers accepts the file name."""
        return any(reader.verify_suffix(filename) for reader in self.readers)

    def read(self, data: Sequence[str | Path] | str | Path, **kwargs) -> tuple[str, ...]:
        """Read (or find in the cache) the file(s); return the cache key that `get_data` takes."""
        key = tuple(str(Path(p).resolve()) for p in ([data] if isinstance(data, (str, Path)) else data))
        if key in self._cache:
            self._cache.move_to_end(key)
            return key
        reader = next((r for r in reversed(self.readers) if r.verify_suffix(data)), None)
        if reader is None:
            raise InvalidItemError(f"no reader accepts '{key[0]}'; expected NIfTI, NRRD, MetaImage or DICOM")
        array, meta = reader.get_data(reader.read(data))
        self._cache[key] = (array, meta)
        while len(self._cache) > self.maxsize:
            self._cache.popitem(last=False)
        return key

    def get_data(self, img: tuple[str, ...]) -> tuple[np.ndarray, dict]:
        """Return a copy of the cached array and metadata."""
        array, meta = self._cache[img]
        return array.copy(), deepcopy(meta)


class LoadVolumeLabeld(MapTransform):
    """Load label volumes; a DICOM SEG is placed on the grid of the already loaded DICOM image series.

    Run it after `LoadImaged` of the image and before any spatial transform, because SEG frames are
    matched to the image's slices by their SOPInstanceUIDs as read.
    """

    def __init__(
        self,
        keys: KeysCollection,
        *,
        reference_key: str = "image",
        segment_numbers: Sequence[int] | None = None,
        reader: ImageReader | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        """
        Args:
            keys: label keys (paths to NIfTI, NRRD, a DICOM series or a DICOM SEG file).
            reference_key: key of the loaded image whose grid a DICOM SEG is placed on.
            segment_numbers: SEG segments to read (None reads all, each with its segment number as value).
            reader: reader for the other label files; None uses NiBabel, ITK and DICOM.
            allow_missing_keys: skip keys that an item lacks instead of raising `KeyError`.
        """
        super().__init__(keys, allow_missing_keys)
        self.reference_key = reference_key
        self.segment_numbers = None if segment_numbers is None else [int(s) for s in segment_numbers]
        self.loader = LoadImage(
            reader=reader or CachedImageReader(maxsize=1), image_only=True, ensure_channel_first=True
        )

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            path = d[key]
            if isinstance(path, (str, Path)) and is_dicom_seg(path):
                d[key] = self._load_seg(Path(path), d.get(self.reference_key))
            else:
                d[key] = self.loader(path)
        return d

    def _load_seg(self, path: Path, reference: Any) -> MetaTensor:
        if not isinstance(reference, MetaTensor) or "sop_instance_uids" not in reference.meta:
            raise InvalidItemError(
                f"DICOM SEG label '{path}' needs its source DICOM series loaded as '{self.reference_key}' first; "
                "put LoadImaged of the image series before LoadVolumeLabeld"
            )
        spatial_shape = tuple(int(s) for s in reference.shape[1:])
        label = read_dicom_seg_on_series(
            path,
            list(reference.meta["sop_instance_uids"]),
            np.asarray(reference.affine, dtype=np.float64),
            spatial_shape,
            segment_numbers=self.segment_numbers,
        )
        meta = {
            MetaKeys.AFFINE: reference.affine.clone(),
            MetaKeys.ORIGINAL_AFFINE: np.asarray(
                reference.meta.get(MetaKeys.ORIGINAL_AFFINE, reference.affine)
            ),
            MetaKeys.SPATIAL_SHAPE: np.asarray(spatial_shape),
            MetaKeys.SPACE: reference.meta.get(MetaKeys.SPACE),
            ImageMetaKey.FILENAME_OR_OBJ: str(path),
            "source_dtype": "uint16",
            "source_format": "DICOM SEG",
        }
        return MetaTensor(torch.from_numpy(label[None].astype(np.float32)), meta=meta)  # 1 x X x Y x Z


class EnsureVolumed(MapTransform):
    """Check that each key is one channel of a 3D volume, squeezing singleton dimensions after the third.

    A real 4th dimension (a time series, several echoes) raises `InvalidItemError` naming the file,
    because a single volume cannot be chosen from it without knowing the acquisition.
    """

    def __init__(self, keys: KeysCollection, *, allow_missing_keys: bool = False) -> None:
        """
        Args:
            keys: volume keys, channel first (C x X x Y x Z [x 1 ...]).
            allow_missing_keys: skip keys that an item lacks instead of raising `KeyError`.
        """
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            volume = d[key]
            name = (
                volume.meta.get(ImageMetaKey.FILENAME_OR_OBJ, key) if isinstance(volume, MetaTensor) else key
            )
            while volume.ndim > 4 and volume.shape[-1] == 1:
                volume = volume[..., 0]
            if volume.ndim != 4 or volume.shape[0] != 1:
                raise InvalidItemError(
                    f"'{name}' has shape {tuple(volume.shape)} after moving channels first; expected one 3D "
                    f"volume (1 x X x Y x Z). A 4th dimension of size {volume.shape[0]} contains several volumes "
                    "(time points or echoes): extract the one to segment into its own file"
                )
            d[key] = volume
        return d


class AlignLabeld(MapTransform):
    """Check that each label lies on the image's grid (shape and affine); resample it by nearest neighbour if allowed."""

    def __init__(
        self,
        keys: KeysCollection,
        *,
        reference_key: str = "image",
        resample: bool = False,
        atol: float = 1e-3,
        allow_missing_keys: bool = False,
    ) -> None:
        """
        Args:
            keys: label keys.
            reference_key: key of the image.
            resample: resample a label on another grid to the image's grid instead of raising.
            atol: tolerance on affine entries (mm).
            allow_missing_keys: skip keys that an item lacks instead of raising `KeyError`.
        """
        super().__init__(keys, allow_missing_keys)
        self.reference_key = reference_key
        self.resample = resample
        self.atol = atol
        self.resampler = ResampleToMatch(mode="nearest", padding_mode="zeros")

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        image = d[self.reference_key]
        for key in self.key_iterator(d):
            label = d[key]
            same_shape = tuple(label.shape[1:]) == tuple(image.shape[1:])
            same_affine = np.allclose(np.asarray(label.affine), np.asarray(image.affine), atol=self.atol)
            if same_shape and same_affine:
                continue
            if self.resample:
                d[key] = self.resampler(label, img_dst=image)
                continue
            raise InvalidItemError(
                f"label '{label.meta.get(ImageMetaKey.FILENAME_OR_OBJ)}' (shape {tuple(label.shape[1:])}, affine "
                f"{np.round(np.asarray(label.affine), 3).tolist()}) is not on the grid of image "
                f"'{image.meta.get(ImageMetaKey.FILENAME_OR_OBJ)}' (shape {tuple(image.shape[1:])}, affine "
                f"{np.round(np.asarray(image.affine), 3).tolist()}); pair the label made for this image, or "
                "allow resampling the label"
            )
        return d


class ExtractSliced(MapTransform, InvertibleTransform):
    """Take one 2D slice (C x H x W) out of each C x X x Y x Z volume, at the index stored in the item.

    The slice carries `slice_index`, `slice_axis`, `volume_shape` and `volume_affine` (the grid after
    orientation) in its metadata for `stack_slices`. The inverse writes a 2D prediction into an
    otherwise zero volume, so `Invertd` continues with the transforms applied before slicing.
    """

    def __init__(
        self,
        keys: KeysCollection,
        *,
        axis: int = 2,
        index_key: str = "slice_index",
        axis_key: str = "slice_axis",
        allow_missing_keys: bool = False,
    ) -> None:
        """
        Args:
            keys: volume keys.
            axis: spatial axis (0, 1 or 2) across which slices are taken, used when the item has no `axis_key`.
            index_key: item key with the slice index.
            axis_key: item key with the spatial axis, which overrides `axis`.
            allow_missing_keys: skip keys that an item lacks instead of raising `KeyError`.
        """
        super().__init__(keys, allow_missing_keys)
        self.axis = axis
        self.index_key = index_key
        self.axis_key = axis_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.index_key not in d:
            raise InvalidItemError(
                f"item {d.get('case', '')!r} has no '{self.index_key}'; build the datalist with slices, "
                "or leave ExtractSliced out for whole volumes"
            )
        index = int(d[self.index_key])
        axis = int(d.get(self.axis_key, self.axis))
        for key in self.key_iterator(d):
            d[key] = self._extract(d[key], index, axis)
        return d

    def _extract(self, volume: MetaTensor, index: int, axis: int) -> MetaTensor:
        spatial_shape = tuple(int(s) for s in volume.shape[1:])
        if not 0 <= index < spatial_shape[axis]:
            raise InvalidItemError(
                f"slice {index} is outside '{volume.meta.get(ImageMetaKey.FILENAME_OR_OBJ)}', which has "
                f"{spatial_shape[axis]} slices along axis {axis}; rebuild the datalist with the same orientation"
            )
        plane = volume.as_tensor().select(axis + 1, index)  # C x H x W
        meta = dict(volume.meta)
        meta.update(
            {
                "slice_index": index,
                "slice_axis": axis,
                "volume_shape": np.asarray(spatial_shape),
                "volume_affine": np.asarray(volume.affine),
                MetaKeys.AFFINE: torch.eye(4, dtype=torch.float64),
                MetaKeys.SPATIAL_SHAPE: np.asarray(plane.shape[1:]),
            }
        )
        out = MetaTensor(plane.clone(), meta=meta, applied_operations=list(volume.applied_operations))
        self.push_transform(
            out,
            extra_info={"index": index, "axis": axis, "volume_shape": spatial_shape, "affine": volume.affine},
        )
        return out

    def inverse(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Write each 2D slice into a zero volume of the recorded shape and restore the volume's affine."""
        d = dict(data)
        for key in self.key_iterator(d):
            plane = d[key]
            transform = self.pop_transform(plane)
            info = transform[TraceKeys.EXTRA_INFO]
            volume = torch.zeros((plane.shape[0], *info["volume_shape"]), dtype=plane.dtype)
            volume.select(int(info["axis"]) + 1, int(info["index"])).copy_(plane.as_tensor())
            out = MetaTensor(volume, meta=dict(plane.meta), applied_operations=plane.applied_operations)
            out.affine = torch.as_tensor(np.asarray(info["affine"]), dtype=torch.float64)
            d[key] = out
        return d


def stack_slices(
    slices: Sequence[torch.Tensor],
    *,
    slice_indices: Sequence[int] | None = None,
    slice_axis: int | None = None,
    volume_shape: Sequence[int] | None = None,
    volume_affine: np.ndarray | None = None,
    original_affine: np.ndarray | None = None,
    reorient: bool = True,
) -> MetaTensor:
    """Stack 2D slice predictions (each C x H x W on the volume's slice grid) into a C x X x Y x Z MetaTensor.

    The slice index, axis and volume grid come from each slice's metadata (as `ExtractSliced`
    wrote it and `Invertd` copies it) unless given. Slices that are not given stay zero. With
    `reorient`, the volume is turned back from the working orientation to the orientation of
    `original_affine` (the file's), so its affine is the file's affine.
    """
    if not slices:
        raise ValueError("stack_slices needs at least one slice")
    first = slices[0]
    meta = first.meta if isinstance(first, MetaTensor) else {}

    def _from_meta(value: Any, name: str) -> Any:
        if value is not None:
            return value
        if name not in meta:
            raise ValueError(f"slice metadata has no '{name}'; pass {name} explicitly")
        return meta[name]

    axis = int(_from_meta(slice_axis, "slice_axis"))
    shape = tuple(int(s) for s in np.asarray(_from_meta(volume_shape, "volume_shape")).ravel())
    affine = np.asarray(_from_meta(volume_affine, "volume_affine"), dtype=np.float64)
    if slice_indices is None:
        slice_indices = [int(s.meta["slice_index"]) for s in slices]

    volume = torch.zeros((first.shape[0], *shape), dtype=torch.float32)
    for plane, index in zip(slices, slice_indices, strict=True):
        plane = plane.as_tensor() if isinstance(plane, MetaTensor) else torch.as_tensor(plane)
        expected = tuple(s for i, s in enumerate(shape) if i != axis)
        if tuple(plane.shape[1:]) != expected:
            raise ValueError(
                f"slice {index} is {tuple(plane.shape[1:])} but the volume's slices are {expected}"
            )
        volume.select(axis + 1, int(index)).copy_(plane.float())
    out = MetaTensor(volume, affine=torch.as_tensor(affine))

    if reorient:
        original = original_affine if original_affine is not None else meta.get(MetaKeys.ORIGINAL_AFFINE)
        if original is not None:
            axcodes = "".join(nib.orientations.aff2axcodes(np.asarray(original, dtype=np.float64)))
            out = Orientation(axcodes=axcodes, labels=None)(out)
            out.applied_operations = []
    return out
