"""The whole SUN-SEG (VPS) metric suite per frame, and its aggregation over frames and cases.

`frame_values` scores a batch of prepared frames once for every metric and packs the results into
one B x F float64 tensor: scalars first, then 256-point curves. `summarize` averages packed rows
the official way and returns the metrics under their official names.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from autosam.metrics.curves import (
    adaptive_counts,
    adaptive_fmeasure,
    emeasure_from_counts,
    fmeasure_from_counts,
    linspace_counts,
    uint8_level_counts,
    vps_curves_from_counts,
)
from autosam.metrics.protocol import NUM_THRESHOLDS
from autosam.metrics.structure import structure_measure
from autosam.metrics.weighted_fmeasure import weighted_fmeasure

__all__ = [
    "SUNSEG_METRIC_NAMES",
    "SCALAR_FIELDS",
    "CURVE_FIELDS",
    "frame_values",
    "unpack",
    "summarize",
    "summarize_cases",
]

# Per-frame scalars, then per-frame curves, in the packed order.
SCALAR_FIELDS: tuple[str, ...] = ("Smeasure", "wFmeasure", "MAE", "adpEm", "adpFm")
CURVE_FIELDS: tuple[str, ...] = ("Em", "Fm", "Precision", "Recall", "Sen", "Spe", "Dice", "IoU")

# The official evaluator's output names, in its table order.
SUNSEG_METRIC_NAMES: tuple[str, ...] = (
    "Smeasure",
    "wFmeasure",
    "MAE",
    "adpEm",
    "meanEm",
    "maxEm",
    "adpFm",
    "meanFm",
    "maxFm",
    "meanSen",
    "maxSen",
    "meanSpe",
    "maxSpe",
    "meanDice",
    "maxDice",
    "meanIoU",
    "maxIoU",
)

_CURVE_SUMMARIES: tuple[str, ...] = ("Em", "Fm", "Sen", "Spe", "Dice", "IoU")


def frame_values(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Score prepared frames with the whole suite: B x (5 + 8 * 256) float64.

    Args:
        pred: B x H x W float64 in [0, 1] (see `autosam.metrics.protocol.prepare_frames`).
        gt: B x H x W bool.
    """
    level_counts = uint8_level_counts(pred, gt)
    fmeasure = fmeasure_from_counts(level_counts)
    emeasure = emeasure_from_counts(level_counts)
    vps = vps_curves_from_counts(linspace_counts(pred, gt))

    adaptive = adaptive_counts(pred, gt)
    mae = (pred - gt.to(torch.float64)).abs().reshape(pred.shape[0], -1).mean(dim=1)

    scalars = torch.stack(
        [
            structure_measure(pred, gt),
            weighted_fmeasure(pred, gt),
            mae,
            emeasure_from_counts(adaptive)[:, 0],
            adaptive_fmeasure(adaptive),
        ],
        dim=1,
    )
    curves = [
        emeasure,
        fmeasure["fmeasure"],
        fmeasure["precision"],
        fmeasure["recall"],
        vps["Sen"],
        vps["Spe"],
        vps["Dice"],
        vps["IoU"],
    ]
    return torch.cat([scalars, *curves], dim=1)


def unpack(values: torch.Tensor) -> dict[str, torch.Tensor]:
    """Split packed rows (N x F) into scalars (N) and curves (N x 256) by field name."""
    fields: dict[str, torch.Tensor] = {name: values[:, i] for i, name in enumerate(SCALAR_FIELDS)}
    start = len(SCALAR_FIELDS)
    for name in CURVE_FIELDS:
        fields[name] = values[:, start : start + NUM_THRESHOLDS]
        start += NUM_THRESHOLDS
    return fields


def _named_results(mean_row: torch.Tensor) -> dict[str, float]:
    """Official names from one averaged packed row (F)."""
    fields = unpack(mean_row[None])
    results = {name: float(fields[name][0]) for name in SCALAR_FIELDS}
    for name in _CURVE_SUMMARIES:
        curve = fields[name][0]
        results[f"mean{name}"] = float(curve.mean())
        results[f"max{name}"] = float(curve.max())
    return {name: results[name] for name in SUNSEG_METRIC_NAMES}


def summarize(values: torch.Tensor) -> dict[str, float]:
    """Average packed frame rows (N x F) and name the results (a flat folder: one mean over frames)."""
    if values.shape[0] == 0:
        raise ValueError("no frame to summarize; score at least one frame first")
    return _named_results(values.to(torch.float64).mean(dim=0))


def summarize_cases(
    values: torch.Tensor, case_ids: Sequence[str]
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Average frames within each case, then the plain mean over cases, as the VPS evaluator does.

    Args:
        values: N x F packed frame rows.
        case_ids: the case of each row (N strings); cases keep their first-seen order.

    Returns:
        (overall, per_case): named results over all cases, and per case.
    """
    if values.shape[0] != len(case_ids):
        raise ValueError(f"{values.shape[0]} frame rows but {len(case_ids)} case ids")
    order = list(dict.fromkeys(case_ids))
    case_rows = []
    per_case: dict[str, dict[str, float]] = {}
    for case in order:
        rows = torch.tensor([i for i, c in enumerate(case_ids) if c == case], device=values.device)
        case_mean = values[rows].to(torch.float64).mean(dim=0)
        case_rows.append(case_mean)
        per_case[case] = _named_results(case_mean)
    if not case_rows:
        raise ValueError("no case to summarize; score at least one frame first")
    overall = _named_results(torch.stack(case_rows).mean(dim=0))
    return overall, per_case
