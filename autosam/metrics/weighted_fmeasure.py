"""Weighted F-measure of Margolin et al., "How to evaluate foreground maps?", CVPR 2014, batched.

Follows the authors' MATLAB code as the official SUN-SEG evaluator transcribes it: the error at a
background pixel is replaced by the error at its nearest foreground pixel, smoothed with a 7 x 7
Gaussian (sigma 5, zero padding, MATLAB's `fspecial` / `imfilter`), background errors are weighted
by 2 - exp(ln(0.5) / 5 * distance), and beta^2 = 1. An empty ground truth scores 0.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from autosam.metrics.distance import nearest_foreground_offsets, squared_distance_to_foreground
from autosam.metrics.protocol import EPS

__all__ = ["weighted_fmeasure", "weighted_fmeasure_from_error", "matlab_gaussian_kernel"]


def matlab_gaussian_kernel(size: int = 7, sigma: float = 5.0) -> np.ndarray:
    """Return the size x size Gaussian of MATLAB's `fspecial('gaussian', size, sigma)` (float64)."""
    half = (size - 1) / 2
    y, x = np.ogrid[-half : half + 1, -half : half + 1]
    kernel = np.exp(-(x * x + y * y) / (2 * sigma * sigma))
    kernel[kernel < np.finfo(kernel.dtype).eps * kernel.max()] = 0
    total = kernel.sum()
    if total != 0:
        kernel /= total
    return kernel


_DECAY_TABLES: dict[torch.device, torch.Tensor] = {}
_DECAY_TABLE_LIMIT = 1 << 22


def _decay(squared_distance: torch.Tensor) -> torch.Tensor:
    """exp(ln(0.5) / 5 * distance) of each integer squared distance (B x H x W int64).

    The distance is numpy's correctly rounded square root, as the official code uses it. Frames up
    to about 1400 x 1400 pixels look the values up in a cached table; larger ones compute them.
    """
    _, height, width = squared_distance.shape
    needed = (height - 1) ** 2 + (width - 1) ** 2 + 1  # the largest squared distance in the frame, plus 1
    if needed > _DECAY_TABLE_LIMIT:
        distance = np.sqrt(squared_distance.cpu().numpy().astype(np.float64))
        return torch.exp(math.log(0.5) / 5 * torch.from_numpy(distance).to(squared_distance.device))
    table = _DECAY_TABLES.get(squared_distance.device)
    if table is None or table.numel() < needed:
        size = 1 << (needed - 1).bit_length()
        distance = torch.from_numpy(np.sqrt(np.arange(size, dtype=np.float64))).to(squared_distance.device)
        table = torch.exp(math.log(0.5) / 5 * distance)
        _DECAY_TABLES[squared_distance.device] = table
    return table.index_select(0, squared_distance.reshape(-1)).view(squared_distance.shape)


_KERNEL = matlab_gaussian_kernel()
_KERNEL_RADIUS = _KERNEL.shape[0] // 2
# The Gaussian is separable: its centre row, normalised, is the 1-D factor of both passes.
_KERNEL_1D = tuple(float(w) for w in _KERNEL[_KERNEL_RADIUS] / _KERNEL[_KERNEL_RADIUS].sum())


