"""S-measure (structure measure) of Fan et al., "Structure-measure: A new way to evaluate foreground
maps", ICCV 2017, batched over frames, with the official SUN-SEG evaluator's edge cases.

S = alpha * object score + (1 - alpha) * region score, floored at 0. An empty ground truth gives
1 - mean(pred), a full one mean(pred). The official code returns NaN where a region term has at
most one pixel: a one-pixel object or background, or a quadrant of one or zero pixels. Its
`max(0, NaN)` turns that NaN into 0, and so does this module.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from autosam.metrics.protocol import EPS

__all__ = ["structure_measure", "structure_measure_from_histogram", "centroid", "quadrant_masks"]


# Sums are taken of pred - 0.5, which keeps the one-pass variances accurate and exact for 0 / 1 maps.
_SHIFT = 0.5

# Quadrant order of the B x 2 x 2 statistics: (top, bottom) x (left, right).
ConstantValue = Callable[[int, int], "float | None"]


def _object_term(count: torch.Tensor, mean: torch.Tensor, variance: torch.Tensor) -> torch.Tensor:
    """2x / (x^2 + 1 + sigma + eps) of a region from its size, mean and sample variance (ddof=1).

    The official code's sample std of a one-pixel region is NaN, and so is this term.
    """
    score = 2 * mean / (mean**2 + 1 + torch.sqrt(variance.clamp(min=0)) + EPS)
    return torch.where(count > 1, score, torch.full_like(score, float("nan")))


def centroid(gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split point (cx, cy) per frame of B x H x W `gt` (bool or float): the rounded foreground
    centroid plus one, as in MATLAB."""
    _, height, width = gt.shape
    column_counts = gt.sum(dim=1).to(torch.float64)  # B x W
    row_counts = gt.sum(dim=2).to(torch.float64)  # B x H
    area = column_counts.sum(dim=1)
    col_ids = torch.arange(width, device=gt.device, dtype=torch.float64)
    row_ids = torch.arange(height, device=gt.device, dtype=torch.float64)
    safe_area = area.clamp(min=1)
    # Integer sums are exact in float64; torch.round and numpy.round both round half to even.
    cx = torch.round((column_counts * col_ids).sum(dim=1) / safe_area)
    cy = torch.round((row_counts * row_ids).sum(dim=1) / safe_area)
    cx = torch.where(area > 0, cx, torch.full_like(cx, round(width / 2)))
    cy = torch.where(area > 0, cy, torch.full_like(cy, round(height / 2)))
    return cx.long() + 1, cy.long() + 1


