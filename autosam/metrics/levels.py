"""The whole suite for 8-bit frames, from one histogram per frame instead of per-pixel arithmetic.

A prediction read from an 8-bit file takes at most 256 values, and the official protocol maps each
grey level to one prepared value. So one `torch.bincount` of (frame, quadrant, ground-truth class,
grey level) contains everything the S-measure, E- and F-measure, MAE and the Dice / IoU / Sen / Spe
curves need. Their sums therefore run over 256 levels instead of every pixel. Only the weighted F-measure
still works on the pixel grid. `uint8_frame_values` returns the same packed rows as
`frame_values(*prepare_uint8_frames(pred, gt))`, up to float64 rounding of sums.
"""

from __future__ import annotations

import torch

from autosam.metrics.curves import ThresholdCounts
from autosam.metrics.protocol import DICE_THRESHOLDS, NUM_THRESHOLDS, minmax_stretch
from autosam.metrics.structure import centroid, quadrant_masks, structure_measure_from_histogram
from autosam.metrics.suite import pack
from autosam.metrics.weighted_fmeasure import weighted_fmeasure_from_error

__all__ = ["uint8_frame_values"]

GREY_LEVELS = 256


def _level_values(pred: torch.Tensor) -> torch.Tensor:
    """Prepared value of each grey level per frame (B x 256), with the per-pixel operations."""
    low, high = torch.aminmax(pred.reshape(pred.shape[0], -1), dim=1)
    grey = torch.arange(GREY_LEVELS, device=pred.device, dtype=torch.float64) / 255
    frames = grey.expand(pred.shape[0], 1, GREY_LEVELS)  # B x 1 x 256
    return minmax_stretch(frames, low.to(torch.float64) / 255, high.to(torch.float64) / 255)[:, 0]


def _counts_by_index(class_histogram: torch.Tensor, first_index: torch.Tensor, size: int) -> ThresholdCounts:
    """Cumulative counts from per-level pixel counts (B x 2 x 256) and each level's first passed threshold."""
    batch = class_histogram.shape[0]
    bins = torch.zeros(batch, 2, NUM_THRESHOLDS + 1, dtype=torch.float64, device=class_histogram.device)
    bins.scatter_add_(2, first_index[:, None, :].expand(batch, 2, GREY_LEVELS), class_histogram)
    cumulative = bins[..., :NUM_THRESHOLDS].cumsum(dim=-1)
    return ThresholdCounts(
        tp=cumulative[:, 1], fp=cumulative[:, 0], gt_fg=class_histogram[:, 1].sum(dim=1), size=size
    )


def _threshold_counts(
    class_histogram: torch.Tensor, values: torch.Tensor, size: int
) -> tuple[ThresholdCounts, ThresholdCounts]:
    """Counts of both threshold families (see `autosam.metrics.curves.threshold_counts`)."""
    # Grey levels outside a frame's own range stretch beyond [0, 1]; they have no pixel, and the
    # clamp only keeps their (empty) bins inside the histogram.
    values = values.clamp(0, 1)
    # The float to integer cast truncates like numpy's astype(np.uint8).
    level_first = (NUM_THRESHOLDS - 1) - (values * 255).to(torch.int64)
    ascending = torch.as_tensor(DICE_THRESHOLDS[::-1].copy(), dtype=torch.float64, device=values.device)
    passed = torch.searchsorted(ascending, values.contiguous(), right=True)
    return (
        _counts_by_index(class_histogram, level_first, size),
        _counts_by_index(class_histogram, NUM_THRESHOLDS - passed, size),
    )


def _adaptive_counts(class_histogram: torch.Tensor, values: torch.Tensor, size: int) -> ThresholdCounts:
    """Counts of `pred >= min(2 * mean(pred), 1)` per frame (T = 1)."""
    level_histogram = class_histogram.sum(dim=1)  # B x 256
    threshold = (2 * (level_histogram * values).sum(dim=1) / size).clamp(max=1.0)
    passed = (values >= threshold[:, None]).to(torch.float64)
    tp = (class_histogram[:, 1] * passed).sum(dim=1)
    predicted = (level_histogram * passed).sum(dim=1)
    return ThresholdCounts(
        tp=tp[:, None], fp=(predicted - tp)[:, None], gt_fg=class_histogram[:, 1].sum(dim=1), size=size
    )


def uint8_frame_values(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Score 8-bit frames with the whole suite under the official protocol: B x F float64.

    Args:
        pred: B x H x W uint8 prediction grey levels (stretched per frame by the protocol).
        gt: B x H x W uint8 ground-truth grey levels (foreground above 128).
    """
    if pred.dtype != torch.uint8 or gt.dtype != torch.uint8:
        raise TypeError(f"expected uint8 frames, got prediction {pred.dtype} and ground truth {gt.dtype}")
    if pred.ndim != 3 or pred.shape != gt.shape:
        raise ValueError(
            f"expected B x H x W frames of one size, got {tuple(pred.shape)} and {tuple(gt.shape)}"
        )
    batch, height, width = pred.shape
    size = height * width
    foreground = gt > 128
    values = _level_values(pred)  # B x 256

    # One histogram over (frame, quadrant, ground-truth class, grey level).
    cx, cy = centroid(foreground)
    top, left = quadrant_masks(cx, cy, height, width)
    quadrant = (~top).long()[:, :, None] * 2 + (~left).long()[:, None, :]  # B x H x W
    frame = torch.arange(batch, device=pred.device).view(-1, 1, 1) * 4
    index = ((frame + quadrant) * 2 + foreground.long()) * GREY_LEVELS + pred.long()
    histogram = torch.bincount(index.reshape(-1), minlength=batch * 4 * 2 * GREY_LEVELS)
    histogram = histogram.view(batch, 4, 2, GREY_LEVELS).to(torch.float64)
    class_histogram = histogram.sum(dim=1)  # B x 2 x 256

    # Error |pred - gt| of each (class, level), and its sums from the histogram.
    error_table = torch.stack([values, 1 - values], dim=1)  # B x 2 x 256
    fg_error_sum = (class_histogram[:, 1] * error_table[:, 1]).sum(dim=1)
    error_sum = (class_histogram * error_table).sum(dim=(1, 2))

    # The weighted F-measure needs the error on the pixel grid: look it up by the same index.
    flat_index = index.reshape(-1)
    lookup = error_table[:, None].expand(batch, 4, 2, GREY_LEVELS).reshape(-1)
    error = lookup.index_select(0, flat_index).view(batch, height, width)
    fg_table = torch.stack([torch.zeros_like(values), error_table[:, 1]], dim=1)  # 0 on the background
    fg_lookup = fg_table[:, None].expand(batch, 4, 2, GREY_LEVELS).reshape(-1)
    fg_error_map = fg_lookup.index_select(0, flat_index).view(batch, height, width)
    wfmeasure = weighted_fmeasure_from_error(
        error,
        fg_error_map,
        foreground,
        fg_count=class_histogram[:, 1].sum(dim=1),
        fg_error_sum=fg_error_sum,
        error_sum=error_sum,
    )

    level_counts, linspace = _threshold_counts(class_histogram, values, size)
    return pack(
        structure_measure_from_histogram(histogram, values, cx, cy, height, width),
        wfmeasure,
        error_sum / size,
        _adaptive_counts(class_histogram, values, size),
        level_counts,
        linspace,
    )
