"""The encoder g: image -> SAM prompt embeddings (dense 256 x h x w, optional sparse N x 256).

g reads the image in SAM's geometry: longest side resized to g's own input size, zero padding at
the bottom and right. The cells of its dense output therefore line up with the cells of SAM's image
embedding, whatever the two input sizes are. A backbone gives the 1/4, 1/8 and 1/16 features. The
fusion head merges them as the AutoSAM reference implementation does: two upsampling blocks with
skip connections, then a block to 256 channels and tanh. The result is resized to SAM's grid.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from autosam.networks.backbones import Backbone, create_backbone
from autosam.networks.geometry import check_image_batch, resize_longest_side_and_pad
from autosam.networks.sam import PROMPT_EMBED_DIM

__all__ = ["UpSkipBlock", "FusionHead", "SparseTokenHead", "AutoSAMEncoder"]

logger = logging.getLogger(__name__)


class UpSkipBlock(nn.Module):
    """Upsample to the skip feature's size, concatenate it, two 3x3 convolutions, BatchNorm, LeakyReLU.

    The two convolutions have no activation between them. This is the layout of the AutoSAM
    reference implementation (github.com/talshaharabany/AutoSAM, `models/base.py`), kept so that g
    has the same parameter count and behaviour as the published g.
    """

    def __init__(self, *, in_channels: int, skip_channels: int, out_channels: int) -> None:
        """
        Args:
            in_channels: channels of the deeper (coarser) input.
            skip_channels: channels of the skip feature at the target resolution.
            out_channels: channels of the output.
        """
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels + skip_channels, out_channels, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        x = torch.cat([x, skip], dim=1)
        return F.leaky_relu(self.norm(self.conv2(self.conv1(x))))


class FusionHead(nn.Module):
    """Fuse 1/4, 1/8 and 1/16 features into a B x 256 x H/4 x W/4 embedding in (-1, 1)."""

    def __init__(self, *, channels: Sequence[int], out_channels: int = PROMPT_EMBED_DIM) -> None:
        """
        Args:
            channels: channels of the 1/4, 1/8 and 1/16 features.
            out_channels: channels of the embedding (SAM's prompt dimension, 256).
        """
        super().__init__()
        c4, c8, c16 = channels
        self.up16 = UpSkipBlock(in_channels=c16, skip_channels=c8, out_channels=c8)
        self.up8 = UpSkipBlock(in_channels=c8, skip_channels=c4, out_channels=c4)
        self.conv1 = nn.Conv2d(c4, out_channels, kernel_size=3, padding=1)
        self.norm1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        x4, x8, x16 = features[:3]
        x = self.up16(x16, x8)  # B x c8 x H/8 x W/8
        x = self.up8(x, x4)  # B x c4 x H/4 x W/4
        x = F.relu(self.norm1(self.conv1(x)))
        return torch.tanh(self.conv2(x))  # B x 256 x H/4 x W/4


class SparseTokenHead(nn.Module):
    """Pool the deepest feature into N prompt tokens with N learned spatial attention maps."""

    def __init__(self, *, in_channels: int, num_tokens: int, token_dim: int = PROMPT_EMBED_DIM) -> None:
        """
        Args:
            in_channels: channels of the deepest backbone feature.
            num_tokens: number of sparse tokens N.
            token_dim: width of each token (SAM's prompt dimension, 256).
        """
        super().__init__()
        self.values = nn.Conv2d(in_channels, token_dim, kernel_size=3, padding=1)
        self.attention = nn.Conv2d(in_channels, num_tokens, kernel_size=1)

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        values = self.values(feature).flatten(2)  # B x C x hw
        weights = self.attention(feature).flatten(2).softmax(dim=-1)  # B x N x hw
        return weights @ values.transpose(1, 2)  # B x N x C


class AutoSAMEncoder(nn.Module):
    """g: B x 3 x H x W RGB in [0, 255] -> dense B x 256 x h x w and sparse B x N x 256 embeddings."""

    def __init__(
        self,
        *,
        encoder_name: str = "hardnet85",
        encoder_weights: str | None = None,
        input_size: int = 352,
        embedding_size: int | Sequence[int] = 64,
        num_sparse_tokens: int = 0,
    ) -> None:
        """
        Args:
            encoder_name: "hardnet85" or a timm model name with 1/4, 1/8 and 1/16 features.
            encoder_weights: None (random initialisation), a local weights file, or "imagenet"
                (download from the hub; see `create_backbone`).
            input_size: side of the square frame g reads (longest side resized, then padded).
            embedding_size: SAM's image-embedding grid (h, w), 64 for a 1024 px SAM.
            num_sparse_tokens: number N of sparse prompt tokens; 0 gives B x 0 x 256.
        """
        super().__init__()
        if input_size < 32:
            raise ValueError(f"encoder input_size must be at least 32 pixels, got {input_size}")
        if num_sparse_tokens < 0:
            raise ValueError(f"num_sparse_tokens must be >= 0, got {num_sparse_tokens}")
        if isinstance(embedding_size, int):
            embedding_size = (embedding_size, embedding_size)
        self.input_size = int(input_size)
        self.embedding_size = (int(embedding_size[0]), int(embedding_size[1]))
        self.num_sparse_tokens = int(num_sparse_tokens)

        # Sparse tokens read the 1/32 feature, as the reference implementation's sparse decoder does.
        reductions = (4, 8, 16, 32) if num_sparse_tokens else (4, 8, 16)
        self.backbone: Backbone = create_backbone(
            encoder_name, weights=encoder_weights, reductions=reductions, input_size=self.input_size
        )
        self.head = FusionHead(channels=self.backbone.channels[:3])
        self.sparse_head = (
            SparseTokenHead(in_channels=self.backbone.channels[-1], num_tokens=num_sparse_tokens)
            if num_sparse_tokens
            else None
        )

        mean = torch.tensor(self.backbone.pixel_mean) * 255.0
        std = torch.tensor(self.backbone.pixel_std) * 255.0
        self.register_buffer("pixel_mean", mean.view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", std.view(-1, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        image = check_image_batch(image)
        # B x 3 x S x S with S = input_size.
        x = resize_longest_side_and_pad(image, self.input_size, self.pixel_mean, self.pixel_std)
        features = self.backbone(x)

        dense = self.head(features)
        dense = F.interpolate(dense, size=self.embedding_size, mode="bilinear", align_corners=False)

        if self.sparse_head is None:
            sparse = dense.new_zeros(dense.shape[0], 0, dense.shape[1])
        else:
            sparse = self.sparse_head(features[-1])
        return dense, sparse
