"""SAM construction and checkpoint loading: round trip, mismatches, corrupt files, download check."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from autosam.networks import build_sam, sam_state_hash
from autosam.networks import sam_checkpoint as checkpoint_module
from autosam.networks.sam_checkpoint import SamCheckpointInfo, download_sam_checkpoint


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(11)
    sam = build_sam("tiny", image_size=256)
    # Random weights that differ from the seeded default, including the zero-initialised tables.
    with torch.no_grad():
        for parameter in sam.parameters():
            parameter.normal_()
    path = tmp_path_factory.mktemp("sam") / "sam_tiny.pth"
    torch.save(sam.state_dict(), path)
    return path


def test_tiny_checkpoint_round_trip(tiny_checkpoint):
    saved = torch.load(tiny_checkpoint, weights_only=True)
    sam = build_sam("tiny", tiny_checkpoint)
    loaded = sam.state_dict()
    assert set(loaded) == set(saved)
    for key, tensor in saved.items():
        assert torch.equal(loaded[key], tensor), key


def test_loaded_sam_is_frozen_and_in_eval_mode(tiny_checkpoint):
    sam = build_sam("tiny", tiny_checkpoint)
    assert not sam.training
    assert not any(parameter.requires_grad for parameter in sam.parameters())
    assert not any(tensor.is_meta for tensor in sam.state_dict().values())
    torch.testing.assert_close(sam.pixel_mean.flatten(), torch.tensor([123.675, 116.28, 103.53]))


def test_loaded_sam_runs_like_stock_sam(tiny_checkpoint):
    # Oracle: the same weights loaded into a model built the usual way (random init, then load).
    sam = build_sam("tiny", tiny_checkpoint)
    stock = build_sam("tiny")
    stock.load_state_dict(torch.load(tiny_checkpoint, weights_only=True))
    image = torch.rand(1, 3, 256, 256) * 255
    with torch.no_grad():
        torch.testing.assert_close(
            sam.image_encoder(sam.preprocess(image)), stock.image_encoder(stock.preprocess(image))
        )


def test_wrapped_checkpoint_loads(tiny_checkpoint, tmp_path):
    path = tmp_path / "wrapped.pth"
    torch.save({"model": torch.load(tiny_checkpoint, weights_only=True)}, path)
    assert sam_state_hash(build_sam("tiny", path)) == sam_state_hash(build_sam("tiny", tiny_checkpoint))


def test_wrong_model_type_names_key_and_shapes(tiny_checkpoint):
    with pytest.raises(ValueError) as error:
        build_sam("vit_b", tiny_checkpoint)
    message = str(error.value)
    assert str(tiny_checkpoint) in message
    assert "'image_encoder.pos_embed'" in message
    assert "(1, 16, 16, 64)" in message
    assert "(1, 64, 64, 768)" in message
    assert "model_type='tiny'" in message


def test_changed_shape_names_that_key(tiny_checkpoint, tmp_path):
    state_dict = torch.load(tiny_checkpoint, weights_only=True)
    state_dict["mask_decoder.iou_token.weight"] = torch.zeros(1, 128)
    path = tmp_path / "changed.pth"
    torch.save(state_dict, path)
    with pytest.raises(ValueError, match=r"'mask_decoder.iou_token.weight' has shape \(1, 128\).*\(1, 256\)"):
        build_sam("tiny", path)


def test_missing_and_unexpected_keys_raise(tiny_checkpoint, tmp_path):
    state_dict = torch.load(tiny_checkpoint, weights_only=True)
    missing = dict(state_dict)
    del missing["mask_decoder.mask_tokens.weight"]
    torch.save(missing, tmp_path / "missing.pth")
    extra = dict(state_dict, **{"extra.weight": torch.zeros(1)})
    torch.save(extra, tmp_path / "extra.pth")

    with pytest.raises(ValueError, match="'mask_decoder.mask_tokens.weight' is missing"):
        build_sam("tiny", tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="unexpected key 'extra.weight'"):
        build_sam("tiny", tmp_path / "extra.pth")


@pytest.mark.parametrize("kept_fraction", [0.0, 0.001, 0.01, 0.5, 0.999])
def test_truncated_checkpoint_raises(tiny_checkpoint, tmp_path, kept_fraction):
    content = tiny_checkpoint.read_bytes()
    path = tmp_path / "truncated.pth"
    path.write_bytes(content[: int(len(content) * kept_fraction)])
    with pytest.raises(RuntimeError, match="corrupt or truncated") as error:
        build_sam("tiny", path)
    assert str(path) in str(error.value)


def test_missing_checkpoint_raises(tmp_path):
    path = tmp_path / "sam_vit_b_01ec64.pth"
    with pytest.raises(FileNotFoundError, match="download=True") as error:
        build_sam("vit_b", path)
    assert str(path) in str(error.value)


def test_vit_without_checkpoint_raises():
    with pytest.raises(ValueError, match="sam_vit_b_01ec64.pth") as error:
        build_sam("vit_b")
    assert "download=True" in str(error.value)
    assert "model_type='tiny'" in str(error.value)


def test_unknown_model_type_raises():
    with pytest.raises(ValueError, match="vit_x"):
        build_sam("vit_x")


def test_other_image_size_resamples_position_embeddings(tiny_checkpoint):
    saved = torch.load(tiny_checkpoint, weights_only=True)
    sam = build_sam("tiny", tiny_checkpoint, image_size=320)

    # Oracle: bicubic resampling of the 16 x 16 grid to 20 x 20, written out here.
    grid = saved["image_encoder.pos_embed"].permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(20, 20), mode="bicubic", align_corners=False).permute(0, 2, 3, 1)
    torch.testing.assert_close(sam.image_encoder.pos_embed, expected)
    assert sam.image_encoder.blocks[1].attn.rel_pos_h.shape == (39, 32)
    assert torch.equal(
        sam.image_encoder.blocks[0].attn.rel_pos_h, saved["image_encoder.blocks.0.attn.rel_pos_h"]
    )
    assert sam.prompt_encoder.image_embedding_size == (20, 20)
    with torch.no_grad():
        assert sam.image_encoder(torch.zeros(1, 3, 320, 320)).shape == (1, 256, 20, 20)


def test_invalid_image_size_raises():
    with pytest.raises(ValueError, match="multiple of 16"):
        build_sam("tiny", image_size=250)


def test_tiny_random_weights_are_reproducible():
    assert sam_state_hash(build_sam("tiny")) == sam_state_hash(build_sam("tiny"))


@pytest.fixture()
def loopback_server(tmp_path):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield tmp_path, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_download_verifies_md5(loopback_server, tiny_checkpoint, tmp_path, monkeypatch):
    served, base_url = loopback_server
    (served / "sam_tiny_test.pth").write_bytes(tiny_checkpoint.read_bytes())
    md5 = hashlib.md5(tiny_checkpoint.read_bytes()).hexdigest()
    info = SamCheckpointInfo(url=f"{base_url}/sam_tiny_test.pth", md5=md5)
    monkeypatch.setitem(checkpoint_module.SAM_CHECKPOINTS, "tiny", info)

    cache = tmp_path / "cache"
    path = download_sam_checkpoint("tiny", cache_dir=cache)
    assert path == cache / "sam_tiny_test.pth"
    assert path.read_bytes() == tiny_checkpoint.read_bytes()
    assert sam_state_hash(build_sam("tiny", path)) == sam_state_hash(build_sam("tiny", tiny_checkpoint))


def test_download_with_wrong_md5_raises(loopback_server, tiny_checkpoint, tmp_path, monkeypatch):
    served, base_url = loopback_server
    (served / "sam_tiny_test.pth").write_bytes(tiny_checkpoint.read_bytes())
    info = SamCheckpointInfo(url=f"{base_url}/sam_tiny_test.pth", md5="0" * 32)
    monkeypatch.setitem(checkpoint_module.SAM_CHECKPOINTS, "tiny", info)

    cache = tmp_path / "cache"
    with pytest.raises(RuntimeError, match="expected 00000000"):
        download_sam_checkpoint("tiny", cache_dir=cache)
    assert not any(cache.iterdir())


def test_official_checkpoint_names_carry_md5_prefix():
    for model_type, info in checkpoint_module.SAM_CHECKPOINTS.items():
        assert info.file_name == f"sam_{model_type}_{info.md5[:6]}.pth"
        assert info.url.startswith("https://dl.fbaipublicfiles.com/segment_anything/")
