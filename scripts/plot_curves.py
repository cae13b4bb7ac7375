"""Plot the training curves of `scripts/run_experiments.sh` runs and print their metric tables.

    python scripts/plot_curves.py RUN_DIR --output curves.png     # loss and validation Dice per epoch
    python scripts/plot_curves.py RUN_DIR --summary_only          # Markdown tables of every evaluation

RUN_DIR contains one folder per model (autosam/, light/, basicunet/), each with
`train/training_history.csv` (written by `EpochHistoryLogger`) and `eval_*/metrics.json`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import fire

from autosam.engines import read_history

MODELS = {"autosam": "AutoSAM (tiny SAM)", "light": "light path g + h", "basicunet": "MONAI BasicUNet"}
EVALUATIONS = {
    "eval_kvasir_val": "Kvasir-SEG validation",
    "eval_cvc_clinicdb": "CVC-ClinicDB (unseen)",
    "eval_cvc_video": "CVC-ClinicDB video, bundle",
}
TABLE_METRICS = ("binaryDice", "binaryIoU", "maxDice", "meanDice", "Smeasure", "wFmeasure", "meanEm", "MAE")


def _float(text: str) -> float:
    return float(text) if text not in ("", None) else math.nan


def plot(run_dir: str, output: str) -> str:
    """Draw train loss against epochs, validation Dice at 0.5 and maxDice against CPU time; return the PNG path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(15, 4))
    for name, label in MODELS.items():
        history_path = Path(run_dir) / name / "train" / "training_history.csv"
        if not history_path.is_file():
            continue
        rows = read_history(history_path)
        epochs = [int(row["epoch"]) for row in rows]
        minutes = [sum(_float(r["cpu_seconds"]) for r in rows[: i + 1]) / 60 for i in range(len(rows))]
        axes[0].plot(epochs, [_float(row["train_loss"]) for row in rows], marker="o", label=label)
        axes[1].plot(minutes, [_float(row.get("val_dice", "")) for row in rows], marker="o", label=label)
        axes[2].plot(minutes, [_float(row.get("val_maxDice", "")) for row in rows], marker="o", label=label)

    titles = ("training loss (BCE + Dice)", "validation Dice at 0.5", "validation maxDice (SUN-SEG)")
    xlabels = ("epoch", "CPU minutes of the training process", "CPU minutes of the training process")
    for axis, title, xlabel in zip(axes, titles, xlabels, strict=True):
        axis.set_title(title)
        axis.set_xlabel(xlabel)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(output, dpi=110)
    return output


def summary(run_dir: str) -> str:
    """Return Markdown tables: one row per model and evaluation, plus the official video protocol."""
    lines = [
        "| model | data | frames | " + " | ".join(TABLE_METRICS) + " |",
        "|---" * (3 + len(TABLE_METRICS)) + "|",
    ]
    for name, label in MODELS.items():
        for folder, data_label in EVALUATIONS.items():
            path = Path(run_dir) / name / folder / "metrics.json"
            if not path.is_file():
                continue
            report = json.loads(path.read_text())
            values = " | ".join(f"{report['overall'].get(metric, math.nan):.3f}" for metric in TABLE_METRICS)
            lines.append(f"| {label} | {data_label} | {report['frames']} | {values} |")
        official = Path(run_dir) / name / "eval_cvc_video" / "official" / "results.json"
        if official.is_file():
            overall = json.loads(official.read_text())["overall"]
            values = " | ".join(f"{overall.get(metric, math.nan):.3f}" for metric in TABLE_METRICS)
            lines.append(f"| {label} | CVC-ClinicDB video, official protocol | - | {values} |")
    return "\n".join(lines)


def main(run_dir: str, output: str | None = None, summary_only: bool = False) -> None:
    """Write the curves PNG (with `--output`) or print the metric tables (with `--summary_only`)."""
    if output:
        print(plot(run_dir, output))
    if summary_only or not output:
        print(summary(run_dir))


if __name__ == "__main__":
    fire.Fire(main)
