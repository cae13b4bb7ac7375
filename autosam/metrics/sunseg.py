"""MONAI cumulative metrics of the SUN-SEG (VPS) suite, for evaluator engines and plain Python.

Every metric takes `y_pred` = probabilities in [0, 1] (B x 1 x H x W, e.g. the sigmoid of the
logits) and `y` = binary labels of the same size, prepares them as the official evaluator prepares
8-bit files (see `autosam.metrics.protocol`), buffers per-frame values in `_compute_tensor` and
averages them over frames in `aggregate`. Score predictions at the ground truth's size; the
official evaluator resizes predictions to it (bilinear) before scoring.

`SunSegMetrics` computes the whole suite in one pass and is the one to attach to an engine. The
single metrics exist for code that needs only one of them.
"""

from __future__ import annotations

from typing import Any

import torch
from monai.metrics import CumulativeIterationMetric

from autosam.metrics.clinical import CLINICAL_FIELDS, clinical_values
from autosam.metrics.curves import (
    adaptive_counts,
    adaptive_fmeasure,
    emeasure_from_counts,
    fmeasure_from_counts,
    linspace_counts,
    uint8_level_counts,
    vps_curves_from_counts,
)
from autosam.metrics.protocol import prepare_frames
from autosam.metrics.structure import structure_measure
from autosam.metrics.suite import frame_values, summarize, unpack
from autosam.metrics.weighted_fmeasure import weighted_fmeasure

__all__ = [
    "SunSegMetrics",
    "SMeasure",
    "EMeasure",
    "FMeasure",
    "WeightedFMeasure",
    "MeanAbsoluteError",
    "ThresholdCurves",
]


