"""SAM's input geometry: resize the longest side, normalise, pad; and the inverse for logits.

An H x W image is resized so that its longest side equals the frame size S (the shorter side is
rounded half up, as `segment_anything.utils.transforms.ResizeLongestSide` does), normalised, and
zero-padded at the bottom and right to S x S. Logits predicted on that frame are mapped back by
upsampling to S x S, cropping the padding and resizing to H x W (`Sam.postprocess_masks`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["longest_side_shape", "resize_longest_side_and_pad", "postprocess_logits", "check_image_batch"]


def longest_side_shape(height: int, width: int, frame_size: int) -> tuple[int, int]:
    """Return the (height, width) after resizing the longest side to `frame_size`."""
    scale = frame_size / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def check_image_batch(image: torch.Tensor) -> torch.Tensor:
    """Check that `image` is B x 3 x H x W and return it as a floating-point tensor."""
    if image.ndim != 4 or image.shape[1] != 3:
        raise ValueError(f"expected an RGB image batch B x 3 x H x W, got shape {tuple(image.shape)}")
    if not image.is_floating_point():
        image = image.float()
    return image


def resize_longest_side_and_pad(
    image: torch.Tensor, frame_size: int, pixel_mean: torch.Tensor, pixel_std: torch.Tensor
) -> torch.Tensor:
    """Map a B x 3 x H x W batch to the normalised, zero-padded B x 3 x S x S frame (S = `frame_size`).

    `pixel_mean` and `pixel_std` are 3 x 1 x 1 tensors in the image's value range.
    """
    height, width = image.shape[-2:]
    new_height, new_width = longest_side_shape(height, width, frame_size)
    if (new_height, new_width) != (height, width):
        image = F.interpolate(
            image, (new_height, new_width), mode="bilinear", align_corners=False, antialias=True
        )

    image = (image - pixel_mean) / pixel_std
    return F.pad(image, (0, frame_size - new_width, 0, frame_size - new_height))


def postprocess_logits(logits: torch.Tensor, frame_size: int, output_size: Sequence[int]) -> torch.Tensor:
    """Map B x M x h x w logits on the padded frame back to B x M x H x W (`output_size` = (H, W))."""
    height, width = int(output_size[0]), int(output_size[1])
    valid_height, valid_width = longest_side_shape(height, width, frame_size)

    logits = F.interpolate(logits, (frame_size, frame_size), mode="bilinear", align_corners=False)
    logits = logits[..., :valid_height, :valid_width]
    return F.interpolate(logits, (height, width), mode="bilinear", align_corners=False)
