"""AutoSAM for MONAI: a trainable prompt encoder that drives a frozen Segment Anything Model."""

from __future__ import annotations

__version__ = "0.1.0"
