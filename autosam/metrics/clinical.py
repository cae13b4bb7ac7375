"""Binary metrics for clinical reporting: MONAI's Dice, IoU and 95 % Hausdorff distance at 0.5.

These score the probability map as given, thresholded at `probability > 0.5` (for a sigmoid this is
`logits > 0`). The protocol's min-max stretch is never applied, because it turns a map that is
negative everywhere into a half-positive one. Frames without ground-truth foreground give NaN
(MONAI's `ignore_empty=True`), so they drop out of the mean instead of counting as 0 or 1.
"""

from __future__ import annotations

import warnings

import torch
from monai.metrics import compute_dice, compute_hausdorff_distance, compute_iou

__all__ = ["CLINICAL_FIELDS", "binarize", "clinical_values"]

CLINICAL_FIELDS: tuple[str, ...] = ("binaryDice", "binaryIoU", "HD95")


def binarize(probabilities: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Return the foreground mask `probabilities > threshold` (bool, same shape)."""
    return probabilities > threshold


def clinical_values(probabilities: torch.Tensor, gt: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Dice, IoU and 95 % Hausdorff distance (pixels) per frame: B x 3 float64.

    Args:
        probabilities: B x H x W probabilities (not min-max stretched).
        gt: B x H x W bool ground truth.
        threshold: probabilities above it are foreground.

    Returns:
        Columns in `CLINICAL_FIELDS` order. Dice and IoU are NaN without ground-truth foreground;
        HD95 is NaN unless both the prediction and the ground truth have foreground.
    """
    y_pred = binarize(probabilities, threshold)[:, None].to(torch.float64)  # B x 1 x H x W
    y = gt[:, None].to(torch.float64)
    dice = compute_dice(y_pred, y, include_background=True, ignore_empty=True)[:, 0]
    iou = compute_iou(y_pred, y, include_background=True, ignore_empty=True)[:, 0]

    both = (y_pred.flatten(1).amax(dim=1) > 0) & (y.flatten(1).amax(dim=1) > 0)
    hd95 = torch.full_like(dice, float("nan"))
    if bool(both.any()):
        with warnings.catch_warnings():
            # MONAI 1.5+ warns about an argument that its own call passes; empty masks are excluded above.
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", FutureWarning)
            distances = compute_hausdorff_distance(
                y_pred[both], y[both], include_background=True, percentile=95
            )
        hd95[both] = distances[:, 0].to(hd95.dtype).to(hd95.device)
    return torch.stack([dice, iou, hd95], dim=1).to(torch.float64)
