"""Batched SAM mask decoding with one dense prompt per image.

`segment_anything`'s `MaskDecoder.predict_masks` treats the batch dimension of the prompts as
"prompts of one image" and repeats each image embedding once per prompt row. A batch of B images
with one prompt each therefore becomes B * B rows (and fails unless B == 1). `decode_masks` runs
the same submodules of the stock decoder (output tokens, two-way transformer, output upscaling,
hypernetwork MLPs, IoU head) with image i paired only with prompt row i.
"""

from __future__ import annotations

import torch
from segment_anything.modeling import MaskDecoder

__all__ = ["decode_masks"]


def decode_masks(
    mask_decoder: MaskDecoder,
    image_embeddings: torch.Tensor,
    image_pe: torch.Tensor,
    sparse_embeddings: torch.Tensor,
    dense_embeddings: torch.Tensor,
    *,
    multimask_output: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode one mask (or SAM's three multimask outputs) per image of a batch.

    Args:
        mask_decoder: SAM's mask decoder, whose weights are used as they are.
        image_embeddings: B x C x h x w output of SAM's image encoder.
        image_pe: 1 x C x h x w (or B x C x h x w) positional encoding, `prompt_encoder.get_dense_pe()`.
        sparse_embeddings: B x N x C prompt tokens; N may be 0.
        dense_embeddings: B x C x h x w dense prompt, added to the image embeddings.
        multimask_output: False returns SAM's single-mask output (mask token 0), the output SAM uses
            for an unambiguous prompt; True returns the three multimask outputs (tokens 1-3).

    Returns:
        low-resolution mask logits B x M x 4h x 4w and IoU predictions B x M, with M = 1 or 3.
    """
    batch_size = image_embeddings.shape[0]
    if sparse_embeddings.shape[0] != batch_size or dense_embeddings.shape[0] != batch_size:
        raise ValueError(
            f"decode_masks needs one prompt row per image: image_embeddings has batch size {batch_size}, "
            f"sparse_embeddings {sparse_embeddings.shape[0]}, dense_embeddings {dense_embeddings.shape[0]}"
        )

    # Output tokens (IoU token, then the mask tokens) followed by the prompt tokens: B x (1 + T + N) x C.
    output_tokens = torch.cat([mask_decoder.iou_token.weight, mask_decoder.mask_tokens.weight], dim=0)
    output_tokens = output_tokens.unsqueeze(0).expand(batch_size, -1, -1)
    tokens = torch.cat([output_tokens, sparse_embeddings.to(output_tokens.dtype)], dim=1)

    # One image embedding per prompt row (no repeat): B x C x h x w.
    src = image_embeddings + dense_embeddings
    pos_src = image_pe.expand(batch_size, -1, -1, -1)
    _, channels, height, width = src.shape

    # hs: B x (1 + T + N) x C, src: B x (h * w) x C.
    hs, src = mask_decoder.transformer(src, pos_src, tokens)
    iou_token_out = hs[:, 0, :]
    mask_slice = slice(1, mask_decoder.num_mask_tokens) if multimask_output else slice(0, 1)
    token_indices = range(mask_decoder.num_mask_tokens)[mask_slice]

    # Upscaled embedding: B x C/8 x 4h x 4w; one hypernetwork output per selected mask token: B x M x C/8.
    src = src.transpose(1, 2).reshape(batch_size, channels, height, width)
    upscaled = mask_decoder.output_upscaling(src)
    hyper_in = torch.stack(
        [mask_decoder.output_hypernetworks_mlps[i](hs[:, 1 + i, :]) for i in token_indices], dim=1
    )
    _, up_channels, up_height, up_width = upscaled.shape
    masks = hyper_in @ upscaled.reshape(batch_size, up_channels, up_height * up_width)
    masks = masks.reshape(batch_size, -1, up_height, up_width)

    iou_pred = mask_decoder.iou_prediction_head(iou_token_out)[:, mask_slice]
    return masks, iou_pred
