"""AutoSAMNet (g -> frozen SAM mask decoder) and AutoSAMLightNet (g -> shallow decoder h).

Both take B x 3 x H x W RGB in [0, 255] and return B x 1 x H x W logits at the input size.
Probabilities are `sigmoid(logits)`, with no per-image rescaling.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import torch
from torch import nn

from autosam.networks.decoding import decode_masks
from autosam.networks.encoder import AutoSAMEncoder
from autosam.networks.geometry import check_image_batch, postprocess_logits, resize_longest_side_and_pad
from autosam.networks.sam import PROMPT_EMBED_DIM, build_sam, freeze_module, sam_state_hash
from autosam.networks.shallow_decoder import ShallowDecoder

__all__ = ["AutoSAMNet", "AutoSAMLightNet", "load_encoder_state_dict"]

logger = logging.getLogger(__name__)

_SAM_PREFIX = "sam."


class AutoSAMNet(nn.Module):
    """g produces SAM's prompt embeddings; the frozen SAM mask decoder turns them into logits.

    SAM stays frozen: its parameters never require grad, it stays in eval mode under `train()`,
    and its image embeddings are computed without autograd. `state_dict()` leaves SAM out, so a
    checkpoint of this module contains only the trainable tensors (g and the optional logit affine).
    Gradients of a loss on the logits flow through SAM's mask decoder into g.
    """

    def __init__(
        self,
        *,
        sam_model_type: str = "vit_b",
        sam_checkpoint: str | None = None,
        sam_input_size: int | None = None,
        encoder_name: str = "hardnet85",
        encoder_weights: str | None = None,
        encoder_input_size: int = 352,
        num_sparse_tokens: int = 0,
        learn_logit_affine: bool = False,
        download: bool = False,
    ) -> None:
        """
        Args:
            sam_model_type: "vit_b", "vit_l", "vit_h", or "tiny" (random weights, tests and demos).
            sam_checkpoint: path of the SAM checkpoint; required for vit_* unless `download` is set.
            sam_input_size: SAM input size in pixels (default 1024, 256 for "tiny").
            encoder_name: backbone of g, "hardnet85" or a timm model name.
            encoder_weights: backbone weights: None, a local file, or "imagenet" (downloads).
            encoder_input_size: side of the square frame g reads (352 in the AutoSAM paper).
            num_sparse_tokens: sparse prompt tokens produced by g (0: dense prompt only).
            learn_logit_affine: learn a scale and a bias applied to the decoder's logits.
            download: download Meta's SAM checkpoint if `sam_checkpoint` is not given or missing.
        """
        super().__init__()
        self.sam_model_type = sam_model_type
        self.sam = build_sam(sam_model_type, sam_checkpoint, download=download, image_size=sam_input_size)
        self.sam_input_size = int(self.sam.image_encoder.img_size)
        self.embedding_size = tuple(int(s) for s in self.sam.prompt_encoder.image_embedding_size)

        self.encoder = AutoSAMEncoder(
            encoder_name=encoder_name,
            encoder_weights=encoder_weights,
            input_size=encoder_input_size,
            embedding_size=self.embedding_size,
            num_sparse_tokens=num_sparse_tokens,
        )

        self.logit_scale: nn.Parameter | None = None
        self.logit_bias: nn.Parameter | None = None
        if learn_logit_affine:
            self.logit_scale = nn.Parameter(torch.ones(()))
            self.logit_bias = nn.Parameter(torch.zeros(()))

        self._sam_config_id: str | None = None
        # Older torch releases have the state-dict post hook only under its private name.
        register_post_hook = (
            getattr(self, "register_state_dict_post_hook", None) or self._register_state_dict_hook
        )
        register_post_hook(_drop_sam_entries)
        self.register_load_state_dict_pre_hook(_keep_current_sam_entries)

    def train(self, mode: bool = True) -> AutoSAMNet:
        super().train(mode)
        self.sam.eval()
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters the optimiser should update (g and the logit affine; never SAM's)."""
        return [parameter for parameter in self.parameters() if parameter.requires_grad]

    @property
    def sam_config_id(self) -> str:
        """SAM type, input size and a hash of SAM's weights, e.g. "vit_b-1024px-3f2a9c0d1e4b"."""
        if self._sam_config_id is None:
            self._sam_config_id = f"{self.sam_model_type}-{self.sam_input_size}px-{sam_state_hash(self.sam)}"
        return self._sam_config_id

    @torch.no_grad()
    def embed_images(self, image: torch.Tensor) -> torch.Tensor:
        """Compute SAM's image embeddings, B x 256 x h x w, without autograd."""
        image = check_image_batch(image)
        frame = resize_longest_side_and_pad(
            image, self.sam_input_size, self.sam.pixel_mean, self.sam.pixel_std
        )
        return self.sam.image_encoder(frame)

    def forward(self, image: torch.Tensor, image_embeddings: torch.Tensor | None = None) -> torch.Tensor:
        """Segment a batch: B x 3 x H x W RGB in [0, 255] -> B x 1 x H x W logits.

        `image_embeddings` (from `embed_images` on the same images) skips SAM's image encoder.
        """
        image = check_image_batch(image)
        if image_embeddings is None:
            image_embeddings = self.embed_images(image)
        else:
            image_embeddings = self._check_image_embeddings(image_embeddings, image.shape[0])

        dense_embeddings, sparse_embeddings = self.encoder(image)
        low_res_logits, _ = decode_masks(
            self.sam.mask_decoder,
            image_embeddings,
            self.sam.prompt_encoder.get_dense_pe(),
            sparse_embeddings,
            dense_embeddings,
            multimask_output=False,
        )  # B x 1 x 4h x 4w

        if self.logit_scale is not None:
            low_res_logits = low_res_logits * self.logit_scale + self.logit_bias
        return postprocess_logits(low_res_logits, self.sam_input_size, image.shape[-2:])

    def _check_image_embeddings(self, image_embeddings: torch.Tensor, batch_size: int) -> torch.Tensor:
        expected = (batch_size, PROMPT_EMBED_DIM, *self.embedding_size)
        if tuple(image_embeddings.shape) != expected:
            raise ValueError(
                f"image_embeddings have shape {tuple(image_embeddings.shape)}, expected {expected} for SAM "
                f"'{self.sam_config_id}'; compute them with embed_images() of the same SAM configuration"
            )
        decoder_dtype = self.sam.mask_decoder.iou_token.weight.dtype
        return image_embeddings.detach().to(decoder_dtype)


