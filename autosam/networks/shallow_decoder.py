"""The shallow decoder h: g's dense embedding -> mask logits, without SAM.

Two stride-2 transposed convolutions (256 -> 64 -> 16 channels, each followed by LayerNorm2d and
GELU, the layout of SAM's own mask upscaling) and a 1x1 convolution to one channel turn the
B x 256 x h x w embedding into B x 1 x 4h x 4w logits: 151,809 parameters.
"""

from __future__ import annotations

import torch
from segment_anything.modeling.common import LayerNorm2d
from torch import nn

from autosam.networks.sam import PROMPT_EMBED_DIM

__all__ = ["ShallowDecoder"]


class ShallowDecoder(nn.Module):
    """h: B x 256 x h x w embedding -> B x 1 x 4h x 4w logits."""

    def __init__(
        self, *, in_channels: int = PROMPT_EMBED_DIM, hidden_channels: tuple[int, int] = (64, 16)
    ) -> None:
        """
        Args:
            in_channels: channels of the dense embedding (256).
            hidden_channels: channels after the first and the second upsampling.
        """
        super().__init__()
        first, second = hidden_channels
        # kernel 3, padding 1 and output_padding 1 give exactly twice the input size.
        self.up1 = nn.ConvTranspose2d(
            in_channels, first, kernel_size=3, stride=2, padding=1, output_padding=1
        )
        self.norm1 = LayerNorm2d(first)
        self.up2 = nn.ConvTranspose2d(first, second, kernel_size=2, stride=2)
        self.norm2 = LayerNorm2d(second)
        self.out = nn.Conv2d(second, 1, kernel_size=1)
        self.act = nn.GELU()

    def forward(self, dense_embeddings: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm1(self.up1(dense_embeddings)))  # B x 64 x 2h x 2w
        x = self.act(self.norm2(self.up2(x)))  # B x 16 x 4h x 4w
        return self.out(x)  # B x 1 x 4h x 4w
