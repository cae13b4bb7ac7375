"""Networks of AutoSAM: the frozen SAM, the encoder g, the shallow decoder h and the full models."""

from __future__ import annotations

from autosam.networks.autosam_net import AutoSAMLightNet, AutoSAMNet, load_encoder_state_dict
from autosam.networks.backbones import create_backbone
from autosam.networks.decoding import decode_masks
from autosam.networks.encoder import AutoSAMEncoder, FusionHead
from autosam.networks.geometry import longest_side_shape, postprocess_logits, resize_longest_side_and_pad
from autosam.networks.sam import SAM_CONFIGS, build_sam, freeze_module, sam_state_hash
from autosam.networks.sam_checkpoint import SAM_CHECKPOINTS, download_sam_checkpoint, load_sam_state_dict
from autosam.networks.shallow_decoder import ShallowDecoder

__all__ = [
    "AutoSAMNet",
    "AutoSAMLightNet",
    "AutoSAMEncoder",
    "FusionHead",
    "ShallowDecoder",
    "SAM_CONFIGS",
    "SAM_CHECKPOINTS",
    "build_sam",
    "freeze_module",
    "sam_state_hash",
    "load_sam_state_dict",
    "download_sam_checkpoint",
    "load_encoder_state_dict",
    "create_backbone",
    "decode_masks",
    "longest_side_shape",
    "resize_longest_side_and_pad",
    "postprocess_logits",
]
