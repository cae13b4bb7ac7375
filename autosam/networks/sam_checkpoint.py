"""Reading, checking and downloading Segment Anything checkpoints.

Meta publishes SAM checkpoints as plain state dicts (`image_encoder.*`, `prompt_encoder.*`,
`mask_decoder.*`). This module reads such a file without executing pickled code and compares it with
the model before loading, so a wrong file fails with the first mismatching key and both shapes.
It also resamples the position embeddings when the model runs at another input size.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

__all__ = [
    "SamCheckpointInfo",
    "SAM_CHECKPOINTS",
    "load_sam_state_dict",
    "check_sam_state_dict",
    "guess_sam_model_type",
    "resize_position_embeddings",
    "download_sam_checkpoint",
    "file_digest",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamCheckpointInfo:
    """Download URL and MD5 digest of an official checkpoint."""

    url: str
    md5: str

    @property
    def file_name(self) -> str:
        """File name of the checkpoint in the download URL."""
        return self.url.rsplit("/", 1)[-1]


# NOTE: Meta publishes no SHA-256 digests for these files. The six hex digits in each file name are
# the start of the file's MD5 digest (not of its SHA-256), so a SHA-256 prefix check would reject the
# genuine files. The full MD5 digests below are the values that other public download scripts check
# against, and they agree with the file-name prefixes. They have not been recomputed here, because
# this project's test machines are offline.
SAM_CHECKPOINTS: dict[str, SamCheckpointInfo] = {
    "vit_b": SamCheckpointInfo(
        url="https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
        md5="01ec64d29a2fca3f0661936605ae66f8",
    ),
    "vit_l": SamCheckpointInfo(
        url="https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
        md5="0b3195507c641ddb6910d2bb5adee89c",
    ),
    "vit_h": SamCheckpointInfo(
        url="https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
        md5="4b8939a88964f0f4ff5f5b2642c598a6",
    ),
}

# Patch-embedding width of each configuration, used to name the model type a checkpoint belongs to.
_EMBED_DIM_TO_MODEL_TYPE = {64: "tiny", 768: "vit_b", 1024: "vit_l", 1280: "vit_h"}
_PATCH_EMBED_KEY = "image_encoder.patch_embed.proj.weight"
_POS_EMBED_KEY = "image_encoder.pos_embed"

# Exceptions torch.load raises on a truncated or otherwise unreadable file. A file cut inside the
# zip archive can raise OSError (EINVAL) from the archive reader.
_UNREADABLE_FILE_ERRORS = (
    RuntimeError,
    EOFError,
    ValueError,
    OSError,
    pickle.UnpicklingError,
    zipfile.BadZipFile,
)


def file_digest(path: str | os.PathLike, algorithm: str = "sha256", chunk_size: int = 1 << 20) -> str:
    """Compute the hex digest of a file, reading it in chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _download_hint(model_type: str) -> str:
    info = SAM_CHECKPOINTS.get(model_type)
    if info is None:
        return "save the state dict of a model built with the same configuration"
    return f"download it again from {info.url} (or pass download=True)"


