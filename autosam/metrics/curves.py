"""Threshold curves of the SUN-SEG protocol, from per-frame histograms instead of threshold loops.

Two threshold families exist in the official evaluator:

- E- and F-measure threshold the 8-bit levels `uint8(pred * 255) >= k` for k = 255, 254, ..., 0;
- Dice, IoU, sensitivity and specificity threshold `pred >= t` for the float64 values
  `numpy.linspace(1, 0, 256)`.

For either family, each pixel gets the index of the first (strictest) threshold it passes. The
cumulative sum of a histogram of that index, split by ground-truth foreground and background,
gives the predicted-positive counts at all 256 thresholds at once. Index 0 is the strictest
threshold, as in the official curves.
"""

from __future__ import annotations

import torch

from autosam.metrics.protocol import DICE_THRESHOLDS, EPS, NUM_THRESHOLDS, adaptive_threshold

__all__ = [
    "ThresholdCounts",
    "threshold_counts",
    "uint8_level_counts",
    "linspace_counts",
    "adaptive_counts",
    "binary_counts",
    "fmeasure_from_counts",
    "adaptive_fmeasure",
    "emeasure_from_counts",
    "vps_curves_from_counts",
]


class ThresholdCounts:
    """Predicted-positive pixel counts per threshold, split by the ground truth.

    Attributes:
        tp: B x T float64, predicted foreground inside the ground-truth foreground.
        fp: B x T float64, predicted foreground inside the ground-truth background.
        gt_fg: B float64, ground-truth foreground pixels.
        size: pixels per frame (H * W).
    """

    def __init__(self, tp: torch.Tensor, fp: torch.Tensor, gt_fg: torch.Tensor, size: int) -> None:
        self.tp = tp
        self.fp = fp
        self.gt_fg = gt_fg
        self.size = size


def _histogram_base(gt: torch.Tensor) -> torch.Tensor:
    """Per-pixel offset of its frame and ground-truth class in a B x 2 x (T + 1) histogram."""
    batch = gt.shape[0]
    bins = NUM_THRESHOLDS + 1
    frame_offset = torch.arange(batch, device=gt.device).view(-1, 1, 1) * (2 * bins)
    return frame_offset + gt.long() * bins


def _cumulative_counts(flat_index: torch.Tensor, gt_fg: torch.Tensor, size: int) -> ThresholdCounts:
    """Histogram the first-passed threshold index of every pixel (T = never) and accumulate it."""
    batch = gt_fg.shape[0]
    bins = NUM_THRESHOLDS + 1
    histogram = torch.bincount(flat_index.reshape(-1), minlength=batch * 2 * bins).view(batch, 2, bins)
    cumulative = histogram[..., :NUM_THRESHOLDS].cumsum(dim=-1).to(torch.float64)  # B x 2 x T
    return ThresholdCounts(tp=cumulative[:, 1], fp=cumulative[:, 0], gt_fg=gt_fg, size=size)


