"""DICOM reading: series sorted in space, photometric handling, rescale to physical units, DICOM SEG labels.

A series is sorted by the projection of ImagePositionPatient on the slice normal (the cross
product of the two ImageOrientationPatient directions), never by InstanceNumber, which scanners
and anonymisers leave constant or reversed. Uneven spacing (a missing slice) and duplicated
positions raise `InvalidItemError` naming the series and the positions, unless uneven spacing is
explicitly allowed.

Pixel values: MONOCHROME1 is inverted so that higher values are brighter, as in MONOCHROME2.
YBR colour is converted to RGB, and RescaleSlope and RescaleIntercept give physical units
(Hounsfield units for CT). Volumes come out as X x Y x Z (column, row, slice index) with a RAS
affine, as MONAI's own readers return them. A single-frame file comes out as a 2D picture,
H x W [x 3].
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from monai.data import ImageReader
from monai.utils import MetaKeys, SpaceKeys
from pydicom.errors import InvalidDicomError

from autosam.data.errors import InvalidItemError, warn_once

__all__ = [
    "DicomReader",
    "SEGMENTATION_STORAGE",
    "is_dicom_file",
    "is_dicom_seg",
    "list_dicom_files",
    "read_dicom_series",
    "read_dicom_picture",
    "read_dicom_seg_on_series",
    "sort_series",
]

logger = logging.getLogger(__name__)

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def is_dicom_file(path: str | Path) -> bool:
    """Return True when the file carries the DICOM Part 10 preamble ("DICM" at byte 128)."""
    path = Path(path)
    if not path.is_file():
        return False
    with path.open("rb") as handle:
        header = handle.read(132)
    return len(header) == 132 and header[128:132] == b"DICM"


def is_dicom_seg(path: str | Path) -> bool:
    """Return True when the file is a DICOM Segmentation (SEG) object."""
    if not is_dicom_file(path):
        return False
    header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
    return str(header.get("SOPClassUID", "")) == SEGMENTATION_STORAGE


def list_dicom_files(folder: str | Path) -> list[Path]:
    """List the DICOM files of a folder (not recursive); other files are skipped with a warning."""
    folder = Path(folder)
    files = []
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name.startswith("."):
            continue
        if is_dicom_file(path):
            files.append(path)
        elif path.name.upper() != "DICOMDIR":
            warn_once(
                "not-dicom",
                str(path),
                f"'{path}' in DICOM folder '{folder}' is not a DICOM file; skipping it",
            )
    return files


def _decode(dataset: pydicom.Dataset, path: Path) -> np.ndarray:
    """Decode the pixel data to rows x columns [x 3], with YBR converted to RGB and MONOCHROME1 inverted."""
    if (
        "PixelData" not in dataset
        and "FloatPixelData" not in dataset
        and "DoubleFloatPixelData" not in dataset
    ):
        raise InvalidItemError(
            f"DICOM file '{path}' has no pixel data (SOP class {dataset.get('SOPClassUID', 'unknown')}); "
            "it is not an image. Move it out of the image folder"
        )
    try:
        # pydicom 3 converts YBR_FULL / YBR_FULL_422 (uncompressed or JPEG) to RGB here.
        array = dataset.pixel_array
    except Exception as err:  # decoders raise many types (ValueError, RuntimeError, NotImplementedError, ...)
        raise InvalidItemError(
            f"cannot decode the pixel data of DICOM file '{path}' "
            f"(transfer syntax {dataset.file_meta.get('TransferSyntaxUID', 'unknown')}): {err}. "
            "Install a decoder for it (pylibjpeg-openjpeg for JPEG 2000, pylibjpeg-libjpeg for JPEG) "
            "or replace the corrupt file"
        ) from err

    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    if photometric.startswith("YBR") and int(pydicom.__version__.split(".")[0]) < 3:
        # NOTE: pydicom 2 converts YBR only for some JPEG decoders; this branch has not been run here.
        array = pydicom.pixels.convert_color_space(array, photometric, "RGB")
    elif photometric == "PALETTE COLOR":
        array = pydicom.pixels.apply_color_lut(array, dataset)
        array = (array // 257).astype(np.uint8) if array.dtype == np.uint16 else array
    elif photometric == "MONOCHROME1":
        array = _invert_monochrome1(array, dataset)
    return array


def _invert_monochrome1(array: np.ndarray, dataset: pydicom.Dataset) -> np.ndarray:
    """Map MONOCHROME1 (min is white) to MONOCHROME2 within the stored bit range."""
    bits_stored = int(dataset.get("BitsStored", array.dtype.itemsize * 8))
    if int(dataset.get("PixelRepresentation", 0)) == 0:
        return ((1 << bits_stored) - 1 - array.astype(np.int64)).astype(array.dtype)
    return (-1 - array.astype(np.int64)).astype(array.dtype)


def _rescale(array: np.ndarray, dataset: pydicom.Dataset) -> tuple[np.ndarray, bool]:
    slope = float(dataset.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(dataset.get("RescaleIntercept", 0.0) or 0.0)
    if "RescaleSlope" not in dataset and "RescaleIntercept" not in dataset:
        return array, False
    return array.astype(np.float32) * np.float32(slope) + np.float32(intercept), True


def _read_dataset(path: Path, *, pixels: bool) -> pydicom.Dataset:
    try:
        return pydicom.dcmread(path, stop_before_pixels=not pixels)
    except (InvalidDicomError, OSError, ValueError, EOFError) as err:
        raise InvalidItemError(f"cannot read DICOM file '{path}': {err}; replace the corrupt file") from err


def read_dicom_picture(path: str | Path) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a single-frame DICOM file as a 2D picture, H x W [x 3], rows first."""
    path = Path(path)
    dataset = _read_dataset(path, pixels=True)
    if int(dataset.get("NumberOfFrames", 1) or 1) > 1:
        raise InvalidItemError(
            f"DICOM file '{path}' has {dataset.NumberOfFrames} frames; multi-frame files are not read as "
            "one picture. Split it into single-frame files"
        )
    array = _decode(dataset, path)
    array, rescaled = _rescale(array, dataset)
    meta = {
        "source_dtype": str(array.dtype),
        "source_format": "DICOM",
        "modality": str(dataset.get("Modality", "")),
        "photometric_interpretation": str(dataset.get("PhotometricInterpretation", "")),
        "bits_stored": int(dataset.get("BitsStored", array.dtype.itemsize * 8)),
        "rescaled": rescaled,
    }
    return array, meta