class _ProtocolMetric(CumulativeIterationMetric):
    """Shared input handling: probabilities and labels to the protocol's float64 / bool frames."""

    def __init__(self, *, minmax: bool = True, label_threshold: float = 0.5) -> None:
        """
        Args:
            minmax: stretch each prediction frame to [0, 1] by its minimum and maximum, as the
                official evaluator does to the 8-bit files it reads; False scores the probabilities
                as given.
            label_threshold: label values above it are foreground.
        """
        super().__init__()
        self.minmax = minmax
        self.label_threshold = label_threshold

    def _prepare(self, y_pred: torch.Tensor, y: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if y is None:
            raise ValueError(f"{type(self).__name__} needs the ground truth `y`")
        return prepare_frames(y_pred, y, minmax=self.minmax, label_threshold=self.label_threshold)

    def _mean(self) -> torch.Tensor:
        """Mean over all buffered frames (F), as the official evaluator averages frames."""
        buffer = self.get_buffer()
        if not isinstance(buffer, torch.Tensor) or buffer.shape[0] == 0:
            raise ValueError(f"{type(self).__name__}.aggregate() called before any frame was scored")
        return buffer.to(torch.float64).mean(dim=0)


class SunSegMetrics(_ProtocolMetric):
    """The whole SUN-SEG suite under its official names, computed once per batch.

    `aggregate()` returns a dict with Smeasure, wFmeasure, MAE, adpEm, meanEm, maxEm, adpFm,
    meanFm, maxFm, meanSen, maxSen, meanSpe, maxSpe, meanDice, maxDice, meanIoU and maxIoU
    (floats, averaged over frames), plus binaryDice, binaryIoU and HD95 when `clinical=True`.
    The buffer contains one packed row per frame (see `autosam.metrics.suite.unpack`).
    """

    def __init__(self, *, minmax: bool = True, label_threshold: float = 0.5, clinical: bool = False) -> None:
        """
        Args:
            minmax: stretch each prediction frame to [0, 1] as the official evaluator does.
            label_threshold: label values above it are foreground.
            clinical: also compute MONAI's Dice, IoU and 95 % Hausdorff distance of
                `y_pred > 0.5` (never stretched); frames they cannot score are NaN and excluded.
        """
        super().__init__(minmax=minmax, label_threshold=label_threshold)
        self.clinical = clinical

    def _compute_tensor(
        self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs: Any
    ) -> torch.Tensor:
        pred, gt = self._prepare(y_pred, y)
        values = frame_values(pred, gt)  # B x F
        if self.clinical:
            probabilities, _ = prepare_frames(y_pred, y, minmax=False, label_threshold=self.label_threshold)
            values = torch.cat([values, clinical_values(probabilities, gt)], dim=1)
        return values

    def _split_clinical(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        buffer = self.get_buffer()
        if not isinstance(buffer, torch.Tensor) or buffer.shape[0] == 0:
            raise ValueError("SunSegMetrics.aggregate() called before any frame was scored")
        buffer = buffer.to(torch.float64)
        if not self.clinical:
            return buffer, None
        return buffer[:, : -len(CLINICAL_FIELDS)], buffer[:, -len(CLINICAL_FIELDS) :]

    def aggregate(self) -> dict[str, float]:  # type: ignore[override]
        """Mean over frames of every metric, by official name."""
        suite_rows, clinical_rows = self._split_clinical()
        results = summarize(suite_rows)
        if clinical_rows is not None:
            results.update(
                {name: float(torch.nanmean(clinical_rows[:, i])) for i, name in enumerate(CLINICAL_FIELDS)}
            )
        return results

    def curves(self) -> dict[str, torch.Tensor]:
        """Frame-averaged curves (256 points, strictest threshold first): Em, Fm, Precision,
        Recall, Sen, Spe, Dice and IoU."""
        suite_rows, _ = self._split_clinical()
        fields = unpack(suite_rows.mean(dim=0, keepdim=True))
        return {name: value[0] for name, value in fields.items() if value.ndim == 2}


class SMeasure(_ProtocolMetric):
    """S-measure (alpha 0.5); `aggregate()` returns the mean over frames (0-d tensor)."""

    def _compute_tensor(
        self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs: Any
    ) -> torch.Tensor:
        pred, gt = self._prepare(y_pred, y)
        return structure_measure(pred, gt)[:, None]

    def aggregate(self) -> torch.Tensor:  # type: ignore[override]
        return self._mean()[0]


class WeightedFMeasure(_ProtocolMetric):
    """Weighted F-measure (beta^2 = 1); `aggregate()` returns the mean over frames (0-d tensor)."""

    def _compute_tensor(
        self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs: Any
    ) -> torch.Tensor:
        pred, gt = self._prepare(y_pred, y)
        return weighted_fmeasure(pred, gt)[:, None]

    def aggregate(self) -> torch.Tensor:  # type: ignore[override]
        return self._mean()[0]


class MeanAbsoluteError(_ProtocolMetric):
    """Mean absolute error of the prepared prediction; `aggregate()` returns the mean (0-d tensor)."""

    def _compute_tensor(
        self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs: Any
    ) -> torch.Tensor:
        pred, gt = self._prepare(y_pred, y)
        return (pred - gt.to(torch.float64)).abs().flatten(1).mean(dim=1, keepdim=True)

    def aggregate(self) -> torch.Tensor:  # type: ignore[override]
        return self._mean()[0]


class EMeasure(_ProtocolMetric):
    """E-measure; `aggregate()` returns {"adpEm", "meanEm", "maxEm"} (floats) and "curveEm" (256)."""

    def _compute_tensor(
        self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs: Any
    ) -> torch.Tensor:
        pred, gt = self._prepare(y_pred, y)
        adaptive = adaptive_counts(pred, gt)
        curve = emeasure_from_counts(uint8_level_counts(pred, gt))
        return torch.cat([emeasure_from_counts(adaptive), curve], dim=1)

    def aggregate(self) -> dict[str, Any]:  # type: ignore[override]
        mean = self._mean()
        curve = mean[1:]
        return {
            "adpEm": float(mean[0]),
            "meanEm": float(curve.mean()),
            "maxEm": float(curve.max()),
            "curveEm": curve,
        }


class FMeasure(_ProtocolMetric):
    """F-measure (beta^2 = 0.3); `aggregate()` returns {"adpFm", "meanFm", "maxFm"} and "curveFm"."""

    def _compute_tensor(
        self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs: Any
    ) -> torch.Tensor:
        pred, gt = self._prepare(y_pred, y)
        adaptive = adaptive_fmeasure(adaptive_counts(pred, gt))
        curve = fmeasure_from_counts(uint8_level_counts(pred, gt))["fmeasure"]
        return torch.cat([adaptive[:, None], curve], dim=1)

    def aggregate(self) -> dict[str, Any]:  # type: ignore[override]
        mean = self._mean()
        curve = mean[1:]
        return {
            "adpFm": float(mean[0]),
            "meanFm": float(curve.mean()),
            "maxFm": float(curve.max()),
            "curveFm": curve,
        }


class ThresholdCurves(_ProtocolMetric):
    """Dice, IoU, sensitivity and specificity over `numpy.linspace(1, 0, 256)` thresholds.

    `aggregate()` returns meanDice, maxDice, meanIoU, maxIoU, meanSen, maxSen, meanSpe and maxSpe
    (floats, mean and maximum of the frame-averaged curves). A threshold with no true positive
    scores 0, so a correct empty prediction on a frame without foreground gives Dice = Spe = 0.
    """

    _NAMES = ("Dice", "IoU", "Sen", "Spe")

    def _compute_tensor(
        self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs: Any
    ) -> torch.Tensor:
        pred, gt = self._prepare(y_pred, y)
        curves = vps_curves_from_counts(linspace_counts(pred, gt))
        return torch.cat([curves[name] for name in self._NAMES], dim=1)

    def aggregate(self) -> dict[str, float]:  # type: ignore[override]
        mean = self._mean().view(len(self._NAMES), -1)
        results: dict[str, float] = {}
        for name, curve in zip(self._NAMES, mean, strict=True):
            results[f"mean{name}"] = float(curve.mean())
            results[f"max{name}"] = float(curve.max())
        return results