def quadrant_masks(
    cx: torch.Tensor, cy: torch.Tensor, height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the top-row (B x H) and left-column (B x W) masks of the quadrants around (cx, cy)."""
    top = torch.arange(height, device=cx.device)[None] < cy[:, None]
    left = torch.arange(width, device=cx.device)[None] < cx[:, None]
    return top, left


def _numpy_mean_is_exact(value: float, height: int, width: int, rows: slice, cols: slice) -> bool:
    """Whether numpy's mean of a constant quadrant returns the constant itself.

    The official SSIM term gives 1 for a quadrant with a constant ground truth and a constant
    prediction only if the sample variance is exactly 0, which depends on numpy's pairwise
    summation rounding for that shape. The quadrant is rebuilt with the same shape and strides.
    """
    frame = np.full((height, width), value, dtype=np.float64)
    return bool(np.mean(frame[rows, cols]) == value)


def _quadrant_slices(quadrant: int, cx: int, cy: int, height: int, width: int) -> tuple[slice, slice]:
    rows = slice(0, cy) if quadrant < 2 else slice(cy, height)
    cols = slice(0, cx) if quadrant % 2 == 0 else slice(cx, width)
    return rows, cols


def _ssim(
    x: torch.Tensor, y: torch.Tensor, sigma_x: torch.Tensor, sigma_y: torch.Tensor, sigma_xy: torch.Tensor
) -> torch.Tensor:
    """Compute the official SSIM term from the quadrant means, variances and covariance."""
    alpha = 4 * x * y * sigma_xy
    beta = (x**2 + y**2) * (sigma_x + sigma_y)
    degenerate = torch.where(beta == 0, torch.ones_like(beta), torch.zeros_like(beta))
    return torch.where(alpha != 0, alpha / (beta + EPS), degenerate)


def _region_score(
    stats: dict[str, torch.Tensor],
    cx: torch.Tensor,
    cy: torch.Tensor,
    height: int,
    width: int,
    constant_value: ConstantValue,
) -> torch.Tensor:
    """Area-weighted SSIM of the four quadrants (B), from B x 2 x 2 statistics.

    `stats` contains count, x and y (means), sigma_x, sigma_y and sigma_xy (sample moments).
    `constant_value(frame, quadrant)` returns the prediction's value where it is constant in a
    quadrant, else None; it is asked only where the ground truth is constant too.
    """
    batch = cx.shape[0]
    count = stats["count"]
    y = stats["y"]
    # A constant ground truth makes the official deviations, and both terms, exactly 0.
    gt_constant = (y == 0) | (y == 1)
    sigma_y = torch.where(gt_constant, torch.zeros_like(y), stats["sigma_y"])
    sigma_xy = torch.where(gt_constant, torch.zeros_like(y), stats["sigma_xy"])
    ssim = _ssim(stats["x"], y, stats["sigma_x"], sigma_y, sigma_xy).reshape(batch, 4).clone()

    # Where both are constant the official term is 1 only if numpy's variance is exactly 0.
    for frame, quadrant in (gt_constant.reshape(batch, 4) & (count.reshape(batch, 4) > 1)).nonzero().tolist():
        value = constant_value(frame, quadrant)
        if value is None:
            continue
        rows, cols = _quadrant_slices(quadrant, int(cx[frame]), int(cy[frame]), height, width)
        ssim[frame, quadrant] = 1.0 if _numpy_mean_is_exact(value, height, width, rows, cols) else 0.0
    ssim = torch.where(count.reshape(batch, 4) > 1, ssim, torch.full_like(ssim, float("nan")))

    # Weights in the official order: w4 = 1 - w1 - w2 - w3.
    area = height * width
    cx_f = cx.to(torch.float64)
    cy_f = cy.to(torch.float64)
    w1 = cx_f * cy_f / area
    w2 = cy_f * (width - cx_f) / area
    w3 = (height - cy_f) * cx_f / area
    w4 = 1 - w1 - w2 - w3
    return (torch.stack([w1, w2, w3, w4], dim=1) * ssim).sum(dim=1)


def _combine(
    object_score: torch.Tensor,
    region: torch.Tensor,
    fg_count: torch.Tensor,
    mean_pred: torch.Tensor,
    area: int,
    alpha: float,
) -> torch.Tensor:
    score = alpha * object_score + (1 - alpha) * region
    # max(0, NaN) is 0 in the official Python code.
    score = torch.where(torch.isnan(score), torch.zeros_like(score), score.clamp(min=0))
    score = torch.where(fg_count == 0, 1 - mean_pred, score)
    return torch.where(fg_count == area, mean_pred, score)


def structure_measure(
    pred: torch.Tensor, gt: torch.Tensor, alpha: float = 0.5, *, gt_float: torch.Tensor | None = None
) -> torch.Tensor:
    """S-measure per frame (B) of B x H x W float64 `pred` in [0, 1] and bool `gt`.

    Args:
        pred: prepared prediction (see `autosam.metrics.protocol.prepare_frames`).
        gt: ground-truth foreground.
        alpha: weight of the object score against the region score.
        gt_float: `gt` as float64 when the caller has it already.
    """
    batch, height, width = gt.shape
    area = height * width
    if gt_float is None:
        gt_float = gt.to(torch.float64)
    shifted = pred - _SHIFT
    shifted_square = shifted * shifted
    shifted_fg = shifted * gt_float

    # Quadrant sums: (rows B x 2 x H) @ map @ (cols B x 2 x W)^T.
    cx, cy = centroid(gt_float)
    top, left = quadrant_masks(cx, cy, height, width)
    rows = torch.stack([top, ~top], dim=1).to(torch.float64)
    cols = torch.stack([left, ~left], dim=1).to(torch.float64)

    def quadrant_sums(values: torch.Tensor) -> torch.Tensor:
        return torch.bmm(torch.bmm(rows, values), cols.transpose(1, 2))

    count = rows.sum(dim=2)[:, :, None] * cols.sum(dim=2)[:, None, :]
    sum_q = quadrant_sums(shifted)
    sum_q2 = quadrant_sums(shifted_square)
    sum_qg = quadrant_sums(shifted_fg)
    sum_g = quadrant_sums(gt_float)
    stats = {
        "count": count,
        "x": _SHIFT + sum_q / count,
        "y": sum_g / count,
        "sigma_x": (sum_q2 - sum_q * sum_q / count) / (count - 1),
        "sigma_y": (sum_g - sum_g * sum_g / count) / (count - 1),
        "sigma_xy": (sum_qg - sum_q * sum_g / count) / (count - 1),
    }

    def constant_value(frame: int, quadrant: int) -> float | None:
        block_rows, block_cols = _quadrant_slices(quadrant, int(cx[frame]), int(cy[frame]), height, width)
        block = pred[frame, block_rows, block_cols]
        return float(block[0, 0]) if bool(block.amax() == block.amin()) else None

    region = _region_score(stats, cx, cy, height, width, constant_value)

    # Object score: foreground prediction against 1, background prediction (as 1 - pred) against 0.
    fg_count = sum_g.flatten(1).sum(dim=1)
    bg_count = area - fg_count
    fg_sum = sum_qg.flatten(1).sum(dim=1)
    fg_square_sum = (shifted_square * gt_float).flatten(1).sum(dim=1)
    bg_sum = sum_q.flatten(1).sum(dim=1) - fg_sum
    bg_square_sum = sum_q2.flatten(1).sum(dim=1) - fg_square_sum
    fg_term = _object_term(
        fg_count, _SHIFT + fg_sum / fg_count, (fg_square_sum - fg_sum * fg_sum / fg_count) / (fg_count - 1)
    )
    # 1 - pred = 0.5 - (pred - 0.5): the mean of the shifted values changes sign, the variance does not.
    bg_term = _object_term(
        bg_count, _SHIFT - bg_sum / bg_count, (bg_square_sum - bg_sum * bg_sum / bg_count) / (bg_count - 1)
    )
    fg_fraction = fg_count / area
    object_score = fg_fraction * fg_term + (1 - fg_fraction) * bg_term

    mean_pred = _SHIFT + sum_q.flatten(1).sum(dim=1) / area
    return _combine(object_score, region, fg_count, mean_pred, area, alpha)


def structure_measure_from_histogram(
    histogram: torch.Tensor,
    level_values: torch.Tensor,
    cx: torch.Tensor,
    cy: torch.Tensor,
    height: int,
    width: int,
    alpha: float = 0.5,
) -> torch.Tensor:
    """S-measure per frame (B) of frames whose prediction takes at most 256 values.

    Args:
        histogram: B x 4 x 2 x L pixel counts per quadrant (see `quadrant_masks`, row-major),
            ground-truth class (background, foreground) and prediction level.
        level_values: B x L prepared prediction value of each level.
        cx, cy: split point per frame from the ground truth's centroid.
        height, width: frame size.
        alpha: weight of the object score against the region score.
    """
    batch = histogram.shape[0]
    area = height * width
    quadrant_levels = histogram.sum(dim=2)  # B x 4 x L
    count = quadrant_levels.sum(dim=2)  # B x 4
    fg_pixels = histogram[:, :, 1].sum(dim=2)  # B x 4

    # Two-pass moments per quadrant, as the official code computes them, over at most 256 levels.
    x = (quadrant_levels * level_values[:, None]).sum(dim=2) / count
    y = fg_pixels / count
    pred_dev = level_values[:, None] - x[:, :, None]  # B x 4 x L
    gt_dev = torch.stack([-y, 1 - y], dim=2)  # B x 4 x 2
    sigma_x = (quadrant_levels * pred_dev**2).sum(dim=2) / (count - 1)
    sigma_y = (histogram.sum(dim=3) * gt_dev**2).sum(dim=2) / (count - 1)
    sigma_xy = (histogram * pred_dev[:, :, None, :] * gt_dev[:, :, :, None]).sum(dim=(2, 3)) / (count - 1)
    stats = {
        name: value.view(batch, 2, 2)
        for name, value in {
            "count": count,
            "x": x,
            "y": y,
            "sigma_x": sigma_x,
            "sigma_y": sigma_y,
            "sigma_xy": sigma_xy,
        }.items()
    }

    def constant_value(frame: int, quadrant: int) -> float | None:
        present = (quadrant_levels[frame, quadrant] > 0).nonzero()[:, 0]
        return float(level_values[frame, present[0]]) if present.numel() == 1 else None

    region = _region_score(stats, cx, cy, height, width, constant_value)

    # Object score over the foreground (pred) and the background (1 - pred), two-pass as well.
    class_levels = histogram.sum(dim=1)  # B x 2 x L
    class_count = class_levels.sum(dim=2)  # B x 2
    class_values = torch.stack([1 - level_values, level_values], dim=1)  # B x 2 x L
    mean = (class_levels * class_values).sum(dim=2) / class_count
    variance = (class_levels * (class_values - mean[:, :, None]) ** 2).sum(dim=2) / (class_count - 1)
    terms = _object_term(class_count, mean, variance)
    fg_count = class_count[:, 1]
    fg_fraction = fg_count / area
    object_score = fg_fraction * terms[:, 1] + (1 - fg_fraction) * terms[:, 0]

    mean_pred = (class_levels.sum(dim=1) * level_values).sum(dim=1) / area
    return _combine(object_score, region, fg_count, mean_pred, area, alpha)