def _drop_sam_entries(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    # SAM's weights come from its own checkpoint, so they are never saved with g.
    for key in [key for key in state_dict if key.startswith(prefix + _SAM_PREFIX)]:
        del state_dict[key]


def _keep_current_sam_entries(
    module: AutoSAMNet,
    state_dict: dict,
    prefix: str,
    local_metadata,
    strict,
    missing_keys,
    unexpected_keys,
    error_msgs,
) -> None:
    # A state dict of g alone loads with strict=True because SAM's current tensors are filled in;
    # SAM entries in the dict (written by other code) are ignored for the same reason.
    ignored = [key for key in state_dict if key.startswith(prefix + _SAM_PREFIX)]
    if ignored:
        logger.warning(
            "ignoring %d SAM entries in the state dict; SAM weights come from sam_checkpoint", len(ignored)
        )
    for name, tensor in module.sam.state_dict().items():
        state_dict[prefix + _SAM_PREFIX + name] = tensor


def _unwrap_checkpoint(loaded: object, path: str) -> Mapping[str, torch.Tensor]:
    if isinstance(loaded, Mapping):
        for wrapper_key in ("model", "network", "state_dict"):
            if wrapper_key in loaded and isinstance(loaded[wrapper_key], Mapping):
                return loaded[wrapper_key]
        return loaded
    raise ValueError(f"checkpoint '{path}' contains a {type(loaded).__name__}, not a state dict")


def load_encoder_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read the `encoder.*` tensors (g) of an AutoSAMNet checkpoint, without the prefix.

    The file is a raw state dict or a dict with a "model" or "network" entry, as MONAI's
    CheckpointSaver writes.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"encoder checkpoint '{path}' not found; pass a checkpoint written by training AutoSAMNet"
        )
    state_dict = _unwrap_checkpoint(torch.load(path, map_location="cpu", weights_only=True), path)

    prefix = "encoder."
    encoder_state = {key[len(prefix) :]: value for key, value in state_dict.items() if key.startswith(prefix)}
    if not encoder_state:
        first_keys = list(state_dict)[:3]
        raise ValueError(
            f"checkpoint '{path}' has no 'encoder.*' entries (first keys: {first_keys}); "
            "pass a checkpoint of AutoSAMNet"
        )
    return encoder_state


class AutoSAMLightNet(nn.Module):
    """g followed by the shallow decoder h: segmentation without running SAM."""

    def __init__(
        self,
        *,
        encoder_name: str = "hardnet85",
        encoder_weights: str | None = None,
        encoder_input_size: int = 352,
        embedding_size: int = 64,
        sam_input_size: int = 1024,
        encoder_checkpoint: str | None = None,
        freeze_encoder: bool = True,
    ) -> None:
        """
        Args:
            encoder_name: backbone of g, "hardnet85" or a timm model name.
            encoder_weights: backbone weights: None, a local file, or "imagenet" (downloads).
            encoder_input_size: side of the square frame g reads.
            embedding_size: side of the dense embedding grid (SAM's: 64 for 1024 px, 16 for "tiny").
            sam_input_size: SAM frame size the embedding grid stands for; sets how padding is cropped.
            encoder_checkpoint: AutoSAMNet checkpoint whose `encoder.*` tensors are loaded into g.
            freeze_encoder: keep g frozen (eval mode, no gradients) and train only h.
        """
        super().__init__()
        self.sam_input_size = int(sam_input_size)
        self.freeze_encoder = freeze_encoder
        self.encoder = AutoSAMEncoder(
            encoder_name=encoder_name,
            encoder_weights=encoder_weights,
            input_size=encoder_input_size,
            embedding_size=embedding_size,
        )
        if encoder_checkpoint is not None:
            self.encoder.load_state_dict(load_encoder_state_dict(encoder_checkpoint), strict=True)
            logger.info("loaded encoder g from %s", encoder_checkpoint)
        if freeze_encoder:
            freeze_module(self.encoder)
        self.decoder = ShallowDecoder()

    def train(self, mode: bool = True) -> AutoSAMLightNet:
        super().train(mode)
        if self.freeze_encoder:
            self.encoder.eval()
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters the optimiser should update (h, and g unless frozen)."""
        return [parameter for parameter in self.parameters() if parameter.requires_grad]

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Segment a batch: B x 3 x H x W RGB in [0, 255] -> B x 1 x H x W logits."""
        image = check_image_batch(image)
        dense_embeddings, _ = self.encoder(image)
        low_res_logits = self.decoder(dense_embeddings)  # B x 1 x 4h x 4w
        return postprocess_logits(low_res_logits, self.sam_input_size, image.shape[-2:])
