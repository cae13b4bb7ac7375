"""Evaluation report: the metric table in the log, and JSON / CSV files in the output folder."""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from autosam.engines.metric_handler import SunSegMetricHandler
from autosam.metrics.suite import SUNSEG_METRIC_NAMES

__all__ = ["EvaluationReport", "format_metric_table"]

logger = logging.getLogger(__name__)


def format_metric_table(metrics: Mapping[str, float], title: str = "metric") -> str:
    """Return a two-column Markdown table of `metrics`, values to 4 decimals."""
    lines = [f"| {title} | value |", "|---|---|"]
    for name, value in metrics.items():
        text = f"{value:.4f}" if isinstance(value, float) and math.isfinite(value) else str(value)
        lines.append(f"| {name} | {text} |")
    return "\n".join(lines)


class EvaluationReport:
    """Ignite handler that writes `metrics.json`, `per_case.csv` and logs the table when evaluation ends.

    `metrics.json` contains {"overall": {...}, "per_case": {case: {...}}, "frames": N, "checkpoint": ...}:
    the SUN-SEG suite under its official names plus every other scalar metric of the evaluator
    (MONAI's Dice, IoU and Hausdorff distance at the threshold).
    """

    def __init__(
        self,
        *,
        output_dir: str | os.PathLike,
        suite: SunSegMetricHandler,
        checkpoint: str | os.PathLike | None = None,
    ) -> None:
        """
        Args:
            output_dir: folder that receives the files; created when missing.
            suite: the evaluator's SUN-SEG metric, whose per-case results are written.
            checkpoint: checkpoint evaluated, recorded in the JSON file.
        """
        self.output_dir = Path(output_dir)
        self.suite = suite
        self.checkpoint = None if checkpoint is None else str(checkpoint)
        self.overall: dict[str, float] = {}

    def attach(self, engine: Any) -> None:
        """Write the report when `engine` completes a run."""
        from ignite.engine import Events

        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Any) -> None:
        suite_values = {
            name: self.suite.overall[name] for name in SUNSEG_METRIC_NAMES if name in self.suite.overall
        }
        others = {
            name: float(value)
            for name, value in engine.state.metrics.items()
            if name not in suite_values
            and name.removeprefix("val_") not in suite_values
            and isinstance(value, (int, float))
        }
        self.overall = {**suite_values, **others}

        self.output_dir.mkdir(parents=True, exist_ok=True)
        report = {
            "checkpoint": self.checkpoint,
            "frames": self.suite.num_frames,
            "cases": len(self.suite.per_case),
            "overall": self.overall,
            "per_case": self.suite.per_case,
        }
        (self.output_dir / "metrics.json").write_text(json.dumps(report, indent=2))
        self._write_per_case_csv(self.output_dir / "per_case.csv")
        logger.info(
            "evaluation of %d frames in %d cases:\n%s",
            report["frames"],
            report["cases"],
            format_metric_table(self.overall),
        )
        logger.info("wrote %s and %s", self.output_dir / "metrics.json", self.output_dir / "per_case.csv")

    def _write_per_case_csv(self, path: Path) -> None:
        with open(path, "w", newline="") as stream:
            writer = csv.writer(stream)
            writer.writerow(["case", *SUNSEG_METRIC_NAMES])
            for case, values in self.suite.per_case.items():
                writer.writerow([case, *(values[name] for name in SUNSEG_METRIC_NAMES)])
