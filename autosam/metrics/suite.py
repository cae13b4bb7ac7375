"""The whole SUN-SEG (VPS) metric suite per frame, and its aggregation over frames and cases.

`frame_values` scores a batch of prepared frames once for every metric and packs the results into
one B x F float64 tensor: scalars first, then 256-point curves. `summarize` averages packed rows
the official way and returns the metrics under their official names.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from autosam.metrics.curves import (
    ThresholdCounts,
    adaptive_counts,
    adaptive_fmeasure,
    emeasure_from_counts,
    fmeasure_from_counts,
    threshold_counts,
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
    "pack",
    "unpack",
    "summarize",
    "summarize_cases",
    "case_means",
    "summarize_case_means",
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


def pack(
    smeasure: torch.Tensor,
    wfmeasure: torch.Tensor,
    mae: torch.Tensor,
    adaptive: ThresholdCounts,
    level_counts: ThresholdCounts,
    linspace: ThresholdCounts,
) -> torch.Tensor:
    """Pack per-frame scalars and the counts of both threshold families into B x F rows."""
    fmeasure = fmeasure_from_counts(level_counts)
    vps = vps_curves_from_counts(linspace)
    scalars = torch.stack(
        [smeasure, wfmeasure, mae, emeasure_from_counts(adaptive)[:, 0], adaptive_fmeasure(adaptive)], dim=1
    )
    curves = [
        emeasure_from_counts(level_counts),
        fmeasure["fmeasure"],
        fmeasure["precision"],
        fmeasure["recall"],
        vps["Sen"],
        vps["Spe"],
        vps["Dice"],
        vps["IoU"],
    ]
    return torch.cat([scalars, *curves], dim=1)


def frame_values(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Score prepared frames with the whole suite: B x (5 + 8 * 256) float64.

    Args:
        pred: B x H x W float64 in [0, 1] (see `autosam.metrics.protocol.prepare_frames`).
        gt: B x H x W bool.
    """
    level_counts, linspace = threshold_counts(pred, gt)
    gt_float = gt.to(torch.float64)
    error = (pred - gt_float).abs()
    return pack(
        structure_measure(pred, gt, gt_float=gt_float),
        weighted_fmeasure(pred, gt, error=error, gt_float=gt_float),
        error.flatten(1).mean(dim=1),
        adaptive_counts(pred, gt),
        level_counts,
        linspace,
    )


def unpack(values: torch.Tensor) -> dict[str, torch.Tensor]:
    """Split packed rows (N x F) into scalars (N) and curves (N x 256) by field name."""
    fields: dict[str, torch.Tensor] = {name: values[:, i] for i, name in enumerate(SCALAR_FIELDS)}
    start = len(SCALAR_FIELDS)
    for name in CURVE_FIELDS:
        fields[name] = values[:, start : start + NUM_THRESHOLDS]
        start += NUM_THRESHOLDS
    return fields


def _frame_mean(rows: np.ndarray) -> np.ndarray:
    """Mean over a case's frames (N x F to F), with numpy's reductions in the official order.

    The official code averages a 1-D list per scalar metric (pairwise summation) and an N x 256
    array per curve (summation down the frames). Doing the same keeps the results bit-identical.
    """
    mean = np.empty(rows.shape[1], dtype=np.float64)
    for i in range(len(SCALAR_FIELDS)):
        mean[i] = np.mean(np.ascontiguousarray(rows[:, i]))
    curves = slice(len(SCALAR_FIELDS), rows.shape[1])
    mean[curves] = np.mean(np.ascontiguousarray(rows[:, curves]), axis=0)
    return mean


def _official_table(case_means: Sequence[np.ndarray]) -> np.ndarray:
    """Stack case means as the official cases x 11 x 256 table (scalars repeated 256 times) and
    average it over cases."""
    tables = []
    for mean in case_means:
        fields = unpack(torch.from_numpy(mean[None]))
        rows = [[float(fields[name][0])] * NUM_THRESHOLDS for name in SCALAR_FIELDS[:3]]
        rows += [[float(fields["adpEm"][0])] * NUM_THRESHOLDS, fields["Em"][0].tolist()]
        rows += [[float(fields["adpFm"][0])] * NUM_THRESHOLDS, fields["Fm"][0].tolist()]
        rows += [fields[name][0].tolist() for name in ("Sen", "Spe", "Dice", "IoU")]
        tables.append(rows)
    return np.mean(np.array(tables, dtype=np.float64), axis=0)


def _named_results(table: np.ndarray) -> dict[str, float]:
    """Official names from an averaged 11 x 256 table, as the official evaluator reads it."""
    results = {
        "Smeasure": table[0].mean(),
        "wFmeasure": table[1].mean(),
        "MAE": table[2].mean(),
        "adpEm": table[3].mean(),
        "meanEm": table[4].mean(),
        "maxEm": table[4].max(),
        "adpFm": table[5].mean(),
        "meanFm": table[6].mean(),
        "maxFm": table[6].max(),
    }
    for row, name in enumerate(("Sen", "Spe", "Dice", "IoU"), start=7):
        results[f"mean{name}"] = table[row].mean()
        results[f"max{name}"] = table[row].max()
    return {name: float(results[name]) for name in SUNSEG_METRIC_NAMES}


def _to_numpy(values: torch.Tensor) -> np.ndarray:
    return values.detach().to(device="cpu", dtype=torch.float64).numpy()


def summarize(values: torch.Tensor) -> dict[str, float]:
    """Average packed frame rows (N x F) and name the results (a flat folder: one mean over frames)."""
    if values.shape[0] == 0:
        raise ValueError("no frame to summarize; score at least one frame first")
    return _named_results(_official_table([_frame_mean(_to_numpy(values))]))


def case_means(values: torch.Tensor, case_ids: Sequence[str]) -> dict[str, np.ndarray]:
    """Mean packed row (F) of each case, in first-seen case order."""
    if values.shape[0] != len(case_ids):
        raise ValueError(f"{values.shape[0]} frame rows but {len(case_ids)} case ids")
    rows = _to_numpy(values)
    means: dict[str, np.ndarray] = {}
    for case in dict.fromkeys(case_ids):
        selected = [i for i, c in enumerate(case_ids) if c == case]
        means[case] = _frame_mean(rows[selected])
    return means


def summarize_case_means(
    means: dict[str, np.ndarray],
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Name the results of each case and of the plain mean over cases.

    Args:
        means: mean packed row (F) per case, from `case_means`.

    Returns:
        (overall, per_case): named results over all cases, and per case.
    """
    if not means:
        raise ValueError("no case to summarize; score at least one frame first")
    per_case = {case: _named_results(_official_table([mean])) for case, mean in means.items()}
    overall = _named_results(_official_table(list(means.values())))
    return overall, per_case


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
    return summarize_case_means(case_means(values, case_ids))
