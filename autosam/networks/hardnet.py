"""HarDNet-85, the backbone of AutoSAM's encoder g.

Built from the specification in P. Chao, C. Kao, Y. Ruan, C. Huang, Y. Lin, "HarDNet: A Low Memory
Traffic Network", ICCV 2019: a stem (3x3/2 convolution to 48 channels, 3x3 convolution to 96,
3x3/2 max-pool) and six harmonic dense blocks, each followed by a 1x1 transition. Every
convolution is Conv2d (no bias) + BatchNorm2d + ReLU6.

In a harmonic dense block, layer l (counted from 1, layer 0 being the block input) reads the
concatenation of layers l - 2^i for every 2^i that divides l. Its width is the growth rate k times
m^(n - 1), m = 1.7 being the channel multiplier and n the number of such inputs, truncated to an
even number. The block outputs the concatenation of its odd layers and its last layer.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from autosam.networks.backbones import Backbone

__all__ = [
    "harmonic_links",
    "harmonic_layer_channels",
    "ConvNormAct",
    "HarmonicDenseBlock",
    "HarDNet85",
    "HarDNetBackbone",
    "convert_reference_hardnet_state_dict",
    "HARDNET85_URL",
]

logger = logging.getLogger(__name__)

STEM_CHANNELS = (48, 96)
GROWTH_RATES = (24, 24, 28, 36, 48, 256)
NUM_LAYERS = (8, 16, 16, 16, 16, 4)
TRANSITION_CHANNELS = (192, 256, 320, 480, 720, 1280)
CHANNEL_MULTIPLIER = 1.7
# ImageNet weights published by the HarDNet authors (github.com/PingoLH/Pytorch-HarDNet).
HARDNET85_URL = "https://ping-chao.com/hardnet/hardnet85-a28faa00.pth"


def harmonic_links(layer: int) -> list[int]:
    """Return the earlier layers that layer `layer` (>= 1) of a harmonic dense block reads."""
    links = []
    step = 1
    while layer % step == 0:
        links.append(layer - step)
        step *= 2
    return links


def harmonic_layer_channels(layer: int, in_channels: int, growth_rate: int, multiplier: float) -> int:
    """Return the output channels of layer `layer` (layer 0 is the block input with `in_channels`)."""
    if layer == 0:
        return in_channels
    channels = float(growth_rate)
    for _ in harmonic_links(layer)[1:]:
        channels *= multiplier
    return int(channels + 1) // 2 * 2


class ConvNormAct(nn.Sequential):
    """Conv2d without bias, BatchNorm2d and ReLU6."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=False
        )
        self.norm = nn.BatchNorm2d(out_channels)
        self.act = nn.ReLU6(inplace=True)


