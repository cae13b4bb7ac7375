"""The SUN-SEG metric suite as an Ignite metric, for the key metric of a MONAI evaluator."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from ignite.metrics import Metric
from monai.handlers import from_engine

from autosam.metrics.protocol import prepare_uint8_frames
from autosam.metrics.suite import SUNSEG_METRIC_NAMES, frame_values, summarize_cases

__all__ = ["SunSegMetricHandler", "to_uint8_frame"]


def to_uint8_frame(values: torch.Tensor, scale: float = 255.0) -> torch.Tensor:
    """Return 1 x H x W values in [0, 1] as H x W uint8 grey levels, as a written PNG would hold them."""
    frame = values.detach().float().cpu().reshape(values.shape[-2:])
    return torch.round(frame.clamp(0.0, 1.0) * scale).to(torch.uint8)


class SunSegMetricHandler(Metric):
    """Scores every validation frame with the whole SUN-SEG suite and averages per case, then over cases.

    Predictions are quantised to 8 bits first, so the values equal those of the evaluation CLI on
    the PNG files the prediction writer produces. `engine.state.metrics` receives every metric of
    the suite under its official name (Smeasure, maxDice, ...), and the handler's own name stores
    `key_metric`, which MONAI uses for model selection.

    NOTE: unlike the official SUN-SEG evaluation, validation keeps the first and last frame of each
    case; `autosam.evaluate` on written predictions applies the full protocol.
    """

    def __init__(
        self,
        *,
        key_metric: str = "maxDice",
        output_transform: Callable[[Any], Any] | None = None,
        case_key: str = "case",
    ) -> None:
        """
        Args:
            key_metric: suite metric used for model selection, one of `SUNSEG_METRIC_NAMES`.
            output_transform: maps the engine output to (probabilities, labels), lists of 1 x H x W;
                None reads the "pred" and "label" keys.
            case_key: batch item key of the case id; items without it form one case each.
        """
        if key_metric not in SUNSEG_METRIC_NAMES:
            raise ValueError(
                f"key_metric '{key_metric}' is unknown; choose one of {', '.join(SUNSEG_METRIC_NAMES)}"
            )
        self.key_metric = key_metric
        self.case_key = case_key
        self._rows: list[torch.Tensor] = []
        self._cases: list[str] = []
        self.overall: dict[str, float] = {}
        self.per_case: dict[str, dict[str, float]] = {}
        super().__init__(output_transform=output_transform or from_engine(["pred", "label"]))

    @property
    def num_frames(self) -> int:
        """Number of frames scored since the last reset."""
        return len(self._rows)

    def reset(self) -> None:
        self._rows, self._cases = [], []

    def update(self, output: Sequence[Sequence[torch.Tensor]]) -> None:
        predictions, labels = output
        for prediction, label in zip(predictions, labels, strict=True):
            pred, gt = prepare_uint8_frames(to_uint8_frame(prediction)[None], to_uint8_frame(label)[None])
            self._rows.append(frame_values(pred, gt))  # 1 x F

    def iteration_completed(self, engine: Any) -> None:
        """Score the iteration's frames and record the case of each."""
        batch = engine.state.batch
        items = batch if isinstance(batch, list) else []
        first_new = len(self._rows)
        super().iteration_completed(engine)
        for offset in range(len(self._rows) - first_new):
            item = items[offset] if offset < len(items) else {}
            case = item.get(self.case_key) if isinstance(item, dict) else None
            self._cases.append(str(case) if case is not None else f"frame_{first_new + offset}")

    def compute(self) -> float:
        if not self._rows:
            raise RuntimeError("SunSegMetricHandler scored no frame; the validation data loader is empty")
        self.overall, self.per_case = summarize_cases(torch.cat(self._rows), self._cases)
        return self.overall[self.key_metric]

    def completed(self, engine: Any, name: str) -> None:
        """Store the key metric under `name` and every suite metric under its own name."""
        engine.state.metrics[name] = self.compute()
        engine.state.metrics.update(self.overall)
