"""AutoSAMLightNet: the shallow decoder h on g's embedding, and loading g from an AutoSAMNet checkpoint."""

from __future__ import annotations

import pytest
import torch
from segment_anything.modeling.common import LayerNorm2d

from autosam.networks import AutoSAMLightNet, AutoSAMNet, ShallowDecoder

ENCODER_INPUT_SIZE = 64


def test_shallow_decoder_parameter_count():
    # 256*64*9 + 64, 2*64, 64*16*4 + 16, 2*16, 16 + 1.
    assert sum(parameter.numel() for parameter in ShallowDecoder().parameters()) == 151_809


def test_shallow_decoder_quadruples_grid():
    decoder = ShallowDecoder()
    logits = decoder(torch.randn(2, 256, 16, 12))
    assert logits.shape == (2, 1, 64, 48)
    assert isinstance(decoder.norm1, LayerNorm2d)


def _light_net(encoder_checkpoint: str | None = None) -> AutoSAMLightNet:
    # A g sized for the tiny SAM: 16 x 16 embedding grid for a 256 px frame.
    return AutoSAMLightNet(
        encoder_name="resnet18",
        encoder_input_size=ENCODER_INPUT_SIZE,
        embedding_size=16,
        sam_input_size=256,
        encoder_checkpoint=encoder_checkpoint,
    )


@pytest.mark.parametrize("height,width", [(288, 384), (529, 619)])
def test_light_net_output_shape(height, width):
    torch.manual_seed(0)
    net = _light_net().eval()
    with torch.no_grad():
        logits = net(torch.rand(1, 3, height, width) * 255)
    assert logits.shape == (1, 1, height, width)


@pytest.fixture(scope="module")
def autosam_checkpoint(tmp_path_factory):
    torch.manual_seed(3)
    net = AutoSAMNet(sam_model_type="tiny", encoder_name="resnet18", encoder_input_size=ENCODER_INPUT_SIZE)
    # One training step so that BatchNorm statistics and weights differ from a fresh g.
    optimizer = torch.optim.SGD(net.trainable_parameters(), lr=0.1)
    net.train()
    net(torch.rand(2, 3, 64, 64) * 255).mean().backward()
    optimizer.step()

    path = tmp_path_factory.mktemp("checkpoints") / "checkpoint_epoch=1.pt"
    torch.save({"model": net.state_dict(), "optimizer": optimizer.state_dict()}, path)
    return net, path


def test_light_net_loads_encoder_from_checkpoint(autosam_checkpoint):
    trained, path = autosam_checkpoint
    torch.manual_seed(9)
    light = _light_net(encoder_checkpoint=str(path))
    for key, tensor in trained.encoder.state_dict().items():
        assert torch.equal(light.encoder.state_dict()[key], tensor), key

    trained.eval()
    light.eval()
    image = torch.rand(1, 3, 80, 60) * 255
    with torch.no_grad():
        torch.testing.assert_close(light.encoder(image)[0], trained.encoder(image)[0], rtol=0, atol=0)


def test_light_net_frozen_encoder_trains_only_decoder(autosam_checkpoint):
    _, path = autosam_checkpoint
    light = _light_net(encoder_checkpoint=str(path))
    encoder_before = {key: tensor.clone() for key, tensor in light.encoder.state_dict().items()}
    optimizer = torch.optim.Adam(light.trainable_parameters(), lr=1e-2)

    light.train()
    assert not light.encoder.training
    for _ in range(2):
        optimizer.zero_grad()
        light(torch.rand(2, 3, 64, 64) * 255).mean().backward()
        optimizer.step()

    assert {id(p) for p in light.trainable_parameters()} == {id(p) for p in light.decoder.parameters()}
    for key, tensor in light.encoder.state_dict().items():
        assert torch.equal(tensor, encoder_before[key]), key


def test_light_net_rejects_checkpoint_without_encoder(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"model": {"decoder.weight": torch.zeros(1)}}, path)
    with pytest.raises(ValueError, match="no 'encoder.\\*' entries"):
        AutoSAMLightNet(encoder_name="resnet18", encoder_input_size=64, encoder_checkpoint=str(path))


def test_light_net_missing_checkpoint_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.pt"):
        AutoSAMLightNet(
            encoder_name="resnet18", encoder_input_size=64, encoder_checkpoint=str(tmp_path / "absent.pt")
        )
