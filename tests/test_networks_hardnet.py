"""HarDNet-85 and the encoder g: parameter counts, feature shapes, weight loading, timm backbones."""

from __future__ import annotations

import pytest
import timm
import torch

from autosam.networks import AutoSAMEncoder, AutoSAMNet, FusionHead
from autosam.networks.backbones import TimmBackbone
from autosam.networks.hardnet import (
    HarDNet85,
    HarDNetBackbone,
    convert_reference_hardnet_state_dict,
    harmonic_layer_channels,
    harmonic_links,
)


def _count(module: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


@pytest.fixture(scope="module")
def hardnet() -> HarDNet85:
    torch.manual_seed(0)
    return HarDNet85().eval()


def test_harmonic_links_follow_powers_of_two():
    assert harmonic_links(1) == [0]
    assert harmonic_links(2) == [1, 0]
    assert harmonic_links(6) == [5, 4]
    assert harmonic_links(8) == [7, 6, 4, 0]
    assert harmonic_links(12) == [11, 10, 8]


def test_harmonic_widths_of_first_block():
    # Growth 24, multiplier 1.7: 24 * 1.7 = 40.8 -> 40, 24 * 1.7^2 = 69.36 -> 70, 24 * 1.7^3 = 117.9 -> 118.
    widths = [harmonic_layer_channels(layer, 96, 24, 1.7) for layer in range(9)]
    assert widths == [96, 24, 40, 24, 70, 24, 40, 24, 118]


def test_hardnet85_parameter_count(hardnet):
    # With its 1280 -> 1000 classifier (1,281,000 parameters) this is 36.67 M, the 36.7 M that the
    # authors' README (github.com/PingoLH/Pytorch-HarDNet) lists for HarDNet-85.
    assert _count(hardnet) == 35_389_212


def test_hardnet85_feature_shapes_at_352(hardnet):
    with torch.no_grad():
        features = hardnet(torch.rand(1, 3, 352, 352))
    shapes = [tuple(feature.shape) for feature in features]
    assert shapes == [(1, 192, 88, 88), (1, 320, 44, 44), (1, 720, 22, 22), (1, 1280, 11, 11)]


def test_hardnet85_layer_shapes_by_hand(hardnet):
    state_dict = hardnet.state_dict()
    # Block 1 outputs its odd layers and its last one: 4 * 24 + 118 = 214 channels.
    assert state_dict["stages.0.4.conv.weight"].shape == (192, 214, 1, 1)
    # Layer 4 of block 1 reads layers 3, 2 and the block input: 24 + 40 + 96 = 160 channels.
    assert state_dict["stages.0.3.layers.3.conv.weight"].shape == (70, 160, 3, 3)
    assert state_dict["stages.0.0.conv.weight"].shape == (48, 3, 3, 3)
    assert state_dict["stages.3.3.conv.weight"].shape[0] == 1280


def test_fusion_head_and_g_parameter_counts():
    torch.manual_seed(0)
    head = FusionHead(channels=(192, 320, 720))
    encoder = AutoSAMEncoder(encoder_name="hardnet85", input_size=352, embedding_size=64)
    # The reference head has 6,169,088 parameters, 512 of them in a BatchNorm its forward never uses.
    assert _count(head) == 6_168_576
    assert _count(encoder) == 35_389_212 + 6_168_576
    assert round(_count(encoder) / 1e6, 1) == 41.6


def test_g_dense_embedding_on_sam_grid():
    torch.manual_seed(0)
    # A small input keeps the test fast; the head output is resized to the grid whatever the input.
    encoder = AutoSAMEncoder(encoder_name="hardnet85", input_size=128, embedding_size=64).eval()
    with torch.no_grad():
        dense, sparse = encoder(torch.rand(1, 3, 300, 420) * 255)
    assert dense.shape == (1, 256, 64, 64)
    assert sparse.shape == (1, 0, 256)
    assert dense.abs().max() <= 1.0


def test_g_without_sparse_tokens_freezes_last_stage():
    backbone = HarDNetBackbone(reductions=(4, 8, 16))
    frozen = {name for name, parameter in backbone.named_parameters() if not parameter.requires_grad}
    assert frozen == {
        f"trunk.{name}" for name, _ in backbone.trunk.stages[3].named_parameters(prefix="stages.3")
    }


def test_reference_state_dict_converts(hardnet, tmp_path):
    # The authors' flat layout: stem 0-2, block/transition/pool entries 3-18, classifier 19.
    starts = (0, 5, 10, 15)
    reference = {}
    for key, value in hardnet.state_dict().items():
        _, stage, index, rest = key.split(".", 3)
        reference[f"base.{starts[int(stage)] + int(index)}.{rest}"] = value
    reference["base.19.3.weight"] = torch.zeros(1000, 1280)
    reference["base.19.3.bias"] = torch.zeros(1000)
    assert "base.18.conv.weight" in reference
    assert "base.16.layers.3.conv.weight" in reference

    converted = convert_reference_hardnet_state_dict(reference)
    assert set(converted) == set(hardnet.state_dict())

    path = tmp_path / "hardnet85.pth"
    torch.save(reference, path)
    loaded = HarDNetBackbone(weights=str(path))
    assert torch.equal(
        loaded.trunk.stages[2][1].layers[5].conv.weight, hardnet.stages[2][1].layers[5].conv.weight
    )


def test_hardnet_missing_weights_file_raises():
    with pytest.raises(FileNotFoundError, match="no_such_file.pth"):
        HarDNetBackbone(weights="no_such_file.pth")


def test_timm_backbone_picks_quarter_eighth_sixteenth():
    backbone = TimmBackbone(name="efficientnet_b0")
    assert backbone.reductions == (4, 8, 16)
    assert backbone.channels == (24, 40, 112)
    with torch.no_grad():
        features = backbone(torch.rand(1, 3, 64, 96))
    assert [tuple(feature.shape[-2:]) for feature in features] == [(16, 24), (8, 12), (4, 6)]


def test_timm_backbone_loads_local_weights(tmp_path):
    torch.manual_seed(1)
    full_model = timm.create_model("resnet18")
    path = tmp_path / "resnet18.pth"
    torch.save(full_model.state_dict(), path)
    backbone = TimmBackbone(name="resnet18", weights=str(path))
    assert torch.equal(backbone.model.layer3[0].conv1.weight, full_model.layer3[0].conv1.weight)


def test_timm_backbone_without_pyramid_raises():
    with pytest.raises(ValueError, match="reductions"):
        TimmBackbone(name="vit_tiny_patch16_224")


def test_timm_backbone_fixed_input_size_raises():
    with pytest.raises(ValueError, match="encoder_input_size=224"):
        AutoSAMEncoder(encoder_name="swin_tiny_patch4_window7_224", input_size=352)


def test_timm_backbone_missing_weights_raises():
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        TimmBackbone(name="resnet18", weights="missing.pth")


def test_autosam_net_default_encoder_with_tiny_sam():
    torch.manual_seed(0)
    net = AutoSAMNet(sam_model_type="tiny", encoder_input_size=64, num_sparse_tokens=4).eval()
    with torch.no_grad():
        logits = net(torch.rand(1, 3, 120, 90) * 255)
    assert logits.shape == (1, 1, 120, 90)
    assert all(parameter.requires_grad for parameter in net.encoder.backbone.parameters())