@dataclass
class SortedSeries:
    """Slices of one series in increasing position along the slice normal."""

    files: list[Path]
    headers: list[pydicom.Dataset]
    positions: np.ndarray  # mm along the slice normal, increasing
    normal: np.ndarray  # unit vector, LPS
    spacing: float  # mm between neighbouring slices (the smallest gap)


def sort_series(
    files: Sequence[Path],
    headers: Sequence[pydicom.Dataset],
    *,
    allow_uneven_spacing: bool = False,
    spacing_tolerance: float = 0.1,
) -> SortedSeries:
    """Sort the slices of one series along its normal and check that they are evenly spaced and unique.

    Args:
        files: the series' files, in any order.
        headers: their datasets (headers are enough).
        allow_uneven_spacing: log a warning instead of raising when neighbouring gaps differ.
        spacing_tolerance: largest accepted excess of a gap over the smallest gap, relative to it.
    """
    series = _series_name(files, headers)
    for path, header in zip(files, headers, strict=True):
        for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
            if keyword not in header:
                raise InvalidItemError(
                    f"DICOM file '{path}' of series {series} has no {keyword}, so its place in the volume "
                    "is unknown; read it as a 2D picture instead"
                )

    orientations = np.array([[float(v) for v in h.ImageOrientationPatient] for h in headers])
    if np.abs(orientations - orientations[0]).max() > 1e-3:
        raise InvalidItemError(f"series {series} mixes slice orientations; it is not one volume")
    shapes = {(int(h.Rows), int(h.Columns)) for h in headers}
    if len(shapes) > 1:
        raise InvalidItemError(f"series {series} mixes slice sizes {sorted(shapes)}; it is not one volume")

    row_direction, column_direction = orientations[0][:3], orientations[0][3:]
    normal = np.cross(row_direction, column_direction)
    normal /= np.linalg.norm(normal)
    positions = np.array([np.dot(normal, [float(v) for v in h.ImagePositionPatient]) for h in headers])
    order = np.argsort(positions, kind="stable")
    files = [files[i] for i in order]
    headers = [headers[i] for i in order]
    positions = positions[order]

    spacing = _check_spacing(positions, files, series, allow_uneven_spacing, spacing_tolerance)
    return SortedSeries(files=files, headers=headers, positions=positions, normal=normal, spacing=spacing)


