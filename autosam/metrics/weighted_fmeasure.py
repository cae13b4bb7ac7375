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

from autosam.metrics.distance import distance_to_foreground, nearest_foreground_offsets
from autosam.metrics.protocol import EPS

__all__ = ["weighted_fmeasure", "matlab_gaussian_kernel"]


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
    shifted multiply-adds replace the 2-D filter; they differ from it only by float64 rounding.
    """
    _, height, width = values.shape
    radius = _KERNEL_RADIUS
    padded = F.pad(values, (radius, radius, radius, radius))
    rows = torch.zeros_like(padded[:, :, :width])
    for shift, weight in enumerate(_KERNEL_1D):
        rows += weight * padded[:, :, shift : shift + width]
    smoothed = torch.zeros_like(values)
    for shift, weight in enumerate(_KERNEL_1D):
        smoothed += weight * rows[:, shift : shift + height]
    return smoothed


def _dependent_error(error: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Error map with each background pixel near the foreground set to its nearest foreground error.

    Only background pixels inside the filter's reach of the foreground are filled; the smoothed
    error is read at foreground pixels only, so the rest never matters and stays 0.
    """
    _, height, width = gt.shape
    band = (_dilate(gt, _KERNEL_RADIUS) & ~gt).nonzero()  # N x 3 (frame, row, col)
    spread = torch.where(gt, error, torch.zeros_like(error))
    if band.shape[0] == 0:
        return spread
    offsets = nearest_foreground_offsets(gt, band)
    target = (band[:, 0] * height + band[:, 1]) * width + band[:, 2]
    source = target + offsets[:, 0] * width + offsets[:, 1]
    spread.view(-1)[target] = torch.take(error, source)
    return spread


def weighted_fmeasure(pred: torch.Tensor, gt: torch.Tensor, beta2: float = 1.0) -> torch.Tensor:
    """Weighted F-measure per frame (B) of B x H x W float64 `pred` in [0, 1] and bool `gt`.

    Args:
        pred: prepared prediction (see `autosam.metrics.protocol.prepare_frames`).
        gt: ground-truth foreground.
        beta2: weight of precision against recall (beta^2).
    """
    batch = gt.shape[0]
    gt_float = gt.to(torch.float64)
    error = (pred - gt_float).abs()

    # Pixel dependency: smooth the nearest-foreground error, keep the smaller error on the foreground.
    smoothed = _smooth(_dependent_error(error, gt))
    min_error = torch.where(gt & (smoothed < error), smoothed, error)

    # Pixel importance: background errors grow towards 2 with the distance to the foreground.
    distance = distance_to_foreground(gt).to(pred.device)
    importance = torch.where(gt, torch.ones_like(error), 2 - torch.exp(math.log(0.5) / 5 * distance))
    weighted = (min_error * importance).reshape(batch, -1)

    fg = gt.reshape(batch, -1)
    fg_count = fg.sum(dim=1).to(torch.float64)
    fg_error = torch.where(fg, weighted, torch.zeros_like(weighted)).sum(dim=1)
    bg_error = torch.where(fg, torch.zeros_like(weighted), weighted).sum(dim=1)
    true_positive = fg_count - fg_error
    recall = 1 - fg_error / fg_count
    precision = true_positive / (true_positive + bg_error + EPS)
    score = (1 + beta2) * recall * precision / (recall + beta2 * precision + EPS)
    return torch.where(fg_count > 0, score, torch.zeros_like(score))
