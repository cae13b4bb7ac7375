"""Training, validation and inference engines of the autosam bundle (MONAI / Ignite)."""

from __future__ import annotations

from autosam.engines.checkpoints import ResumeCheckpointLoader, TrainerCheckpointSaver, TrainingTimeLimit
from autosam.engines.config_checks import (
    ConfigError,
    check_bundle_config,
    check_datalist,
    check_dataset_dir,
    check_encoder_name,
    check_no_spatial_augmentation,
    check_sam_checkpoint,
)
from autosam.engines.datalists import inference_items, prepare_datalist, select_split
from autosam.engines.embedding_cache import EmbeddingCache, image_content_key
from autosam.engines.history import EpochHistoryLogger, read_history
from autosam.engines.metric_handler import SunSegMetricHandler, to_uint8_frame
from autosam.engines.prepare_batch import AutoSAMPrepareBatch
from autosam.engines.report import EvaluationReport, format_metric_table
from autosam.engines.transforms import ReloadOriginald
from autosam.engines.utils import as_bool, default_bundle_root, from_engine_thresholded, latest_checkpoint
from autosam.engines.writer import (
    PredictionWriter,
    check_output_dir,
    list_input_files,
    overlay_mask,
    relative_output_path,
)

__all__ = [
    "AutoSAMPrepareBatch",
    "ConfigError",
    "EmbeddingCache",
    "EpochHistoryLogger",
    "EvaluationReport",
    "PredictionWriter",
    "ReloadOriginald",
    "ResumeCheckpointLoader",
    "SunSegMetricHandler",
    "TrainerCheckpointSaver",
    "TrainingTimeLimit",
    "as_bool",
    "check_bundle_config",
    "check_datalist",
    "check_dataset_dir",
    "check_encoder_name",
    "check_no_spatial_augmentation",
    "check_output_dir",
    "check_sam_checkpoint",
    "default_bundle_root",
    "format_metric_table",
    "from_engine_thresholded",
    "image_content_key",
    "inference_items",
    "latest_checkpoint",
    "list_input_files",
    "overlay_mask",
    "prepare_datalist",
    "read_history",
    "relative_output_path",
    "select_split",
    "to_uint8_frame",
]