def _check_spacing(
    positions: np.ndarray, files: list[Path], series: str, allow_uneven: bool, tolerance: float
) -> float:
    if len(positions) < 2:
        return 1.0
    gaps = np.diff(positions)
    duplicated = np.flatnonzero(gaps < 1e-4)
    if duplicated.size:
        i = int(duplicated[0])
        raise InvalidItemError(
            f"series {series} has two slices at the same position {positions[i]:.3f} mm: '{files[i]}' and "
            f"'{files[i + 1]}'; remove the duplicate"
        )
    # A missing slice makes one gap a multiple of the others, so the smallest gap is the reference.
    spacing = float(gaps.min())
    uneven = np.flatnonzero(gaps - spacing > tolerance * spacing)
    if uneven.size:
        i = int(uneven[0])
        message = (
            f"series {series} is unevenly spaced: slices at {positions[i]:.3f} mm ('{files[i].name}') and "
            f"{positions[i + 1]:.3f} mm ('{files[i + 1].name}') are {gaps[i]:.3f} mm apart, but the smallest gap "
            f"is {spacing:.3f} mm (gaps: {', '.join(f'{g:.3f}' for g in gaps)}); a slice is probably missing"
        )
        if not allow_uneven:
            raise InvalidItemError(
                message + ". Add the missing slice, or allow uneven spacing to read it anyway"
            )
        logger.warning(
            "%s; reading it with the mean gap, so positions between slices are approximate", message
        )
    return spacing


def _series_name(files: Sequence[Path], headers: Sequence[pydicom.Dataset]) -> str:
    uid = str(headers[0].get("SeriesInstanceUID", "")) if headers else ""
    folder = Path(files[0]).parent if files else "?"
    return f"'{folder}' (SeriesInstanceUID {uid or 'missing'})"


def _series_affine(series: SortedSeries) -> np.ndarray:
    """Return the RAS affine of the X x Y x Z (column, row, slice) array of a sorted series."""
    first = series.headers[0]
    orientation = np.array([float(v) for v in first.ImageOrientationPatient])
    row_spacing, column_spacing = (float(v) for v in first.PixelSpacing)
    origin = np.array([float(v) for v in first.ImagePositionPatient])

    affine = np.eye(4)
    affine[:3, 0] = orientation[:3] * column_spacing  # along a row: increasing column index
    affine[:3, 1] = orientation[3:] * row_spacing  # along a column: increasing row index
    if len(series.headers) > 1:
        last = np.array([float(v) for v in series.headers[-1].ImagePositionPatient])
        affine[:3, 2] = (last - origin) / (len(series.headers) - 1)
    else:
        thickness = float(first.get("SliceThickness", 1.0) or 1.0)
        affine[:3, 2] = series.normal * thickness
    affine[:3, 3] = origin
    return _LPS_TO_RAS @ affine


def _group_by_series(files: Sequence[Path]) -> OrderedDict[str, list[tuple[Path, pydicom.Dataset]]]:
    groups: OrderedDict[str, list[tuple[Path, pydicom.Dataset]]] = OrderedDict()
    for path in files:
        header = _read_dataset(path, pixels=False)
        if str(header.get("SOPClassUID", "")) == SEGMENTATION_STORAGE:
            continue
        groups.setdefault(str(header.get("SeriesInstanceUID", "")), []).append((path, header))
    return groups