def _ascending_thresholds(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the 256 float64 thresholds in ascending order a_k, and a_(k+1) (+inf past the end)."""
    ascending = torch.as_tensor(DICE_THRESHOLDS[::-1].copy(), dtype=torch.float64, device=device)
    following = torch.cat([ascending[1:], torch.full((1,), float("inf"), dtype=torch.float64, device=device)])
    return ascending, following


def threshold_counts(pred: torch.Tensor, gt: torch.Tensor) -> tuple[ThresholdCounts, ThresholdCounts]:
    """Counts of both threshold families: 8-bit levels, then numpy.linspace(1, 0, 256).

    8-bit levels count `uint8(pred * 255) >= k` for k = 255 ... 0 (index i is k = 255 - i). The
    float64 thresholds count `pred >= t` for t = linspace(1, 0, 256). Their ascending values a_k
    equal k / 255 up to rounding, so with m = uint8(pred * 255) every a_k with k < m lies at or
    below the pixel and every a_k with k > m + 1 above it. Comparing with the exact a_m and
    a_(m+1) gives the number of thresholds at or below the pixel, as a sorted search would.

    Args:
        pred: B x H x W float64 in [0, 1].
        gt: B x H x W bool.
    """
    batch = gt.shape[0]
    gt_fg = gt.reshape(batch, -1).sum(dim=1).to(torch.float64)
    size = gt[0].numel()
    # The float to integer cast truncates like numpy's astype(np.uint8).
    levels = (pred * 255).to(torch.int64)
    base = _histogram_base(gt) + (NUM_THRESHOLDS - 1)
    level_counts = _cumulative_counts(base - levels, gt_fg, size)

    ascending, following = _ascending_thresholds(pred.device)
    flat_levels = levels.reshape(-1)
    passed = levels + (ascending.index_select(0, flat_levels).view(levels.shape) <= pred)
    passed += following.index_select(0, flat_levels).view(levels.shape) <= pred
    # First passed index 256 - passed, with the 255 already folded into `base`.
    linspace = _cumulative_counts(base - passed + 1, gt_fg, size)
    return level_counts, linspace


def uint8_level_counts(pred: torch.Tensor, gt: torch.Tensor) -> ThresholdCounts:
    """Count `uint8(pred * 255) >= k` for k = 255 ... 0 (index i is k = 255 - i)."""
    return threshold_counts(pred, gt)[0]


def linspace_counts(pred: torch.Tensor, gt: torch.Tensor) -> ThresholdCounts:
    """Count `pred >= t` for t in numpy.linspace(1, 0, 256), compared in float64."""
    return threshold_counts(pred, gt)[1]


def adaptive_counts(pred: torch.Tensor, gt: torch.Tensor) -> ThresholdCounts:
    """Counts of `pred >= min(2 * mean(pred), 1)` per frame (T = 1), the adaptive binary map."""
    return binary_counts(pred >= adaptive_threshold(pred)[:, None, None], gt)


def binary_counts(binary: torch.Tensor, gt: torch.Tensor) -> ThresholdCounts:
    """Counts of one binary prediction per frame (T = 1).

    Args:
        binary: B x H x W bool prediction.
        gt: B x H x W bool.
    """
    batch = gt.shape[0]
    tp = (binary & gt).reshape(batch, -1).sum(dim=1).to(torch.float64)
    predicted = binary.reshape(batch, -1).sum(dim=1).to(torch.float64)
    gt_fg = gt.reshape(batch, -1).sum(dim=1).to(torch.float64)
    return ThresholdCounts(tp=tp[:, None], fp=(predicted - tp)[:, None], gt_fg=gt_fg, size=gt[0].numel())


def fmeasure_from_counts(counts: ThresholdCounts, beta2: float = 0.3) -> dict[str, torch.Tensor]:
    """Precision, recall and F-measure curves (B x T) with the official zero-division rules."""
    predicted = counts.tp + counts.fp
    precision = counts.tp / torch.where(predicted == 0, torch.ones_like(predicted), predicted)
    recall = counts.tp / counts.gt_fg.clamp(min=1)[:, None]
    numerator = (1 + beta2) * precision * recall
    denominator = torch.where(numerator == 0, torch.ones_like(numerator), beta2 * precision + recall)
    return {"precision": precision, "recall": recall, "fmeasure": numerator / denominator}


def adaptive_fmeasure(counts: ThresholdCounts, beta2: float = 0.3) -> torch.Tensor:
    """F-measure of one binary map per frame (B), zero when no foreground pixel is found."""
    tp = counts.tp[:, 0]
    found = tp > 0
    precision = tp / torch.where(found, counts.tp[:, 0] + counts.fp[:, 0], torch.ones_like(tp))
    recall = tp / torch.where(found, counts.gt_fg, torch.ones_like(tp))
    score = (
        (1 + beta2) * precision * recall / torch.where(found, beta2 * precision + recall, torch.ones_like(tp))
    )
    return torch.where(found, score, torch.zeros_like(tp))


def _enhanced_alignment(pred_value: torch.Tensor, gt_value: torch.Tensor) -> torch.Tensor:
    """Enhanced alignment term ((2ab / (a^2 + b^2 + eps)) + 1)^2 / 4 of two demeaned values."""
    align = 2 * (pred_value * gt_value) / (pred_value**2 + gt_value**2 + EPS)
    return (align + 1) ** 2 / 4


def emeasure_from_counts(counts: ThresholdCounts) -> torch.Tensor:
    """E-measure per frame and threshold (B x T), as the official cumulative-histogram form."""
    size = float(counts.size)
    gt_fg = counts.gt_fg[:, None]
    pred_fg = counts.tp + counts.fp
    pred_bg = size - pred_fg

    fg_fg = counts.tp
    fg_bg = counts.fp
    bg_fg = gt_fg - fg_fg
    bg_bg = pred_bg - bg_fg

    mean_pred = pred_fg / size
    mean_gt = gt_fg / size
    enhanced = (
        _enhanced_alignment(1 - mean_pred, 1 - mean_gt) * fg_fg
        + _enhanced_alignment(1 - mean_pred, 0 - mean_gt) * fg_bg
        + _enhanced_alignment(0 - mean_pred, 1 - mean_gt) * bg_fg
        + _enhanced_alignment(0 - mean_pred, 0 - mean_gt) * bg_bg
    )

    # An empty ground truth scores the predicted background, a full one the predicted foreground.
    enhanced = torch.where(gt_fg == 0, pred_bg, enhanced)
    enhanced = torch.where(gt_fg == size, pred_fg, enhanced)
    return enhanced / (size - 1 + EPS)


def vps_curves_from_counts(counts: ThresholdCounts) -> dict[str, torch.Tensor]:
    """Dice, IoU, sensitivity and specificity curves (B x T) with the VPS evaluator's rules.

    A threshold with no true positive scores 0 in all four, so a correct empty prediction on a
    frame without foreground scores Dice = specificity = 0. A frame without background (and with
    true positives) gets specificity 0 / 0 = NaN, as in the official code.
    """
    tp = counts.tp
    fp = counts.fp
    gt_fg = counts.gt_fg[:, None]
    predicted = tp + fp
    fn = gt_fg - tp
    tn = (counts.size - predicted) - fn

    found = tp > 0
    zero = torch.zeros_like(tp)
    curves = {
        "Sen": tp / gt_fg,
        "Spe": tn / (tn + fp),
        "Dice": 2 * tp / (gt_fg + predicted),
        "IoU": tp / (fn + predicted),
    }
    return {name: torch.where(found, curve, zero) for name, curve in curves.items()}
