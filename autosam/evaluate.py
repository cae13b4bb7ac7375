"""Evaluate saved predictions with the official SUN-SEG (VPS) protocol.

    python -m autosam.evaluate PRED_ROOT GT_ROOT [--layout sun-seg|flat] [--output results.json]
    python -m fire autosam.evaluate evaluate PRED_ROOT GT_ROOT ...

Layouts: `sun-seg` is `GT_ROOT/<case>/<frame>.png` (SUN-SEG's `TestEasyDataset/GT`), `flat` is
`GT_ROOT/<frame>.png`. Prediction files mirror the ground-truth paths under PRED_ROOT as 8-bit
grey PNGs (a file with the ground truth's name, or its stem with `.png`).

Files are read and resized with OpenCV exactly as the official evaluator reads them. In the
sun-seg layout frames are sorted numerically within each case, and the first and last frame of
each case are dropped. Each metric and each curve point is averaged over a case's frames, then
the plain mean over cases is reported. A flat folder is one mean over its frames.

Output: a table on stdout, and beside `--output` (JSON) a per-case CSV and PNG plots of the
precision-recall, F-measure and E-measure curves.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fire
import numpy as np
import torch
from monai.utils import optional_import

from autosam.cli import run_fire
from autosam.metrics.clinical import CLINICAL_FIELDS, clinical_values
from autosam.metrics.levels import uint8_frame_values
from autosam.metrics.protocol import DICE_THRESHOLDS, NUM_THRESHOLDS
from autosam.metrics.suite import (
    CURVE_FIELDS,
    SCALAR_FIELDS,
    case_means,
    summarize_case_means,
    unpack,
)

cv2, HAS_CV2 = optional_import("cv2")

__all__ = ["evaluate", "main", "EvaluationResults", "PAPER_COLUMNS"]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

# Columns of the AutoSAM paper's SUN-SEG tables and the official names they report.
PAPER_COLUMNS: dict[str, str] = {
    "Dice": "maxDice",
    "S-measure": "Smeasure",
    "Sensitivity": "meanSen",
    "mean E": "meanEm",
    "mean F": "meanFm",
    "weighted F": "wFmeasure",
}

PROTOCOL = {
    "name": "SUN-SEG / VPS evaluator (GewelsJI/VPS eval)",
    "ground_truth": "8-bit grey read by OpenCV, foreground = grey > 128",
    "prediction": (
        "8-bit grey read by OpenCV, resized to the ground truth's size by cv2.resize (bilinear) when "
        "sizes differ, divided by 255, then min-max stretched per frame unless constant"
    ),
    "em_fm_thresholds": "uint8(pred * 255) >= k for k = 255 ... 0 (curve index 0 is k = 255)",
    "dice_iou_sen_spe_thresholds": "pred >= t for t in numpy.linspace(1, 0, 256), float64",
    "zero_true_positives": "Dice, IoU, Sen and Spe are 0 at a threshold without true positives",
    "aggregation": "each metric and curve point averaged over a case's frames, then over cases",
    "clinical": "binaryDice, binaryIoU, HD95 (pixels): MONAI at grey / 255 > 0.5, no stretch, NaN excluded",
}


@dataclass
class Frame:
    """One ground-truth frame and its prediction file."""

    case: str
    frame: str
    gt_path: Path
    pred_path: Path | None


class EvaluationResults(dict):
    """Results dict (the JSON content) that prints as the table; `fire` prints it after a run."""

    def __str__(self) -> str:
        return format_table(self)


def _natural_key(text: str) -> list[Any]:
    """Sort key that orders digit runs by value: image2 < image10."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


def _as_bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise ValueError(f"--{name} must be true or false, got {value!r}")


def _as_optional_bool(value: Any, name: str) -> bool | None:
    if value is None or str(value).strip().lower() == "none":
        return None
    return _as_bool(value, name)


def _as_id_list(value: Any) -> list[str] | None:
    """Comma-separated ids (or a list) as strings, never as numbers."""
    if value is None:
        return None
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    return [str(item).strip() for item in items if str(item).strip()]


def _image_files(folder: Path) -> list[Path]:
    return [path for path in folder.iterdir() if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES]


def _prediction_path(pred_root: Path, relative: Path) -> Path | None:
    """Find the prediction mirroring a ground-truth file: same name, else the same stem with `.png`."""
    for candidate in (pred_root / relative, (pred_root / relative).with_suffix(".png")):
        if candidate.is_file():
            return candidate
    return None


