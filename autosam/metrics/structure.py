"""S-measure (structure measure) of Fan et al., "Structure-measure: A new way to evaluate foreground
maps", ICCV 2017, batched over frames, with the official SUN-SEG evaluator's edge cases.

S = alpha * object score + (1 - alpha) * region score, floored at 0. An empty ground truth gives
1 - mean(pred), a full one mean(pred). The official code returns NaN where a region term has at
most one pixel: a one-pixel object or background, or a quadrant of one or zero pixels. Its
`max(0, NaN)` turns that NaN into 0, and so does this module.
"""

from __future__ import annotations

import numpy as np
import torch

from autosam.metrics.protocol import EPS

__all__ = ["structure_measure", "object_score", "region_score"]


def _object_term(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """2x / (x^2 + 1 + sigma + eps) over the masked pixels of each frame (sample std, ddof=1)."""
    batch = values.shape[0]
    weights = mask.reshape(batch, -1).to(torch.float64)
    flat = values.reshape(batch, -1)
    count = weights.sum(dim=1)
    mean = (flat * weights).sum(dim=1) / count
    variance = (((flat - mean[:, None]) * weights) ** 2).sum(dim=1) / (count - 1)
    std = torch.sqrt(variance)
    score = 2 * mean / (mean**2 + 1 + std + EPS)
    return torch.where(count > 1, score, torch.full_like(score, float("nan")))


def object_score(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Object-aware score per frame (B) of B x H x W float64 `pred` and bool `gt`."""
    batch = gt.shape[0]
    fg_fraction = gt.reshape(batch, -1).to(torch.float64).mean(dim=1)
    fg_score = _object_term(pred, gt)
    bg_score = _object_term(1 - pred, ~gt)
    return fg_fraction * fg_score + (1 - fg_fraction) * bg_score


def _centroid(gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split point (cx, cy) per frame: the rounded foreground centroid plus one, as in MATLAB."""
    _, height, width = gt.shape
    area = gt.sum(dim=(1, 2))
    col_ids = torch.arange(width, device=gt.device)
    row_ids = torch.arange(height, device=gt.device)
    col_sum = (gt.sum(dim=1) * col_ids).sum(dim=1)
    row_sum = (gt.sum(dim=2) * row_ids).sum(dim=1)
    safe_area = area.clamp(min=1).to(torch.float64)
    # torch.round and numpy.round both round half to even.
    cx = torch.round(col_sum.to(torch.float64) / safe_area)
    cy = torch.round(row_sum.to(torch.float64) / safe_area)
    cx = torch.where(area > 0, cx, torch.round(torch.tensor(width / 2, dtype=torch.float64)))
    cy = torch.where(area > 0, cy, torch.round(torch.tensor(height / 2, dtype=torch.float64)))
    return cx.long() + 1, cy.long() + 1


def _numpy_mean_is_exact(value: float, height: int, width: int, rows: slice, cols: slice) -> bool:
    """Whether numpy's mean of a constant quadrant returns the constant itself.

    The official SSIM term gives 1 for a quadrant with a constant ground truth and a constant
    prediction only if the sample variance is exactly 0, which depends on numpy's pairwise
    summation rounding for that shape. The quadrant is rebuilt with the same shape and strides.
    """
    frame = np.full((height, width), value, dtype=np.float64)
    return bool(np.mean(frame[rows, cols]) == value)


def _quadrant_sums(values: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Sum of B x H x W `values` over each quadrant: B x 2 x 2 (top/bottom x left/right)."""
    return torch.einsum("brh,bhw,bcw->brc", rows, values, cols)


def region_score(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Region-aware score per frame (B): area-weighted SSIM of the four quadrants around the centroid."""
    batch, height, width = gt.shape
    area = height * width
    cx, cy = _centroid(gt)

    # Quadrant indicators: rows B x 2 x H (top, bottom), cols B x 2 x W (left, right).
    top = torch.arange(height, device=gt.device)[None] < cy[:, None]
    left = torch.arange(width, device=gt.device)[None] < cx[:, None]
    rows = torch.stack([top, ~top], dim=1).to(torch.float64)
    cols = torch.stack([left, ~left], dim=1).to(torch.float64)
    quadrant_index = ((~top).long()[:, :, None] * 2 + (~left).long()[:, None, :]).reshape(batch, -1)  # B x HW

    gt_float = gt.to(torch.float64)
    count = _quadrant_sums(torch.ones_like(pred), rows, cols).reshape(batch, 4)
    x = _quadrant_sums(pred, rows, cols).reshape(batch, 4) / count
    y = _quadrant_sums(gt_float, rows, cols).reshape(batch, 4) / count

    # Second pass on the deviations from each quadrant's mean, as the official two-pass formula.
    x_map = torch.nan_to_num(x).gather(1, quadrant_index).view(batch, height, width)
    y_map = torch.nan_to_num(y).gather(1, quadrant_index).view(batch, height, width)
    pred_dev = pred - x_map
    gt_dev = gt_float - y_map
    sigma_x = _quadrant_sums(pred_dev**2, rows, cols).reshape(batch, 4) / (count - 1)
    sigma_y = _quadrant_sums(gt_dev**2, rows, cols).reshape(batch, 4) / (count - 1)
    sigma_xy = _quadrant_sums(pred_dev * gt_dev, rows, cols).reshape(batch, 4) / (count - 1)

    alpha = 4 * x * y * sigma_xy
    beta = (x**2 + y**2) * (sigma_x + sigma_y)
    ssim = torch.where(alpha != 0, alpha / (beta + EPS), torch.where(beta == 0, 1.0, 0.0).to(torch.float64))
    ssim = _match_constant_quadrants(ssim, pred, gt, cx, cy, y, count)
    ssim = torch.where(count > 1, ssim, torch.full_like(ssim, float("nan")))

    # Weights in the official order: w4 = 1 - w1 - w2 - w3.
    cx_f = cx.to(torch.float64)
    cy_f = cy.to(torch.float64)
    w1 = cx_f * cy_f / area
    w2 = cy_f * (width - cx_f) / area
    w3 = (height - cy_f) * cx_f / area
    w4 = 1 - w1 - w2 - w3
    weights = torch.stack([w1, w2, w3, w4], dim=1)
    return (weights * ssim).sum(dim=1)


def _match_constant_quadrants(
    ssim: torch.Tensor,
    pred: torch.Tensor,
    gt: torch.Tensor,
    cx: torch.Tensor,
    cy: torch.Tensor,
    y: torch.Tensor,
    count: torch.Tensor,
) -> torch.Tensor:
    """Re-decide SSIM = 1 or 0 where both ground truth and prediction are constant in a quadrant."""
    batch, height, width = gt.shape
    gt_constant = (y == 0) | (y == 1)
    if not bool(gt_constant.any()):
        return ssim

    # A quadrant's prediction is constant when it equals the value at the quadrant's first pixel.
    row_start = torch.stack([torch.zeros_like(cy), torch.zeros_like(cy), cy, cy], dim=1).clamp(max=height - 1)
    col_start = torch.stack([torch.zeros_like(cx), cx, torch.zeros_like(cx), cx], dim=1).clamp(max=width - 1)
    first_value = pred.reshape(batch, -1).gather(1, row_start * width + col_start)  # B x 4
    top = torch.arange(height, device=gt.device)[None] < cy[:, None]
    left = torch.arange(width, device=gt.device)[None] < cx[:, None]
    quadrant_index = ((~top).long()[:, :, None] * 2 + (~left).long()[:, None, :]).reshape(batch, -1)
    reference = first_value.gather(1, quadrant_index).view(batch, height, width)
    rows = torch.stack([top, ~top], dim=1).to(torch.float64)
    cols = torch.stack([left, ~left], dim=1).to(torch.float64)
    spread = _quadrant_sums((pred - reference).abs(), rows, cols).reshape(batch, 4)

    candidates = gt_constant & (spread == 0) & (count > 1)
    if not bool(candidates.any()):
        return ssim
    ssim = ssim.clone()
    for frame, quadrant in candidates.nonzero().tolist():
        row_cut = int(cy[frame])
        col_cut = int(cx[frame])
        rows_slice = slice(0, row_cut) if quadrant < 2 else slice(row_cut, height)
        cols_slice = slice(0, col_cut) if quadrant % 2 == 0 else slice(col_cut, width)
        value = float(first_value[frame, quadrant])
        exact = _numpy_mean_is_exact(value, height, width, rows_slice, cols_slice)
        ssim[frame, quadrant] = 1.0 if exact else 0.0
    return ssim


def structure_measure(pred: torch.Tensor, gt: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """S-measure per frame (B) of B x H x W float64 `pred` in [0, 1] and bool `gt`.

    Args:
        pred: prepared prediction (see `autosam.metrics.protocol.prepare_frames`).
        gt: ground-truth foreground.
        alpha: weight of the object score against the region score.
    """
    batch = gt.shape[0]
    fg_fraction = gt.reshape(batch, -1).to(torch.float64).mean(dim=1)
    mean_pred = pred.reshape(batch, -1).mean(dim=1)

    score = alpha * object_score(pred, gt) + (1 - alpha) * region_score(pred, gt)
    # max(0, NaN) is 0 in the official Python code.
    score = torch.where(torch.isnan(score), torch.zeros_like(score), score.clamp(min=0))
    score = torch.where(fg_fraction == 0, 1 - mean_pred, score)
    return torch.where(fg_fraction == 1, mean_pred, score)
