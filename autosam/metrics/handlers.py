"""Ignite handler that attaches the whole SUN-SEG suite to a MONAI evaluator.

An engine compares epochs by one number, so the handler returns one metric of the suite (the key
metric, `maxDice` by default) as its own value and writes every other official value into
`engine.state.metrics` under its official name (optionally prefixed). The suite runs once per
iteration however many of its values are logged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from monai.handlers import IgniteMetricHandler

from autosam.metrics.clinical import CLINICAL_FIELDS
from autosam.metrics.suite import SUNSEG_METRIC_NAMES
from autosam.metrics.sunseg import SunSegMetrics

__all__ = ["SunSegFrameMetricHandler"]


def _identity(output: Any) -> Any:
    return output


class SunSegFrameMetricHandler(IgniteMetricHandler):
    """Metric handler for `key_val_metric` / `additional_metrics` of a MONAI evaluator, averaged over frames.

    `autosam.engines.SunSegMetricHandler` is the per-case variant that the bundle's validator uses.

    `output_transform` must yield `(y_pred, y)` with probabilities, e.g.
    `monai.handlers.from_engine(["pred", "label"])` after a sigmoid and before any thresholding.
    """

    def __init__(
        self,
        *,
        key_metric: str = "maxDice",
        output_transform: Callable = _identity,
        minmax: bool = True,
        clinical: bool = False,
        prefix: str = "",
        save_details: bool = False,
    ) -> None:
        """
        Args:
            key_metric: official name of the value this handler returns (what the evaluator's
                best-model selection compares), e.g. "maxDice" or "Smeasure".
            output_transform: maps the engine output to `(y_pred, y)`.
            minmax: stretch each prediction frame to [0, 1] as the official evaluator does.
            clinical: also compute binaryDice, binaryIoU and HD95 at probability 0.5.
            prefix: prepended to every name written into `engine.state.metrics`, e.g. "val_".
            save_details: keep every frame's packed values in `engine.state.metric_details`.
        """
        names: Sequence[str] = SUNSEG_METRIC_NAMES + (CLINICAL_FIELDS if clinical else ())
        if key_metric not in names:
            raise ValueError(f"key_metric {key_metric!r} is not one of {', '.join(names)}")
        super().__init__(
            metric_fn=SunSegMetrics(minmax=minmax, clinical=clinical),
            output_transform=output_transform,
            save_details=save_details,
        )
        self.key_metric = key_metric
        self.prefix = prefix

    def compute(self) -> float:
        """Aggregate the suite, publish every value on the engine and return the key metric."""
        results = self.metric_fn.aggregate()
        self._is_reduced = True
        if self._engine is not None:
            for name, value in results.items():
                self._engine.state.metrics[f"{self.prefix}{name}"] = value
            if self.save_details:
                self._engine.state.metric_details[self._name] = self.metric_fn.get_buffer()
        return results[self.key_metric]