def discover_frames(
    pred_root: Path,
    gt_root: Path,
    *,
    layout: str,
    drop_first_last: bool,
    cases: Sequence[str] | None = None,
) -> tuple[list[Frame], list[str]]:
    """List the frames to score in evaluation order, and the cases skipped for having too few frames."""
    if not gt_root.is_dir():
        raise FileNotFoundError(f"ground-truth folder '{gt_root}' not found")
    if not pred_root.is_dir():
        raise FileNotFoundError(f"prediction folder '{pred_root}' not found")

    if layout == "flat":
        groups = {"": sorted(_image_files(gt_root), key=lambda path: _natural_key(path.name))}
    elif layout == "sun-seg":
        case_dirs = sorted(
            (path for path in gt_root.iterdir() if path.is_dir()), key=lambda path: _natural_key(path.name)
        )
        groups = {
            path.name: sorted(_image_files(path), key=lambda p: _natural_key(p.name)) for path in case_dirs
        }
    else:
        raise ValueError(f"--layout must be 'sun-seg' or 'flat', got {layout!r}")

    if cases is not None:
        unknown = [case for case in cases if case not in groups]
        if unknown:
            raise ValueError(
                f"case(s) {', '.join(unknown)} not found under '{gt_root}'; available: {', '.join(groups)}"
            )
        groups = {case: groups[case] for case in cases}

    frames: list[Frame] = []
    skipped: list[str] = []
    for case, paths in groups.items():
        if drop_first_last:
            # The official evaluator drops the first and the last frame of every sequence.
            if len(paths) < 3:
                logger.warning(
                    "case %s has %d frame(s); none is left after dropping the first and last",
                    case,
                    len(paths),
                )
                skipped.append(case)
                continue
            paths = paths[1:-1]
        for path in paths:
            relative = path.relative_to(gt_root)
            frames.append(Frame(case, path.stem, path, _prediction_path(pred_root, relative)))
    if not frames:
        raise ValueError(
            f"no ground-truth image ({', '.join(IMAGE_SUFFIXES)}) found under '{gt_root}' with layout {layout}; "
            "check the folder, and pass --layout flat for a folder of masks without case subfolders"
        )
    return frames, skipped


def _read_grey(path: Path) -> np.ndarray:
    """Read an image as 8-bit grey with OpenCV, as the official evaluator does."""
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise ValueError(
            f"cannot read image '{path}'; it is missing, empty or not an image OpenCV can decode"
        )
    return image


def read_frame_pair(frame: Frame) -> tuple[np.ndarray, np.ndarray]:
    """(prediction, ground truth) uint8 H x W, the prediction resized to the ground truth's size."""
    gt = _read_grey(frame.gt_path)
    pred = _read_grey(frame.pred_path)
    if pred.shape != gt.shape:
        pred = cv2.resize(pred, (gt.shape[1], gt.shape[0]))
    return pred, gt


def _batches(
    frames: Sequence[Frame], batch_size: int
) -> Iterable[tuple[list[Frame], np.ndarray, np.ndarray]]:
    """Consecutive frames of equal size, at most `batch_size` at a time."""
    batch: list[Frame] = []
    preds: list[np.ndarray] = []
    gts: list[np.ndarray] = []
    for frame in frames:
        pred, gt = read_frame_pair(frame)
        if batch and (gt.shape != gts[0].shape or len(batch) == batch_size):
            yield batch, np.stack(preds), np.stack(gts)
            batch, preds, gts = [], [], []
        batch.append(frame)
        preds.append(pred)
        gts.append(gt)
    if batch:
        yield batch, np.stack(preds), np.stack(gts)


def score_frames(
    frames: Sequence[Frame], *, batch_size: int = 2, device: str = "cpu", clinical: bool = True
) -> torch.Tensor:
    """Score every frame: packed suite values (N x F float64, on the CPU), clinical columns last."""
    rows = []
    for _, preds, gts in _batches(frames, batch_size):
        pred_levels = torch.from_numpy(preds).to(device)
        gt_levels = torch.from_numpy(gts).to(device)
        values = uint8_frame_values(pred_levels, gt_levels)
        if clinical:
            probabilities = pred_levels.to(torch.float64) / 255
            values = torch.cat([values, clinical_values(probabilities, gt_levels > 128)], dim=1)
        rows.append(values.cpu())
    return torch.cat(rows)


def _frame_summary(row: np.ndarray) -> dict[str, float]:
    """Named values of one packed frame row: scalars, and mean / max of each curve."""
    fields = unpack(torch.from_numpy(row[None]))
    summary = {name: float(fields[name][0]) for name in SCALAR_FIELDS}
    for name in ("Em", "Fm", "Sen", "Spe", "Dice", "IoU"):
        curve = fields[name][0].numpy()
        summary[f"mean{name}"] = float(curve.mean())
        summary[f"max{name}"] = float(curve.max())
    return summary


