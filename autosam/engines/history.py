"""Per-epoch training history (mean loss, validation metrics, learning rate, time) as a CSV file."""

from __future__ import annotations

import csv
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

__all__ = ["EpochHistoryLogger", "read_history"]

logger = logging.getLogger(__name__)


class EpochHistoryLogger:
    """Ignite handler that appends one CSV row per training epoch.

    Columns: `epoch`, `train_loss` (mean over the epoch's iterations), `lr`, `seconds` (wall time of
    the epoch, validation included), `cpu_seconds` (CPU time of the process in the epoch), then
    every metric of the validator's last run (empty in an
    epoch without validation). `scripts/plot_curves.py` draws the loss and Dice curves from it.
    """

    def __init__(
        self, *, path: str | os.PathLike, validator: Any | None = None, resume: bool = False
    ) -> None:
        """
        Args:
            path: CSV file to write; its folder is created.
            validator: the evaluator run by `ValidationHandler`, whose `state.metrics` are recorded.
            resume: append to an existing file (a resumed run) instead of starting a new one.
        """
        self.path = Path(path)
        self.validator = validator
        self.resume = resume
        self._loss_sum = 0.0
        self._loss_count = 0
        self._epoch_start = 0.0
        self._epoch_cpu_start = 0.0
        self._validated = False
        self._columns: list[str] | None = None

    def attach(self, engine: Any) -> None:
        """Record iterations and epochs of `engine` (attach after `ValidationHandler`)."""
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)
        if self.validator is not None:
            self.validator.add_event_handler(Events.COMPLETED, self._validation_completed)

    def _validation_completed(self, validator: Any) -> None:
        self._validated = True

    def _started(self, engine: Any) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.resume and self.path.exists():
            self.path.unlink()
        if self.path.exists():
            with open(self.path, newline="") as stream:
                self._columns = next(csv.reader(stream), None)

    def _epoch_started(self, engine: Any) -> None:
        self._loss_sum, self._loss_count = 0.0, 0
        self._epoch_start = time.perf_counter()
        self._epoch_cpu_start = time.process_time()

    def _iteration_completed(self, engine: Any) -> None:
        output = engine.state.output
        items = output if isinstance(output, list) else [output]
        loss = items[0].get("loss") if items and isinstance(items[0], dict) else None
        if loss is not None:
            self._loss_sum += float(loss)
            self._loss_count += 1

    def _epoch_completed(self, engine: Any) -> None:
        row: dict[str, Any] = {
            "epoch": engine.state.epoch,
            "train_loss": self._loss_sum / self._loss_count if self._loss_count else math.nan,
            "lr": engine.optimizer.param_groups[0]["lr"] if getattr(engine, "optimizer", None) else math.nan,
            "seconds": round(time.perf_counter() - self._epoch_start, 3),
            "cpu_seconds": round(time.process_time() - self._epoch_cpu_start, 3),
        }
        if self._validated:
            self._validated = False
            for name, value in self.validator.state.metrics.items():
                if isinstance(value, (int, float)):
                    row[name] = value
        self._write(row)

    def _write(self, row: dict[str, Any]) -> None:
        if self._columns is None:
            self._columns = list(row)
        for name in row:
            if name not in self._columns:
                self._columns.append(name)
                self._rewrite_header()

        new_file = not self.path.exists()
        with open(self.path, "a", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=self._columns, restval="")
            if new_file:
                writer.writeheader()
            writer.writerow(row)

    def _rewrite_header(self) -> None:
        if not self.path.exists():
            return
        rows = read_history(self.path)
        with open(self.path, "w", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=self._columns, restval="")
            writer.writeheader()
            writer.writerows(rows)


def read_history(path: str | os.PathLike) -> list[dict[str, str]]:
    """Read a history CSV written by `EpochHistoryLogger` into a list of rows."""
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))