def load_sam_state_dict(path: str | os.PathLike, model_type: str) -> dict[str, torch.Tensor]:
    """Read a SAM checkpoint file into a state dict on the CPU.

    Raises:
        FileNotFoundError: `path` does not exist.
        RuntimeError: the file cannot be read as a checkpoint (corrupt or truncated).
        ValueError: the file contains no state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"SAM checkpoint '{path}' not found; pass the path of a {model_type} checkpoint, "
            f"{_download_hint(model_type)}, or choose model_type='tiny' for a randomly initialised test model"
        )

    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except PermissionError:
        raise
    except _UNREADABLE_FILE_ERRORS as error:
        raise RuntimeError(
            f"SAM checkpoint '{path}' ({path.stat().st_size} bytes) cannot be read, so it is corrupt or "
            f"truncated: {str(error).rstrip('.')}. Delete it and {_download_hint(model_type)}"
        ) from error

    # Checkpoints written by training frameworks wrap the state dict in an entry.
    if isinstance(loaded, Mapping):
        for wrapper_key in ("model", "state_dict"):
            if wrapper_key in loaded and isinstance(loaded[wrapper_key], Mapping):
                loaded = loaded[wrapper_key]
                break
    if not isinstance(loaded, Mapping) or not all(
        isinstance(value, torch.Tensor) for value in loaded.values()
    ):
        raise ValueError(
            f"SAM checkpoint '{path}' contains a {type(loaded).__name__}, not a state dict of tensors"
        )
    return dict(loaded)


def guess_sam_model_type(state_dict: Mapping[str, torch.Tensor]) -> str | None:
    """Name the SAM configuration whose image encoder width matches the checkpoint, if any."""
    patch_weight = state_dict.get(_PATCH_EMBED_KEY)
    if patch_weight is None or patch_weight.ndim != 4:
        return None
    return _EMBED_DIM_TO_MODEL_TYPE.get(int(patch_weight.shape[0]))


def check_sam_state_dict(
    model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], *, model_type: str, source: str
) -> None:
    """Raise a ValueError naming the first key whose presence or shape differs between model and checkpoint."""
    expected = model.state_dict()
    guessed = guess_sam_model_type(state_dict)
    if guessed is not None and guessed != model_type:
        hint = f"; the checkpoint looks like model_type='{guessed}'"
    else:
        hint = f"; use a {model_type} checkpoint or the model_type the checkpoint was saved from"

    for key, tensor in expected.items():
        if key not in state_dict:
            raise ValueError(
                f"SAM checkpoint '{source}' does not match model_type='{model_type}': key '{key}' is missing{hint}"
            )
        found_shape = tuple(state_dict[key].shape)
        if found_shape != tuple(tensor.shape):
            raise ValueError(
                f"SAM checkpoint '{source}' does not match model_type='{model_type}': '{key}' has shape "
                f"{found_shape} in the checkpoint but {tuple(tensor.shape)} in the model{hint}"
            )
    for key in state_dict:
        if key not in expected:
            raise ValueError(
                f"SAM checkpoint '{source}' does not match model_type='{model_type}': unexpected key '{key}'{hint}"
            )


def resize_position_embeddings(
    state_dict: dict[str, torch.Tensor], model: torch.nn.Module
) -> dict[str, torch.Tensor]:
    """Adapt the absolute and global relative position embeddings to the model's patch grid.

    A checkpoint trained at 1024 px stores a 64 x 64 absolute position embedding and relative
    position tables of length 2 * 64 - 1 in its global-attention blocks. A model built for another
    input size needs them resampled: bicubic for the 2-D grid, linear for the 1-D tables, the same
    resampling SAM itself applies to relative positions whose length differs at run time.
    """
    expected = model.state_dict()
    if _POS_EMBED_KEY not in state_dict or _POS_EMBED_KEY not in expected:
        return state_dict
    if state_dict[_POS_EMBED_KEY].shape == expected[_POS_EMBED_KEY].shape:
        return state_dict
    if state_dict[_POS_EMBED_KEY].shape[-1] != expected[_POS_EMBED_KEY].shape[-1]:
        return state_dict  # another encoder width: check_sam_state_dict reports it

    resized = dict(state_dict)
    old_grid = tuple(state_dict[_POS_EMBED_KEY].shape[1:3])
    new_grid = tuple(expected[_POS_EMBED_KEY].shape[1:3])

    # 1 x H x W x C -> 1 x C x H x W for interpolation, then back.
    grid = state_dict[_POS_EMBED_KEY].permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=new_grid, mode="bicubic", align_corners=False)
    resized[_POS_EMBED_KEY] = grid.permute(0, 2, 3, 1).to(state_dict[_POS_EMBED_KEY].dtype)

    for key, tensor in state_dict.items():
        is_rel_pos = key.endswith(".attn.rel_pos_h") or key.endswith(".attn.rel_pos_w")
        if not is_rel_pos or key not in expected or expected[key].shape == tensor.shape:
            continue
        # L x C -> 1 x C x L for interpolation, then back.
        table = tensor.float().t().unsqueeze(0)
        table = F.interpolate(table, size=expected[key].shape[0], mode="linear", align_corners=False)
        resized[key] = table.squeeze(0).t().to(tensor.dtype)

    logger.info("resampled SAM position embeddings from a %s to a %s patch grid", old_grid, new_grid)
    return resized


def default_cache_dir() -> Path:
    """Folder for downloaded checkpoints: `$AUTOSAM_CACHE`, else `<torch hub dir>/checkpoints`."""
    if "AUTOSAM_CACHE" in os.environ:
        return Path(os.environ["AUTOSAM_CACHE"])
    return Path(torch.hub.get_dir()) / "checkpoints"


def download_sam_checkpoint(
    model_type: str,
    destination: str | os.PathLike | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """Download Meta's official checkpoint for `model_type` and verify its MD5 digest.

    The file goes to `destination`, or else to `cache_dir` (default: see `default_cache_dir`) under
    its official name. A file already there is used as it is. A download whose digest differs is
    deleted and raises a RuntimeError.
    """
    if model_type not in SAM_CHECKPOINTS:
        raise ValueError(
            f"no official checkpoint for model_type='{model_type}'; choose one of {sorted(SAM_CHECKPOINTS)}"
        )
    info = SAM_CHECKPOINTS[model_type]
    if destination is None:
        destination = Path(cache_dir or default_cache_dir()) / info.file_name
    destination = Path(destination)
    if destination.is_file():
        return destination

    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".partial")
    logger.info("downloading %s to %s", info.url, destination)
    torch.hub.download_url_to_file(info.url, str(partial), progress=True)

    md5 = file_digest(partial, "md5")
    if md5 != info.md5:
        partial.unlink()
        raise RuntimeError(
            f"download of {info.url} has MD5 {md5}, expected {info.md5}; the file was deleted, try again"
        )
    partial.replace(destination)
    logger.info("verified %s (MD5 %s, SHA-256 %s)", destination, md5, file_digest(destination))
    return destination
