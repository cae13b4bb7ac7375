"""Frozen Segment Anything Model: named configurations, construction and freezing.

`vit_b`, `vit_l` and `vit_h` are Meta's published configurations (the same hyper-parameters as
`segment_anything.build_sam`). `tiny` is a small configuration for tests and CPU demos: a 2-block
ViT of width 64 at 256 px. It keeps SAM's own prompt encoder and mask decoder, whose tensors
therefore have the shapes of the real models.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from functools import partial

import torch
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

from autosam.networks.sam_checkpoint import (
    SAM_CHECKPOINTS,
    check_sam_state_dict,
    download_sam_checkpoint,
    load_sam_state_dict,
    resize_position_embeddings,
)

__all__ = [
    "SamConfig",
    "SAM_CONFIGS",
    "SAM_PIXEL_MEAN",
    "SAM_PIXEL_STD",
    "PROMPT_EMBED_DIM",
    "build_sam",
    "freeze_module",
    "sam_state_hash",
]

logger = logging.getLogger(__name__)

# SAM normalises RGB in [0, 255] with the ImageNet statistics scaled to that range.
SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)
PROMPT_EMBED_DIM = 256
PATCH_SIZE = 16
# Seed of the random weights of a `tiny` SAM built without a checkpoint, so that every process
# builds the same model and cached image embeddings stay valid.
TINY_SEED = 0


@dataclass(frozen=True)
class SamConfig:
    """Hyper-parameters of one SAM image encoder; prompt encoder and mask decoder are shared."""

    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    window_size: int = 14
    image_size: int = 1024


SAM_CONFIGS: dict[str, SamConfig] = {
    "vit_b": SamConfig(embed_dim=768, depth=12, num_heads=12, global_attn_indexes=(2, 5, 8, 11)),
    "vit_l": SamConfig(embed_dim=1024, depth=24, num_heads=16, global_attn_indexes=(5, 11, 17, 23)),
    "vit_h": SamConfig(embed_dim=1280, depth=32, num_heads=16, global_attn_indexes=(7, 15, 23, 31)),
    "tiny": SamConfig(
        embed_dim=64, depth=2, num_heads=2, global_attn_indexes=(1,), window_size=8, image_size=256
    ),
}


def _create_sam(config: SamConfig, image_size: int) -> Sam:
    grid = image_size // PATCH_SIZE
    image_encoder = ImageEncoderViT(
        img_size=image_size,
        patch_size=PATCH_SIZE,
        embed_dim=config.embed_dim,
        depth=config.depth,
        num_heads=config.num_heads,
        mlp_ratio=4,
        out_chans=PROMPT_EMBED_DIM,
        qkv_bias=True,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        use_rel_pos=True,
        window_size=config.window_size,
        global_attn_indexes=config.global_attn_indexes,
    )
    prompt_encoder = PromptEncoder(
        embed_dim=PROMPT_EMBED_DIM,
        image_embedding_size=(grid, grid),
        input_image_size=(image_size, image_size),
        mask_in_chans=16,
    )
    mask_decoder = MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(depth=2, embedding_dim=PROMPT_EMBED_DIM, mlp_dim=2048, num_heads=8),
        transformer_dim=PROMPT_EMBED_DIM,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
    )
    return Sam(
        image_encoder=image_encoder,
        prompt_encoder=prompt_encoder,
        mask_decoder=mask_decoder,
        pixel_mean=list(SAM_PIXEL_MEAN),
        pixel_std=list(SAM_PIXEL_STD),
    )


def freeze_module(module: torch.nn.Module) -> torch.nn.Module:
    """Put `module` in eval mode and stop gradients to all its parameters; return it."""
    module.eval()
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module


def _load_checkpoint_into_new_sam(config: SamConfig, image_size: int, path: str, model_type: str) -> Sam:
    state_dict = load_sam_state_dict(path, model_type)

    # Building on the meta device skips the random initialisation of weights that the checkpoint
    # overwrites anyway (seconds for vit_h), and makes the shape check free.
    with torch.device("meta"):
        sam = _create_sam(config, image_size)
    state_dict = resize_position_embeddings(state_dict, sam)
    check_sam_state_dict(sam, state_dict, model_type=model_type, source=str(path))
    sam.load_state_dict(state_dict, strict=True, assign=True)

    # Non-persistent buffers are not in the checkpoint and are still on the meta device.
    sam.pixel_mean = torch.tensor(SAM_PIXEL_MEAN).view(-1, 1, 1)
    sam.pixel_std = torch.tensor(SAM_PIXEL_STD).view(-1, 1, 1)
    still_meta = [name for name, tensor in [*sam.named_parameters(), *sam.named_buffers()] if tensor.is_meta]
    if still_meta:
        raise RuntimeError(f"SAM tensors {still_meta} were not set from checkpoint '{path}'")
    return sam


def build_sam(
    model_type: str,
    checkpoint: str | os.PathLike | None = None,
    *,
    download: bool = False,
    cache_dir: str | os.PathLike | None = None,
    image_size: int | None = None,
) -> Sam:
    """Build a frozen SAM (eval mode, no parameter requires grad) on the CPU.

    Args:
        model_type: one of "vit_b", "vit_l", "vit_h" (Meta's configurations) or "tiny".
        checkpoint: path of a SAM state dict. Required for the vit_* types unless `download` is set.
            For "tiny", None gives seeded random weights and logs a warning.
        download: download Meta's official checkpoint when `checkpoint` is None or a missing file.
        cache_dir: folder for downloads; default `$AUTOSAM_CACHE` or `<torch hub dir>/checkpoints`.
        image_size: SAM input size in pixels, a multiple of 16 (default 1024, 256 for "tiny").
            A checkpoint trained at another size gets its position embeddings resampled.

    Raises:
        ValueError: unknown model type, invalid image size, a vit_* type without a checkpoint, or a
            checkpoint whose keys or shapes do not match `model_type`.
        FileNotFoundError: `checkpoint` does not exist and `download` is False.
        RuntimeError: `checkpoint` is corrupt or truncated.
    """
    if model_type not in SAM_CONFIGS:
        raise ValueError(f"unknown SAM model_type '{model_type}'; choose one of {sorted(SAM_CONFIGS)}")
    config = SAM_CONFIGS[model_type]
    image_size = config.image_size if image_size is None else int(image_size)
    if image_size <= 0 or image_size % PATCH_SIZE:
        raise ValueError(f"SAM image_size must be a positive multiple of {PATCH_SIZE}, got {image_size}")

    needs_download = checkpoint is None or not os.path.isfile(checkpoint)
    if download and needs_download:
        checkpoint = download_sam_checkpoint(model_type, checkpoint, cache_dir=cache_dir)

    if checkpoint is None:
        if model_type != "tiny":
            info = SAM_CHECKPOINTS[model_type]
            raise ValueError(
                f"SAM model_type='{model_type}' needs a checkpoint: pass the path of {info.file_name} "
                f"(from {info.url}), pass download=True to fetch it, or choose model_type='tiny' for a "
                "randomly initialised test model"
            )
        logger.warning(
            "building SAM model_type='tiny' with random weights (seed %d): for tests and demos only",
            TINY_SEED,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(TINY_SEED)
            sam = _create_sam(config, image_size)
    else:
        sam = _load_checkpoint_into_new_sam(config, image_size, os.fspath(checkpoint), model_type)
        logger.info("loaded SAM %s (%d px) from %s", model_type, image_size, checkpoint)

    return freeze_module(sam)


def sam_state_hash(sam: torch.nn.Module, length: int = 12) -> str:
    """Return the first `length` hex digits of the SHA-256 of SAM's state dict (names, shapes, bytes)."""
    digest = hashlib.sha256()
    for name, tensor in sam.state_dict().items():
        data = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{data.dtype}:{tuple(data.shape)};".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()[:length]