def _dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Dilate B x H x W bool `mask` by a (2 radius + 1) square, as two separable passes of shifted ORs."""
    _, height, width = mask.shape
    padded = F.pad(mask, (radius, radius, radius, radius))
    rows = padded[:, :, radius : radius + width].clone()
    for shift in range(2 * radius + 1):
        rows |= padded[:, :, shift : shift + width]
    dilated = rows[:, radius : radius + height].clone()
    for shift in range(2 * radius + 1):
        dilated |= rows[:, shift : shift + height]
    return dilated


def _smooth(values: torch.Tensor) -> torch.Tensor:
    """Filter B x H x W float64 `values` with the 7 x 7 Gaussian and zero padding (MATLAB's `imfilter`).

    The Gaussian is the outer product of two normalised 1-D Gaussians, so two 1-D passes of
    shifted multiply-adds replace the 2-D filter. They differ from it only by float64 rounding.
    """
    _, height, width = values.shape
    radius = _KERNEL_RADIUS
    padded = F.pad(values, (radius, radius, radius, radius))
    rows = padded[:, :, :width] * _KERNEL_1D[0]
    for shift in range(1, 2 * radius + 1):
        rows.add_(padded[:, :, shift : shift + width], alpha=_KERNEL_1D[shift])
    smoothed = rows[:, :height] * _KERNEL_1D[0]
    for shift in range(1, 2 * radius + 1):
        smoothed.add_(rows[:, shift : shift + height], alpha=_KERNEL_1D[shift])
    return smoothed


def _fill_band(spread: torch.Tensor, error: torch.Tensor, gt: torch.Tensor) -> None:
    """Set, in place, each background pixel of `spread` near the foreground to its nearest foreground error.

    Only background pixels inside the filter's reach of the foreground are filled, because the
    smoothed error is read at foreground pixels only.
    """
    _, height, width = gt.shape
    band = (_dilate(gt, _KERNEL_RADIUS) & ~gt).nonzero()  # N x 3 (frame, row, col)
    if band.shape[0] == 0:
        return
    offsets = nearest_foreground_offsets(gt, band)
    target = (band[:, 0] * height + band[:, 1]) * width + band[:, 2]
    source = target + offsets[:, 0] * width + offsets[:, 1]
    spread.view(-1).index_copy_(0, target, error.reshape(-1).index_select(0, source))


def _foreground_rows_cols(gt: torch.Tensor, margin: int) -> tuple[slice, slice]:
    """Rows and columns spanned by the foreground of any frame, widened by `margin` pixels."""
    _, height, width = gt.shape
    rows = (gt.sum(dim=(0, 2)) > 0).nonzero()[:, 0]
    cols = (gt.sum(dim=(0, 1)) > 0).nonzero()[:, 0]
    if rows.numel() == 0:
        return slice(0, 0), slice(0, 0)
    top = max(int(rows[0]) - margin, 0)
    bottom = min(int(rows[-1]) + margin + 1, height)
    left = max(int(cols[0]) - margin, 0)
    right = min(int(cols[-1]) + margin + 1, width)
    return slice(top, bottom), slice(left, right)


def weighted_fmeasure(
    pred: torch.Tensor,
    gt: torch.Tensor,
    beta2: float = 1.0,
    *,
    error: torch.Tensor | None = None,
    gt_float: torch.Tensor | None = None,
) -> torch.Tensor:
    """Weighted F-measure per frame (B) of B x H x W float64 `pred` in [0, 1] and bool `gt`.

    Args:
        pred: prepared prediction (see `autosam.metrics.protocol.prepare_frames`).
        gt: ground-truth foreground.
        beta2: weight of precision against recall (beta^2).
        error: |pred - gt| when the caller has it already (B x H x W float64).
        gt_float: `gt` as float64 when the caller has it already.
    """
    if gt_float is None:
        gt_float = gt.to(torch.float64)
    if error is None:
        error = (pred - gt_float).abs()
    fg_error_map = error * gt_float
    return weighted_fmeasure_from_error(
        error,
        fg_error_map,
        gt,
        fg_count=gt_float.flatten(1).sum(dim=1),
        fg_error_sum=fg_error_map.flatten(1).sum(dim=1),
        error_sum=error.flatten(1).sum(dim=1),
        beta2=beta2,
    )


def weighted_fmeasure_from_error(
    error: torch.Tensor,
    fg_error_map: torch.Tensor,
    gt: torch.Tensor,
    *,
    fg_count: torch.Tensor,
    fg_error_sum: torch.Tensor,
    error_sum: torch.Tensor,
    beta2: float = 1.0,
) -> torch.Tensor:
    """Weighted F-measure per frame (B) from the error map and its sums.

    Args:
        error: B x H x W float64 |pred - gt|.
        fg_error_map: the error on the foreground, 0 on the background; filled in place.
        gt: B x H x W bool ground truth.
        fg_count: B foreground pixels.
        fg_error_sum: B sum of the error over the foreground.
        error_sum: B sum of the error over the frame.
        beta2: weight of precision against recall (beta^2).
    """
    # Pixel dependency: smooth the nearest-foreground error, keep the smaller error on the
    # foreground. Only the foreground reads the smoothed map, so it is computed around it.
    _fill_band(fg_error_map, error, gt)
    rows, cols = _foreground_rows_cols(gt, _KERNEL_RADIUS)
    smoothed = _smooth(fg_error_map[:, rows, cols])
    min_error = torch.where(gt[:, rows, cols], torch.minimum(smoothed, error[:, rows, cols]), 0.0)
    fg_error = min_error.flatten(1).sum(dim=1)

    # Pixel importance: background errors weigh 2 - exp(ln(0.5) / 5 * distance). Foreground pixels
    # have distance 0 and exp(0) = 1, so background sums are full sums minus the foreground's.
    decay = _decay(squared_distance_to_foreground(gt).to(error.device))
    bg_plain_error = error_sum - fg_error_sum
    bg_decayed_error = (error * decay).flatten(1).sum(dim=1) - fg_error_sum
    bg_error = (2 * bg_plain_error - bg_decayed_error).clamp(min=0)

    true_positive = fg_count - fg_error
    recall = 1 - fg_error / fg_count
    precision = true_positive / (true_positive + bg_error + EPS)
    score = (1 + beta2) * recall * precision / (recall + beta2 * precision + EPS)
    return torch.where(fg_count > 0, score, torch.zeros_like(score))
