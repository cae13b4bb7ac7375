"""Input preparation of the SUN-SEG (VPS) evaluation protocol, shared by every metric.

The official evaluator (GewelsJI/VPS `eval/metrics.py`, the same code as PySODMetrics) reads each
prediction as 8-bit grey levels and divides by 255. It then stretches every frame to [0, 1] by its
own minimum and maximum unless the frame is constant. The ground truth is `gt > 128`. The metrics here
take probabilities instead of 8-bit files, so `prepare_frames` applies the same steps to tensors:
a prediction read as `uint8 / 255` gives bit-identical float64 values to the official code.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.data import MetaTensor

__all__ = [
    "EPS",
    "DICE_THRESHOLDS",
    "NUM_THRESHOLDS",
    "minmax_stretch",
    "prepare_frames",
    "prepare_uint8_frames",
    "adaptive_threshold",
]

# MATLAB's eps, as the official code uses it (numpy.spacing(1) = 2 ** -52).
EPS: float = float(np.spacing(1))

NUM_THRESHOLDS = 256

# The Dice / IoU / sensitivity / specificity curves compare `pred >= t` for these float64 values,
# from 1 down to 0. torch.linspace rounds some of them differently, so they come from numpy.
DICE_THRESHOLDS: np.ndarray = np.linspace(1, 0, NUM_THRESHOLDS)


def _as_frames(tensor: torch.Tensor, name: str) -> torch.Tensor:
    """Return a B x H x W view of a B x 1 x H x W, B x H x W or H x W tensor, without MONAI metadata."""
    if isinstance(tensor, MetaTensor):
        # Metadata tracking slows every later operation and means nothing for a score.
        tensor = tensor.as_tensor()
    if tensor.ndim == 4:
        if tensor.shape[1] != 1:
            raise ValueError(f"{name} must have one channel (B x 1 x H x W), got shape {tuple(tensor.shape)}")
        return tensor[:, 0]
    if tensor.ndim == 3:
        return tensor
    if tensor.ndim == 2:
        return tensor[None]
    raise ValueError(f"{name} must be B x 1 x H x W, B x H x W or H x W, got shape {tuple(tensor.shape)}")


def minmax_stretch(
    pred: torch.Tensor, low: torch.Tensor | None = None, high: torch.Tensor | None = None
) -> torch.Tensor:
    """Stretch each frame of B x H x W float64 `pred` to [0, 1], leaving constant frames unchanged.

    The operations are the official `(pred - min) / (max - min)` in float64, so the results are
    bit-identical to numpy's. A constant frame is divided by 1 after subtracting 0, which returns
    it unchanged. `low` and `high` (B) are the per-frame minimum and maximum if already known.
    """
    if low is None or high is None:
        low, high = torch.aminmax(pred.reshape(pred.shape[0], -1), dim=1)
    constant = high == low
    offset = torch.where(constant, torch.zeros_like(low), low).view(-1, 1, 1)
    scale = torch.where(constant, torch.ones_like(high), high - low).view(-1, 1, 1)
    return (pred - offset) / scale


def prepare_frames(
    y_pred: torch.Tensor, y: torch.Tensor, *, minmax: bool = True, label_threshold: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor]:
    """Convert probabilities and labels to the protocol's float64 prediction and boolean ground truth.

    Args:
        y_pred: probabilities in [0, 1], B x 1 x H x W (or B x H x W, H x W).
        y: ground truth of the same size; `y > label_threshold` is the foreground.
        minmax: stretch each prediction frame to [0, 1] as the official evaluator does.
        label_threshold: ground-truth values above it are foreground.

    Returns:
        (pred, gt): B x H x W float64 in [0, 1] and B x H x W bool.
    """
    pred = _as_frames(y_pred, "y_pred").to(torch.float64)
    gt = _as_frames(y, "y") > label_threshold
    if pred.shape != gt.shape:
        raise ValueError(
            f"y_pred is {tuple(pred.shape)} but y is {tuple(gt.shape)}; resize the prediction to the "
            "ground truth's size (bilinear) before scoring"
        )
    if pred.numel() == 0:
        raise ValueError("y_pred is empty; there is no pixel to score")
    # min and max propagate NaN, so one pass checks the range and finds the stretch bounds.
    low, high = torch.aminmax(pred.reshape(pred.shape[0], -1), dim=1)
    if bool(torch.isnan(low).any() | torch.isnan(high).any() | (low < 0).any() | (high > 1).any()):
        raise ValueError(
            "y_pred must hold probabilities in [0, 1] without NaN; apply a sigmoid to logits first "
            f"(got min {low.min().item():.4g}, max {high.max().item():.4g})"
        )
    if minmax:
        pred = minmax_stretch(pred, low, high)
    return pred, gt


def prepare_uint8_frames(pred: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply the official protocol to 8-bit grey frames: `pred / 255` stretched, `gt > 128`.

    Args:
        pred: B x H x W uint8 prediction grey levels.
        gt: B x H x W uint8 ground-truth grey levels.
    """
    if pred.dtype != torch.uint8 or gt.dtype != torch.uint8:
        raise TypeError(f"expected uint8 frames, got prediction {pred.dtype} and ground truth {gt.dtype}")
    if pred.shape != gt.shape:
        raise ValueError(f"prediction is {tuple(pred.shape)} but ground truth is {tuple(gt.shape)}")
    pred = _as_frames(pred, "pred")
    low, high = torch.aminmax(pred.reshape(pred.shape[0], -1), dim=1)
    probabilities = pred.to(torch.float64) / 255
    return minmax_stretch(
        probabilities, low.to(torch.float64) / 255, high.to(torch.float64) / 255
    ), _as_frames(gt, "gt") > 128


def adaptive_threshold(pred: torch.Tensor) -> torch.Tensor:
    """Return the per-frame adaptive threshold min(2 * mean(pred), 1) of B x H x W `pred` (shape B)."""
    mean = pred.reshape(pred.shape[0], -1).mean(dim=1)
    return torch.clamp(2 * mean, max=1.0)
