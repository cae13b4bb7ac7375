"""Multi-scale backbones for the encoder g: the package's HarDNet-85 or any timm model by name.

A backbone returns one feature map per requested reduction (4, 8, 16 and optionally 32, relative
to its input) and states its channels and the pixel statistics its weights expect.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["Backbone", "TimmBackbone", "create_backbone", "IMAGENET_MEAN", "IMAGENET_STD"]

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The value of `weights` that loads timm's ImageNet weights from its hub (network access).
HUB_WEIGHTS = "imagenet"


class Backbone(nn.Module):
    """Interface of a multi-scale backbone; subclasses set the attributes and `forward`.

    Attributes:
        reductions: input-to-feature size ratio of each returned map, e.g. (4, 8, 16).
        channels: channels of each returned map.
        pixel_mean, pixel_std: statistics (RGB in [0, 1]) the weights were trained with.
    """

    reductions: tuple[int, ...]
    channels: tuple[int, ...]
    pixel_mean: tuple[float, float, float] = IMAGENET_MEAN
    pixel_std: tuple[float, float, float] = IMAGENET_STD

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:  # pragma: no cover - interface
        raise NotImplementedError


def _timm():
    import timm  # imported here so that the HarDNet path does not need timm

    return timm


def _select_out_indices(name: str, reductions: Sequence[int], input_size: int | None) -> tuple[int, ...]:
    # Building on the meta device reads feature_info without allocating or initialising weights.
    with torch.device("meta"):
        probe = _timm().create_model(name, features_only=True, pretrained=False)

    config = getattr(probe, "pretrained_cfg", None) or {}
    fixed_size = config.get("input_size", (3, None, None))[-1] if config.get("fixed_input_size") else None
    if fixed_size is not None and input_size is not None and input_size != fixed_size:
        raise ValueError(
            f"timm model '{name}' accepts only {fixed_size} x {fixed_size} inputs, but the encoder input size "
            f"is {input_size}; set encoder_input_size={fixed_size} or choose a convolutional backbone"
        )

    available = list(probe.feature_info.reduction())
    indices = []
    for reduction in reductions:
        if reduction not in available:
            raise ValueError(
                f"timm model '{name}' has feature maps at reductions {available}, not at {reduction}; "
                "choose a backbone with 1/4, 1/8 and 1/16 features (resnet34, efficientnet_b0, convnext_tiny, ...)"
            )
        # Several maps can share a reduction (e.g. efficientnet); the last one is the deepest.
        indices.append(len(available) - 1 - available[::-1].index(reduction))
    return tuple(indices)


class TimmBackbone(Backbone):
    """A timm model built with `features_only=True`, keeping the levels at the requested reductions."""

    def __init__(
        self,
        *,
        name: str,
        reductions: Sequence[int] = (4, 8, 16),
        weights: str | None = None,
        input_size: int | None = None,
    ) -> None:
        """
        Args:
            name: timm model name, e.g. "resnet34", "efficientnet_b0", "convnext_tiny".
            reductions: reductions of the returned feature maps, shallowest first.
            weights: None for random initialisation, a local checkpoint file of the full timm model,
                or "imagenet" to download timm's pretrained weights from its hub.
            input_size: side of the input frame, checked against models with a fixed input size.
        """
        super().__init__()
        out_indices = _select_out_indices(name, reductions, input_size)
        kwargs: dict = {"features_only": True, "out_indices": out_indices}
        if weights is None:
            kwargs["pretrained"] = False
        elif os.path.isfile(weights):
            kwargs.update(pretrained=True, pretrained_cfg_overlay={"file": os.fspath(weights)})
        elif weights == HUB_WEIGHTS:
            logger.info("loading timm pretrained weights for '%s' from the hub", name)
            kwargs["pretrained"] = True
        else:
            raise FileNotFoundError(
                f"encoder weights '{weights}' not found; pass a checkpoint file of timm model '{name}', "
                f"'{HUB_WEIGHTS}' to download timm's pretrained weights, or None for random initialisation"
            )

        self.model = _timm().create_model(name, **kwargs)
        self.reductions = tuple(int(r) for r in self.model.feature_info.reduction())
        self.channels = tuple(int(c) for c in self.model.feature_info.channels())
        config = getattr(self.model, "pretrained_cfg", None) or {}
        self.pixel_mean = tuple(config.get("mean", IMAGENET_MEAN))
        self.pixel_std = tuple(config.get("std", IMAGENET_STD))

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        return list(self.model(image))


def create_backbone(
    name: str,
    *,
    weights: str | None = None,
    reductions: Sequence[int] = (4, 8, 16),
    input_size: int | None = None,
) -> Backbone:
    """Create the backbone `name`: "hardnet85" (built in this package) or any timm model name."""
    if name == "hardnet85":
        from autosam.networks.hardnet import HarDNetBackbone

        return HarDNetBackbone(reductions=reductions, weights=weights)
    return TimmBackbone(name=name, reductions=reductions, weights=weights, input_size=input_size)