def read_dicom_series(
    paths: Sequence[str | Path] | str | Path,
    *,
    allow_uneven_spacing: bool = False,
    spacing_tolerance: float = 0.1,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Read one DICOM series (a folder, or a list of its files) as an X x Y x Z array and its metadata.

    Values are in physical units (float32) when the series has RescaleSlope / RescaleIntercept.
    The metadata contains the RAS `affine`, `spacing`, the sorted `sop_instance_uids` and the
    `series_instance_uid`. Raises `InvalidItemError` for several series, missing pixel data,
    duplicated positions or (unless allowed) uneven spacing.
    """
    paths = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    if len(paths) == 1 and paths[0].is_dir():
        files = list_dicom_files(paths[0])
        if not files:
            raise InvalidItemError(f"DICOM folder '{paths[0]}' contains no DICOM files")
    else:
        files = paths

    groups = _group_by_series(files)
    if not groups:
        raise InvalidItemError(f"no DICOM image files among {len(files)} file(s) starting with '{files[0]}'")
    if len(groups) > 1:
        listing = ", ".join(f"{uid} ({len(members)} files)" for uid, members in groups.items())
        raise InvalidItemError(
            f"'{paths[0]}' contains {len(groups)} series: {listing}. List the files of one series as the image "
            "(the dicom datalist layout does this)"
        )
    members = next(iter(groups.values()))
    series = sort_series(
        [m[0] for m in members],
        [m[1] for m in members],
        allow_uneven_spacing=allow_uneven_spacing,
        spacing_tolerance=spacing_tolerance,
    )

    slices = []
    rescaled = False
    for path in series.files:
        dataset = _read_dataset(path, pixels=True)
        array = _decode(dataset, path)
        if array.ndim != 2:
            raise InvalidItemError(
                f"DICOM file '{path}' has pixel array shape {array.shape}; a volume needs one grey frame per file"
            )
        array, rescaled = _rescale(array, dataset)
        slices.append(array)
    volume = np.stack(slices, axis=-1).transpose(1, 0, 2)  # rows x columns x slices -> X x Y x Z

    first = series.headers[0]
    affine = _series_affine(series)
    meta = {
        MetaKeys.AFFINE: affine,
        MetaKeys.ORIGINAL_AFFINE: affine.copy(),
        MetaKeys.SPATIAL_SHAPE: np.asarray(volume.shape),
        MetaKeys.SPACE: SpaceKeys.RAS,
        "source_dtype": str(volume.dtype),
        "source_format": "DICOM",
        "modality": str(first.get("Modality", "")),
        "series_instance_uid": str(first.get("SeriesInstanceUID", "")),
        "sop_instance_uids": [str(h.SOPInstanceUID) for h in series.headers],
        "spacing": np.asarray(np.sqrt((affine[:3, :3] ** 2).sum(axis=0))),
        "rescaled": rescaled,
    }
    return volume, meta


def read_dicom_seg_on_series(
    seg_path: str | Path,
    sop_instance_uids: Sequence[str],
    affine: np.ndarray,
    spatial_shape: Sequence[int],
    *,
    segment_numbers: Sequence[int] | None = None,
    position_tolerance: float = 0.01,
) -> np.ndarray:
    """Place the frames of a DICOM SEG on the grid of its source series: an X x Y x Z array of segment numbers.

    Each frame goes to the slice whose SOPInstanceUID it references; a frame without a reference
    goes to the slice at its ImagePositionPatient. The frame's position is checked against that
    slice's position either way. Overlapping segments keep the higher segment number; FRACTIONAL
    segments count where they are at least half their maximum value.

    Args:
        seg_path: the SEG file.
        sop_instance_uids: SOPInstanceUIDs of the source series, in the order of its Z axis.
        affine: RAS affine of the source volume.
        spatial_shape: X, Y, Z of the source volume.
        segment_numbers: segments to read (None reads all).
        position_tolerance: largest accepted distance in mm between a frame and its slice.
    """
    seg_path = Path(seg_path)
    dataset = _read_dataset(seg_path, pixels=True)
    if str(dataset.get("SOPClassUID", "")) != SEGMENTATION_STORAGE:
        raise InvalidItemError(f"'{seg_path}' is not a DICOM Segmentation (SEG) file")
    frames = dataset.pixel_array
    frames = frames[None] if frames.ndim == 2 else frames  # frames x rows x columns
    if frames.shape[1:] != (spatial_shape[1], spatial_shape[0]):
        raise InvalidItemError(
            f"DICOM SEG '{seg_path}' frames are {frames.shape[2]}x{frames.shape[1]} but its source series' slices "
            f"are {spatial_shape[0]}x{spatial_shape[1]} (columns x rows); it belongs to another series"
        )
    if str(dataset.get("SegmentationType", "BINARY")) == "FRACTIONAL":
        frames = frames >= (int(dataset.get("MaximumFractionalValue", 255)) + 1) // 2

    slice_of_uid = {uid: k for k, uid in enumerate(sop_instance_uids)}
    lps_affine = _LPS_TO_RAS @ affine  # RAS -> LPS (the flip is its own inverse)
    to_voxel = np.linalg.inv(lps_affine)
    label = np.zeros(tuple(spatial_shape), dtype=np.uint16)
    for index, group in enumerate(dataset.PerFrameFunctionalGroupsSequence):
        segment = int(group.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        if segment_numbers is not None and segment not in segment_numbers:
            continue
        position = np.array([float(v) for v in group.PlanePositionSequence[0].ImagePositionPatient])
        voxel = to_voxel @ np.append(position, 1.0)
        k = slice_of_uid.get(_referenced_uid(group), int(round(voxel[2])))
        if not 0 <= k < spatial_shape[2]:
            raise InvalidItemError(
                f"frame {index + 1} of DICOM SEG '{seg_path}' lies outside its source series "
                f"(position {position.round(3).tolist()} mm); it belongs to another series"
            )
        expected = lps_affine @ np.array([0.0, 0.0, k, 1.0])
        if np.linalg.norm(expected[:3] - position) > position_tolerance:
            raise InvalidItemError(
                f"frame {index + 1} of DICOM SEG '{seg_path}' is at {position.round(3).tolist()} mm but the slice "
                f"it references is at {expected[:3].round(3).tolist()} mm; the SEG does not match this series"
            )
        mask = frames[index].T.astype(bool)  # rows x columns -> X x Y
        label[..., k][mask] = np.maximum(label[..., k][mask], segment)
    return label


def _referenced_uid(group: pydicom.Dataset) -> str | None:
    for derivation in group.get("DerivationImageSequence", []):
        for source in derivation.get("SourceImageSequence", []):
            return str(source.ReferencedSOPInstanceUID)
    return None


class DicomReader(ImageReader):
    """MONAI `ImageReader` for DICOM: a series folder or file list as a volume, a single file as a picture.

    DICOM SEG files are read on the grid of their source series by `LoadVolumeLabeld`, not here.
    """

    def __init__(self, *, allow_uneven_spacing: bool = False, spacing_tolerance: float = 0.1) -> None:
        """
        Args:
            allow_uneven_spacing: read series with a missing slice (with a warning) instead of raising.
            spacing_tolerance: largest accepted excess of a slice gap over the smallest gap, relative to it.
        """
        super().__init__()
        self.allow_uneven_spacing = allow_uneven_spacing
        self.spacing_tolerance = spacing_tolerance

    def verify_suffix(self, filename: Sequence[str | Path] | str | Path) -> bool:
        """Return True for folders and for files with the DICOM preamble or a .dcm suffix."""
        names = [filename] if isinstance(filename, (str, Path)) else list(filename)
        return all(Path(n).is_dir() or str(n).lower().endswith(".dcm") or is_dicom_file(n) for n in names)

    def read(self, data: Sequence[str | Path] | str | Path, **kwargs) -> tuple[np.ndarray, dict]:
        """Read a series (folder or several files) or a single-frame picture (one file)."""
        names = [data] if isinstance(data, (str, Path)) else list(data)
        if len(names) == 1 and Path(names[0]).is_file():
            return read_dicom_picture(names[0])
        return read_dicom_series(
            names, allow_uneven_spacing=self.allow_uneven_spacing, spacing_tolerance=self.spacing_tolerance
        )

    def get_data(self, img: tuple[np.ndarray, dict]) -> tuple[np.ndarray, dict]:
        """Return the array and its metadata with MONAI's channel convention filled in."""
        array, meta = img
        meta = dict(meta)
        if MetaKeys.AFFINE in meta:  # a volume
            meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = "no_channel"
        else:
            meta[MetaKeys.SPATIAL_SHAPE] = np.asarray(array.shape[:2])
            meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = -1 if array.ndim == 3 else "no_channel"
        return array, meta
