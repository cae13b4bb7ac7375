"""MONAI image reader for 2D pictures: PNG, JPEG and BMP through Pillow, TIFF through tifffile.

MONAI's `PILReader` cannot open the CVC-ClinicDB frames (three samples per pixel declared as
MinIsBlack, which Pillow rejects), and OpenCV opens them as grey without an error. tifffile reads
them as RGB. This reader also resolves palettes to their colours, so that a palette mask with
index 1 painted white reads as white and not as the value 1.

Arrays come out row-major, H x W or H x W x C (no axis swap as in `PILReader`), so that after
`EnsureChannelFirstd` an image is C x H x W. The stored dtype goes into the metadata as
`source_dtype`, because the image and mask transforms scale by the stored bit depth.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from monai.data import ImageReader
from monai.utils import MetaKeys
from PIL import Image, UnidentifiedImageError

from autosam.data.errors import InvalidItemError

__all__ = ["Image2DReader", "IMAGE_2D_SUFFIXES", "read_image_2d", "image_2d_shape"]

logger = logging.getLogger(__name__)

IMAGE_2D_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp")
_TIFF_SUFFIXES = (".tif", ".tiff")

# Pillow modes that hold colour in another model, or one bit per pixel, and read best as RGB / L.
_CONVERT_MODES = {"1": "L", "CMYK": "RGB", "YCbCr": "RGB", "LAB": "RGB", "HSV": "RGB", "PA": "RGBA"}


def _read_tiff(path: Path) -> tuple[np.ndarray, str]:
    with tifffile.TiffFile(path) as tif:
        if not tif.pages:
            raise InvalidItemError(f"TIFF file '{path}' contains no image pages; re-export it")
        page = tif.pages[0]
        array = page.asarray()
        photometric = page.photometric
        if page.planarconfig == tifffile.PLANARCONFIG.SEPARATE and array.ndim == 3:
            array = np.moveaxis(array, 0, -1)  # S x H x W -> H x W x S
        if photometric == tifffile.PHOTOMETRIC.PALETTE and page.colormap is not None:
            colormap = np.asarray(page.colormap)  # 3 x 2**bits, uint16
            array = (colormap[:, array] // 257).astype(np.uint8).transpose(1, 2, 0)  # H x W x 3
        elif photometric == tifffile.PHOTOMETRIC.MINISWHITE and array.ndim == 2:
            array = np.iinfo(array.dtype).max - array if array.dtype.kind in "ui" else array.max() - array
        elif photometric == tifffile.PHOTOMETRIC.MINISBLACK and array.ndim == 3 and array.shape[-1] in (3, 4):
            # CVC-ClinicDB frames declare MinIsBlack although they hold RGB samples.
            logger.debug(
                "TIFF '%s' declares MinIsBlack with %d samples; reading them as RGB", path, array.shape[-1]
            )
    return array, "TIFF"


def _read_pillow(path: Path) -> tuple[np.ndarray, str, str]:
    with Image.open(path) as image:
        image.load()  # decode now, so a truncated file fails here and not later
        image_format = image.format or path.suffix.lstrip(".").upper()
        mode = image.mode
        if mode == "P":
            image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        elif mode in _CONVERT_MODES:
            image = image.convert(_CONVERT_MODES[mode])
        array = np.asarray(image)
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("="))
    return array, image_format, mode


def read_image_2d(path: str | Path) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a 2D picture as H x W or H x W x C with its stored dtype, and a small metadata dict.

    Raises `InvalidItemError` naming the file when it is missing, empty, truncated or not an image.
    """
    path = Path(path)
    if not path.is_file():
        raise InvalidItemError(f"image file '{path}' not found; check the path in the datalist")
    if path.stat().st_size == 0:
        raise InvalidItemError(f"image file '{path}' is empty (0 bytes); replace it or remove the item")

    mode = ""
    try:
        if path.suffix.lower() in _TIFF_SUFFIXES:
            array, image_format = _read_tiff(path)
        else:
            array, image_format, mode = _read_pillow(path)
    except InvalidItemError:
        raise
    except (OSError, ValueError, UnidentifiedImageError, tifffile.TiffFileError) as err:
        raise InvalidItemError(
            f"cannot read image file '{path}': {err}. The file is corrupt, truncated or not a "
            f"{path.suffix or 'known'} image; re-export it or remove the item"
        ) from err

    if array.ndim not in (2, 3) or min(array.shape[:2]) == 0:
        raise InvalidItemError(
            f"image file '{path}' has array shape {array.shape}; expected H x W or H x W x C with H, W > 0"
        )
    meta = {"source_dtype": str(array.dtype), "source_format": image_format, "source_mode": mode}
    return array, meta


def image_2d_shape(path: str | Path) -> tuple[int, int]:
    """Return (H, W) of a 2D picture from its header, without decoding the pixels."""
    path = Path(path)
    try:
        if path.suffix.lower() in _TIFF_SUFFIXES:
            with tifffile.TiffFile(path) as tif:
                page = tif.pages[0]
                return int(page.imagelength), int(page.imagewidth)
        with Image.open(path) as image:
            return image.height, image.width
    except (OSError, ValueError, IndexError, UnidentifiedImageError, tifffile.TiffFileError) as err:
        raise InvalidItemError(
            f"cannot read the header of image file '{path}': {err}; re-export the file or remove the item"
        ) from err


class Image2DReader(ImageReader):
    """MONAI `ImageReader` for 2D pictures that keeps rows first and reads CVC-ClinicDB TIFFs in colour.

    Use it as `LoadImaged(keys, reader=Image2DReader())`. Several files given together are stacked
    as channels, as MONAI's other readers do.
    """

    def verify_suffix(self, filename: Sequence[str | Path] | str | Path) -> bool:
        """Return True when every file name ends with a 2D picture suffix."""
        names = [filename] if isinstance(filename, (str, Path)) else list(filename)
        return all(str(name).lower().endswith(IMAGE_2D_SUFFIXES) for name in names)

    def read(self, data: Sequence[str | Path] | str | Path, **kwargs) -> list[tuple[np.ndarray, dict]]:
        """Read each file into an (array, metadata) pair."""
        names = [data] if isinstance(data, (str, Path)) else list(data)
        return [read_image_2d(name) for name in names]

    def get_data(self, img: list[tuple[np.ndarray, dict]]) -> tuple[np.ndarray, dict]:
        """Return the array (H x W [x C], or channels stacked first for several files) and its metadata."""
        arrays = [array for array, _ in img]
        meta = dict(img[0][1])
        meta[MetaKeys.SPATIAL_SHAPE] = np.asarray(arrays[0].shape[:2])
        if len(arrays) == 1:
            array = arrays[0]
            meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = -1 if array.ndim == 3 else "no_channel"
            return array, meta
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1 or arrays[0].ndim != 2:
            raise InvalidItemError(
                f"files stacked as channels must be single-channel pictures of one size, got shapes {sorted(shapes)}"
            )
        meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = 0
        return np.stack(arrays, axis=0), meta