class HarmonicDenseBlock(nn.Module):
    """A harmonic dense block of 3x3 ConvNormAct layers with the harmonic link rule."""

    def __init__(self, *, in_channels: int, growth_rate: int, num_layers: int, multiplier: float) -> None:
        """
        Args:
            in_channels: channels of the block input.
            growth_rate: base width k of a layer.
            num_layers: number of layers.
            multiplier: width multiplier m per additional input of a layer.
        """
        super().__init__()
        self.links = [harmonic_links(layer) for layer in range(1, num_layers + 1)]
        widths = [
            harmonic_layer_channels(layer, in_channels, growth_rate, multiplier)
            for layer in range(num_layers + 1)
        ]
        self.layers = nn.ModuleList(
            ConvNormAct(sum(widths[i] for i in links), widths[layer])
            for layer, links in enumerate(self.links, start=1)
        )
        self.output_layers = [
            layer for layer in range(1, num_layers + 1) if layer % 2 == 1 or layer == num_layers
        ]
        self.out_channels = sum(widths[layer] for layer in self.output_layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = [x]
        for layer, links in zip(self.layers, self.links, strict=True):
            inputs = outputs[links[0]] if len(links) == 1 else torch.cat([outputs[i] for i in links], dim=1)
            outputs.append(layer(inputs))
        return torch.cat([outputs[layer] for layer in self.output_layers], dim=1)


class HarDNet85(nn.Module):
    """HarDNet-85 without its classifier: features at 1/4 (192), 1/8 (320), 1/16 (720), 1/32 (1280).

    `stages[s]` ends at the level of reduction 4 * 2^s, so a caller that needs only the shallower
    levels skips the deeper stages.
    """

    reductions = (4, 8, 16, 32)
    channels = (
        TRANSITION_CHANNELS[0],
        TRANSITION_CHANNELS[2],
        TRANSITION_CHANNELS[4],
        TRANSITION_CHANNELS[5],
    )

    def __init__(self) -> None:
        super().__init__()
        stem = [
            ConvNormAct(3, STEM_CHANNELS[0], kernel_size=3, stride=2),
            ConvNormAct(STEM_CHANNELS[0], STEM_CHANNELS[1], kernel_size=3),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        ]

        stages: list[list[nn.Module]] = [stem, [], [], []]
        channels = STEM_CHANNELS[1]
        stage = 0
        for index, (growth, layers, width) in enumerate(
            zip(GROWTH_RATES, NUM_LAYERS, TRANSITION_CHANNELS, strict=True)
        ):
            if index in (1, 3, 5):  # down-sampling after blocks 1, 3 and 5 starts the next stage
                stage += 1
                stages[stage].append(nn.MaxPool2d(kernel_size=2, stride=2))
            block = HarmonicDenseBlock(
                in_channels=channels, growth_rate=growth, num_layers=layers, multiplier=CHANNEL_MULTIPLIER
            )
            stages[stage].append(block)
            if index == len(GROWTH_RATES) - 1:
                stages[stage].append(nn.Dropout(0.1))  # HarDNet-85 drops out before its last transition
            stages[stage].append(ConvNormAct(block.out_channels, width, kernel_size=1))
            channels = width
        self.stages = nn.ModuleList(nn.Sequential(*modules) for modules in stages)

    def forward(self, x: torch.Tensor, num_levels: int = 4) -> list[torch.Tensor]:
        """Return the first `num_levels` feature maps (1/4, 1/8, 1/16, 1/32)."""
        features = []
        for stage in self.stages[:num_levels]:
            x = stage(x)
            features.append(x)
        return features


def convert_reference_hardnet_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a state dict of the HarDNet authors' model (`base.<i>.*`) to `HarDNet85` names.

    The authors' model is one flat list: the stem at 0-2, then each block followed by its transition
    and max-pool (and a dropout before the last transition). Index 19 is the classifier, which is
    dropped. The stages here start at indices 0, 5, 10 and 15 of that list.
    """
    stage_starts = (0, 5, 10, 15)
    converted = {}
    for key, value in state_dict.items():
        prefix, index, rest = key.split(".", 2)
        if prefix != "base":
            raise ValueError(f"unexpected key '{key}' in a HarDNet state dict; expected 'base.<index>.*'")
        index = int(index)
        if index >= 19:
            continue
        stage = max(s for s, start in enumerate(stage_starts) if start <= index)
        converted[f"stages.{stage}.{index - stage_starts[stage]}.{rest}"] = value
    return converted


def _load_hardnet_weights(model: HarDNet85, weights: str) -> None:
    if os.path.isfile(weights):
        state_dict = torch.load(weights, map_location="cpu", weights_only=True)
    elif weights == "imagenet":
        # NOTE: the authors publish no checksum. The 8 hex digits in the file name are not known to
        # be a SHA-256 prefix, so the file is checked only by the strict key and shape match below.
        logger.info("downloading HarDNet-85 ImageNet weights from %s", HARDNET85_URL)
        state_dict = torch.hub.load_state_dict_from_url(HARDNET85_URL, map_location="cpu", weights_only=True)
    else:
        raise FileNotFoundError(
            f"HarDNet-85 weights '{weights}' not found; pass a local file (for example the authors' ImageNet "
            f"weights from {HARDNET85_URL}), 'imagenet' to download them, or None for random initialisation"
        )

    if isinstance(state_dict, Mapping) and any(key.startswith("base.") for key in state_dict):
        state_dict = convert_reference_hardnet_state_dict(state_dict)
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as error:
        raise RuntimeError(
            f"HarDNet-85 weights '{weights}' do not match the HarDNet-85 layout: {error}"
        ) from error
    logger.info("loaded HarDNet-85 weights from %s", weights)


class HarDNetBackbone(Backbone):
    """HarDNet-85 as a `Backbone`; the whole trunk is built so that its weights load unchanged.

    When the 1/32 level is not requested, the last stage is skipped in `forward` and its parameters
    are frozen, since they cannot influence the output.
    """

    def __init__(self, *, reductions: Sequence[int] = (4, 8, 16), weights: str | None = None) -> None:
        """
        Args:
            reductions: levels to return, a prefix of (4, 8, 16, 32).
            weights: None (random initialisation), a local file of the authors' ImageNet weights or
                of `HarDNet85().state_dict()`, or "imagenet" to download the authors' weights.
        """
        super().__init__()
        reductions = tuple(int(r) for r in reductions)
        if reductions != HarDNet85.reductions[: len(reductions)]:
            raise ValueError(f"HarDNet-85 returns levels {HarDNet85.reductions}; requested {reductions}")
        self.trunk = HarDNet85()
        if weights is not None:
            _load_hardnet_weights(self.trunk, weights)
        self.reductions = reductions
        self.channels = HarDNet85.channels[: len(reductions)]
        for stage in self.trunk.stages[len(reductions) :]:
            for parameter in stage.parameters():
                parameter.requires_grad_(False)

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        return self.trunk(image, num_levels=len(self.reductions))
