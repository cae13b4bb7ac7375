"""SUN-SEG (VPS) evaluation metrics, exact to the official evaluator, as MONAI cumulative metrics."""

from __future__ import annotations

from autosam.metrics.clinical import CLINICAL_FIELDS, binarize, clinical_values
from autosam.metrics.handlers import SunSegFrameMetricHandler
from autosam.metrics.levels import uint8_frame_values
from autosam.metrics.protocol import DICE_THRESHOLDS, prepare_frames, prepare_uint8_frames
from autosam.metrics.structure import structure_measure
from autosam.metrics.suite import SUNSEG_METRIC_NAMES, frame_values, summarize, summarize_cases, unpack
from autosam.metrics.sunseg import (
    EMeasure,
    FMeasure,
    MeanAbsoluteError,
    SMeasure,
    SunSegMetrics,
    ThresholdCurves,
    WeightedFMeasure,
)
from autosam.metrics.weighted_fmeasure import weighted_fmeasure

__all__ = [
    "SunSegMetrics",
    "SunSegFrameMetricHandler",
    "SMeasure",
    "EMeasure",
    "FMeasure",
    "WeightedFMeasure",
    "MeanAbsoluteError",
    "ThresholdCurves",
    "SUNSEG_METRIC_NAMES",
    "CLINICAL_FIELDS",
    "DICE_THRESHOLDS",
    "prepare_frames",
    "prepare_uint8_frames",
    "frame_values",
    "uint8_frame_values",
    "summarize",
    "summarize_cases",
    "unpack",
    "structure_measure",
    "weighted_fmeasure",
    "binarize",
    "clinical_values",
]