def aggregate(frames: Sequence[Frame], values: torch.Tensor, *, clinical: bool) -> dict[str, Any]:
    """Build the per-frame, per-case and overall results and the overall curves of the JSON output."""
    suite_width = len(SCALAR_FIELDS) + len(CURVE_FIELDS) * NUM_THRESHOLDS
    rows = values.to(torch.float64).numpy()
    case_ids = [frame.case for frame in frames]

    per_frame: dict[str, dict[str, dict[str, float]]] = {}
    for index, frame in enumerate(frames):
        summary = _frame_summary(rows[index, :suite_width])
        if clinical:
            summary.update(
                {name: float(rows[index, suite_width + i]) for i, name in enumerate(CLINICAL_FIELDS)}
            )
        per_frame.setdefault(frame.case, {})[frame.frame] = summary

    means = case_means(values[:, :suite_width], case_ids)
    overall, per_case_metrics = summarize_case_means(means)
    per_case: dict[str, dict[str, Any]] = {
        case: {"frames": case_ids.count(case), **metrics} for case, metrics in per_case_metrics.items()
    }
    if clinical:
        # Frames without foreground are NaN for these and drop out of both means.
        case_clinical = {}
        for case in per_case:
            selected = [i for i, c in enumerate(case_ids) if c == case]
            case_clinical[case] = np.nanmean(rows[selected, suite_width:], axis=0)
            per_case[case].update(zip(CLINICAL_FIELDS, map(float, case_clinical[case]), strict=True))
        overall_clinical = np.nanmean(np.stack(list(case_clinical.values())), axis=0)
        overall.update(zip(CLINICAL_FIELDS, map(float, overall_clinical), strict=True))

    overall_row = np.mean(np.stack(list(means.values())), axis=0)
    curves = {
        name: value[0].tolist()
        for name, value in unpack(torch.from_numpy(overall_row[None])).items()
        if value.ndim == 2
    }
    curves["uint8_thresholds"] = list(range(255, -1, -1))
    curves["linspace_thresholds"] = DICE_THRESHOLDS.tolist()
    return {"overall": overall, "per_case": per_case, "per_frame": per_frame, "curves": curves}


def _json_safe(value: Any) -> Any:
    """Replace NaN and infinities, which JSON cannot hold, by null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_safe(item) for item in value]
    return value


def format_table(results: dict[str, Any]) -> str:
    """Format the overall results as a plain-text table, then the AutoSAM paper's columns."""
    overall = results["overall"]
    protocol = results["protocol"]
    lines = [
        f"SUN-SEG evaluation of {protocol['pred_root']} against {protocol['gt_root']} "
        f"({protocol['num_cases']} case(s), {protocol['num_frames']} frame(s))",
        f"{'metric':<12} {'value':>8}",
    ]
    for name, value in overall.items():
        lines.append(f"{name:<12} {value:>8.4f}" if value is not None else f"{name:<12} {'n/a':>8}")
    lines.append(
        "paper columns: "
        + ", ".join(f"{column} = {overall[name]:.3f}" for column, name in PAPER_COLUMNS.items())
    )
    missing = protocol["missing_predictions"]
    if missing:
        lines.append(f"{len(missing)} ground-truth frame(s) had no prediction and were left out")
    return "\n".join(lines)


def write_case_csv(path: Path, per_case: dict[str, dict[str, Any]]) -> None:
    """Write one CSV row per case: case id, frame count and every metric."""
    names = [name for name in next(iter(per_case.values())) if name != "frames"]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["case", "frames", *names])
        for case, metrics in per_case.items():
            writer.writerow([case, metrics["frames"], *(metrics[name] for name in names)])


def write_frame_csv(path: Path, per_frame: dict[str, dict[str, dict[str, Any]]]) -> None:
    """Write one CSV row per frame: frame id and every metric (the flat layout has no cases)."""
    rows = {frame: metrics for frames in per_frame.values() for frame, metrics in frames.items()}
    names = list(next(iter(rows.values())))
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["frame", *names])
        for frame, metrics in rows.items():
            writer.writerow([frame, *(metrics[name] for name in names)])


