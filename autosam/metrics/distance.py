"""Exact Euclidean distance to the ground-truth foreground, and the nearest foreground pixel.

The weighted F-measure needs, for each background pixel, the distance to the nearest foreground
pixel (its importance weight) and the error at that pixel (its dependency term). Both must match
`scipy.ndimage.distance_transform_edt`, which the official evaluator calls, to the last digit:

- distances are exact square roots of integer squared distances, from OpenCV's exact
  (`DIST_MASK_PRECISE`) transform when its float32 output is provably exact, from SciPy
  otherwise, and from a batched brute-force search on CUDA tensors;
- among equidistant foreground pixels SciPy picks the one with the smallest column, then the
  smallest row. `nearest_foreground_offsets` follows that rule inside a 9 x 9 window, which is
  enough for every background pixel that a 7 x 7 filter around a foreground pixel reaches.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.utils import optional_import
from scipy.ndimage import distance_transform_edt

cv2, HAS_CV2 = optional_import("cv2")

__all__ = [
    "distance_to_foreground",
    "squared_distance_to_foreground",
    "nearest_foreground_offsets",
    "WINDOW_OFFSETS",
]

# float32 square roots of integer squares below 2**22 round back to the exact integer.
_CV2_EXACT_LIMIT = 2**22

_WINDOW_RADIUS = 4


def _sorted_window_offsets(radius: int = _WINDOW_RADIUS) -> torch.Tensor:
    """(dy, dx) offsets with dy^2 + dx^2 <= 18, ordered by squared length, then dx, then dy."""
    offsets = [
        (dy, dx)
        for dy in range(-radius, radius + 1)
        for dx in range(-radius, radius + 1)
        if dy * dy + dx * dx <= 18
    ]
    offsets.sort(key=lambda offset: (offset[0] ** 2 + offset[1] ** 2, offset[1], offset[0]))
    return torch.tensor(offsets, dtype=torch.long)


# A background pixel within Chebyshev distance 3 of the foreground has its nearest foreground
# pixel at a squared distance of at most 18 (3^2 + 3^2).
WINDOW_OFFSETS = _sorted_window_offsets()


def _squared_distance_cpu(gt: np.ndarray) -> np.ndarray:
    """Squared distance (int64) of each pixel of 2-D bool `gt` to its nearest foreground pixel."""
    height, width = gt.shape
    max_square = (height - 1) ** 2 + (width - 1) ** 2
    if HAS_CV2 and max_square < _CV2_EXACT_LIMIT:
        approx = cv2.distanceTransform((~gt).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        squared = approx.astype(np.float64)
    else:
        squared = distance_transform_edt(~gt)
    squared *= squared
    return np.rint(squared, out=squared).astype(np.int64)


def _squared_distance_brute_force(gt: torch.Tensor, max_elements: int = 2**26) -> torch.Tensor:
    """Exact squared distances (int64) for B x H x W bool `gt` on any device: a column pass, then a
    row search."""
    batch, height, width = gt.shape
    far = float(4 * (height + width) ** 2)

    # Column pass: squared distance to the nearest foreground pixel in the same column.
    rows = torch.arange(height, device=gt.device).view(1, -1, 1).expand(batch, height, width)
    above = torch.where(gt, rows, torch.full_like(rows, -2 * (height + width))).cummax(dim=1).values
    below_flipped = torch.where(gt, rows, torch.full_like(rows, 3 * (height + width))).flip(1)
    below = below_flipped.cummin(dim=1).values.flip(1)
    vertical = torch.minimum(rows - above, below - rows).to(torch.float64) ** 2  # B x H x W
    vertical = vertical.clamp(max=far)

    # Row pass: min over columns k of (j - k)^2 + vertical(k), a few rows at a time.
    columns = torch.arange(width, device=gt.device, dtype=torch.float64)
    horizontal = (columns[:, None] - columns[None, :]) ** 2  # W(j) x W(k)
    squared = torch.empty((batch, height, width), dtype=torch.float64, device=gt.device)
    rows_per_chunk = max(1, max_elements // max(1, batch * width * width))
    for start in range(0, height, rows_per_chunk):
        block = vertical[:, start : start + rows_per_chunk]  # B x h x W(k)
        candidates = block[:, :, None, :] + horizontal[None, None]  # B x h x W(j) x W(k)
        squared[:, start : start + rows_per_chunk] = candidates.amin(dim=-1)
    return squared.to(torch.int64)


def squared_distance_to_foreground(gt: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distance (int64, B x H x W) from each pixel to the nearest foreground pixel.

    Frames without foreground have no distance and get 0 everywhere.

    Args:
        gt: B x H x W bool ground truth.
    """
    if gt.device.type != "cpu":
        squared = _squared_distance_brute_force(gt)
        empty = ~gt.reshape(gt.shape[0], -1).any(dim=1)
        return torch.where(empty.view(-1, 1, 1), torch.zeros_like(squared), squared)
    frames = [
        _squared_distance_cpu(frame) if frame.any() else np.zeros(frame.shape, np.int64)
        for frame in gt.numpy()
    ]
    return torch.from_numpy(np.stack(frames))


def distance_to_foreground(gt: torch.Tensor) -> torch.Tensor:
    """Euclidean distance (float64, B x H x W) from each pixel to the nearest foreground pixel, the
    correctly rounded square root of the squared distance as `scipy.ndimage.distance_transform_edt`
    returns it (0 in frames without foreground)."""
    squared = squared_distance_to_foreground(gt)
    return torch.from_numpy(np.sqrt(squared.cpu().numpy().astype(np.float64))).to(gt.device)


def nearest_foreground_offsets(gt: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    """(dy, dx) from each listed pixel to its nearest foreground pixel, with SciPy's tie rule.

    Args:
        gt: B x H x W bool ground truth.
        pixels: N x 3 long (frame, row, col) of background pixels whose nearest foreground pixel
            lies within a squared distance of 18.

    Returns:
        N x 2 long offsets.
    """
    offsets = WINDOW_OFFSETS.to(gt.device)  # K x 2
    padded = torch.nn.functional.pad(gt, (_WINDOW_RADIUS,) * 4)
    _, padded_height, padded_width = padded.shape
    # Flat index in the padded frames: one per pixel plus one per window offset.
    pixel_index = (pixels[:, 0] * padded_height + pixels[:, 1] + _WINDOW_RADIUS) * padded_width + pixels[:, 2]
    offset_index = offsets[:, 0] * padded_width + offsets[:, 1] + _WINDOW_RADIUS
    flat_index = pixel_index[:, None] + offset_index[None, :]  # N x K
    is_foreground = padded.reshape(-1).index_select(0, flat_index.reshape(-1)).view(flat_index.shape)
    # max returns the first maximal index, the first foreground pixel in tie-rule order.
    first = is_foreground.to(torch.uint8).max(dim=1).indices
    return offsets[first]
