"""Datalists, readers and MONAI dictionary transforms that turn published data layouts into AutoSAM inputs."""

from __future__ import annotations

from autosam.data.datalist import LAYOUTS, build_datalist, split_by_case
from autosam.data.dataset import (
    ForegroundSliceSampler,
    ItemCacheDataset,
    ItemDataset,
    ItemPersistentDataset,
    make_dataset,
)
from autosam.data.dicom import DicomReader, read_dicom_picture, read_dicom_series
from autosam.data.errors import InvalidItemError
from autosam.data.io import Image2DReader, read_image_2d
from autosam.data.sam_geometry import SamGeometryd, sam_resized_shape
from autosam.data.transforms import (
    BinarizeMaskd,
    CheckSpatialShaped,
    EnsureRGBd,
    RandColorJitterd,
    binarize_mask,
    get_deterministic_transforms,
    get_random_transforms,
    to_rgb,
)
from autosam.data.volume import (
    AlignLabeld,
    CachedImageReader,
    EnsureVolumed,
    ExtractSliced,
    LoadVolumeLabeld,
    stack_slices,
)

__all__ = [
    "LAYOUTS",
    "build_datalist",
    "split_by_case",
    "InvalidItemError",
    "Image2DReader",
    "read_image_2d",
    "SamGeometryd",
    "sam_resized_shape",
    "BinarizeMaskd",
    "CheckSpatialShaped",
    "EnsureRGBd",
    "RandColorJitterd",
    "binarize_mask",
    "get_deterministic_transforms",
    "get_random_transforms",
    "to_rgb",
    "ForegroundSliceSampler",
    "ItemCacheDataset",
    "ItemDataset",
    "ItemPersistentDataset",
    "make_dataset",
    "DicomReader",
    "read_dicom_picture",
    "read_dicom_series",
    "AlignLabeld",
    "CachedImageReader",
    "EnsureVolumed",
    "ExtractSliced",
    "LoadVolumeLabeld",
    "stack_slices",
]