def write_plots(stem: Path, curves: dict[str, list[float]]) -> list[Path]:
    """Plot the overall precision-recall, F-measure and E-measure curves as PNG files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    thresholds = curves["uint8_thresholds"]
    plots = [
        ("pr_curve", curves["Recall"], curves["Precision"], "recall", "precision"),
        ("fmeasure", thresholds, curves["Fm"], "threshold (8-bit level)", "F-measure (beta^2 = 0.3)"),
        ("emeasure", thresholds, curves["Em"], "threshold (8-bit level)", "E-measure"),
    ]
    paths = []
    for suffix, x, y, x_label, y_label in plots:
        figure, axes = plt.subplots(figsize=(4.5, 4))
        axes.plot(x, y)
        axes.set_xlabel(x_label)
        axes.set_ylabel(y_label)
        axes.grid(True, alpha=0.3)
        figure.tight_layout()
        path = stem.with_name(f"{stem.name}_{suffix}.png")
        figure.savefig(path, dpi=100)
        plt.close(figure)
        paths.append(path)
    return paths


@fire.decorators.SetParseFn(str)
def evaluate(
    pred_root: str,
    gt_root: str,
    layout: str = "sun-seg",
    output: str = "results.json",
    allow_missing: bool = False,
    cases: str | None = None,
    drop_first_last: bool | None = None,
    clinical: bool = True,
    batch_size: int = 2,
    device: str = "cpu",
) -> EvaluationResults:
    """Score predictions against ground truth with the official SUN-SEG protocol.

    Args:
        pred_root: folder of prediction PNGs mirroring the ground-truth paths.
        gt_root: ground-truth folder (`<case>/<frame>.png` for sun-seg, `<frame>.png` for flat).
        layout: "sun-seg" (per-case sequences) or "flat" (one folder of frames).
        output: JSON file to write; the per-case CSV and the plots go beside it with the same stem.
        allow_missing: leave out ground-truth frames without a prediction instead of failing.
        cases: comma-separated case ids to evaluate (default: every case).
        drop_first_last: drop the first and last frame of each case (default: true for sun-seg).
        clinical: also report MONAI's Dice, IoU and HD95 of grey / 255 > 0.5.
        batch_size: frames scored together.
        device: torch device for the metric computation, e.g. "cpu" or "cuda".

    Returns:
        The results (the JSON content) as a dict; printing it shows the table.
    """
    if not HAS_CV2:
        raise ImportError(
            "autosam.evaluate reads images with OpenCV; install it: pip install opencv-python-headless"
        )
    # Every argument arrives as a string from the command line, so ids such as 1_3 stay text.
    layout = str(layout)
    allow_missing = _as_bool(allow_missing, "allow_missing")
    clinical = _as_bool(clinical, "clinical")
    drop = _as_optional_bool(drop_first_last, "drop_first_last")
    drop = (layout == "sun-seg") if drop is None else drop
    batch_size = int(batch_size)
    device = str(device)
    pred_dir = Path(str(pred_root))
    gt_dir = Path(str(gt_root))

    frames, skipped = discover_frames(
        pred_dir, gt_dir, layout=layout, drop_first_last=drop, cases=_as_id_list(cases)
    )
    missing = [frame for frame in frames if frame.pred_path is None]
    if missing and not allow_missing:
        listed = "\n  ".join(str(pred_dir / frame.gt_path.relative_to(gt_dir)) for frame in missing[:20])
        more = f"\n  ... and {len(missing) - 20} more" if len(missing) > 20 else ""
        raise FileNotFoundError(
            f"{len(missing)} prediction(s) missing under '{pred_dir}':\n  {listed}{more}\n"
            "write them, or pass --allow_missing to leave those frames out"
        )
    scored = [frame for frame in frames if frame.pred_path is not None]
    if not scored:
        raise FileNotFoundError(
            f"no prediction found under '{pred_dir}' for the ground truth under '{gt_dir}'"
        )

    values = score_frames(scored, batch_size=batch_size, device=device, clinical=clinical)
    results = EvaluationResults(aggregate(scored, values, clinical=clinical))
    results["protocol"] = {
        **PROTOCOL,
        "layout": layout,
        "pred_root": str(pred_dir),
        "gt_root": str(gt_dir),
        "drop_first_last": drop,
        "num_cases": len(results["per_case"]),
        "num_frames": len(scored),
        "missing_predictions": [str(frame.gt_path.relative_to(gt_dir)) for frame in missing],
        "skipped_cases": skipped,
        "paper_columns": PAPER_COLUMNS,
    }
    if layout == "flat":
        # A flat folder has no cases: the overall result is the mean over its frames.
        results["per_case"] = {}

    output_path = Path(str(output))
    output_path.parent.mkdir(parents=True, exist_ok=True)
    ordered = {key: results[key] for key in ("protocol", "overall", "per_case", "per_frame", "curves")}
    output_path.write_text(json.dumps(_json_safe(ordered), indent=2))
    stem = output_path.with_suffix("")
    if results["per_case"]:
        csv_path = stem.with_name(f"{stem.name}_per_case.csv")
        write_case_csv(csv_path, results["per_case"])
    else:
        csv_path = stem.with_name(f"{stem.name}_per_frame.csv")
        write_frame_csv(csv_path, results["per_frame"])
    plot_paths = write_plots(stem, results["curves"])
    logger.info("wrote %s, %s and %d plots", output_path, csv_path, len(plot_paths))
    return results


def main() -> None:
    """Command-line entry point (`python -m autosam.evaluate`, `autosam-evaluate`)."""
    run_fire(evaluate, name="python -m autosam.evaluate")


if __name__ == "__main__":
    main()
