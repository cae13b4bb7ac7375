"""AutoSAMNet with the tiny SAM and a small timm backbone: geometry, freezing, decoding, state dicts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from segment_anything.utils.transforms import ResizeLongestSide

from autosam.networks import (
    AutoSAMNet,
    build_sam,
    decode_masks,
    postprocess_logits,
    resize_longest_side_and_pad,
)

ENCODER_INPUT_SIZE = 64


@pytest.fixture(scope="module")
def net() -> AutoSAMNet:
    torch.manual_seed(0)
    return AutoSAMNet(sam_model_type="tiny", encoder_name="resnet18", encoder_input_size=ENCODER_INPUT_SIZE)


def _random_image(batch: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, height, width, generator=generator) * 255


@pytest.mark.parametrize("height,width", [(256, 256), (288, 384), (529, 619), (1080, 1350), (619, 529)])
def test_autosam_net_output_shape(net, height, width):
    image = _random_image(1, height, width)
    with torch.no_grad():
        logits = net(image)
    assert logits.shape == (1, 1, height, width)
    assert torch.isfinite(logits).all()


def test_autosam_net_accepts_any_float_and_uint8(net):
    with torch.no_grad():
        unit_range = net(torch.rand(2, 3, 96, 80))
        integers = net(torch.randint(0, 256, (1, 3, 64, 64), dtype=torch.uint8))
    assert unit_range.shape == (2, 1, 96, 80)
    assert integers.shape == (1, 1, 64, 64)


def test_autosam_net_rejects_non_rgb(net):
    with pytest.raises(ValueError, match="B x 3 x H x W"):
        net(torch.rand(1, 1, 64, 64))


def test_preprocessing_matches_segment_anything():
    sam = build_sam("tiny")
    image = _random_image(1, 300, 420, seed=3)
    ours = resize_longest_side_and_pad(image, 256, sam.pixel_mean, sam.pixel_std)

    # Oracle: segment_anything's resize shape and Sam.preprocess (normalise, pad). Its
    # apply_image_torch is not used because it reads the size from the B and C dimensions.
    target = ResizeLongestSide.get_preprocess_shape(300, 420, 256)
    resized = torch.nn.functional.interpolate(
        image, target, mode="bilinear", align_corners=False, antialias=True
    )
    reference = sam.preprocess(resized[0]).unsqueeze(0)
    assert target == (183, 256)
    assert ours.shape == reference.shape == (1, 3, 256, 256)
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-5)


def test_postprocessing_matches_segment_anything():
    sam = build_sam("tiny")
    low_res = torch.randn(2, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    original_size = (300, 420)
    input_size = ResizeLongestSide(256).get_preprocess_shape(*original_size, 256)

    ours = postprocess_logits(low_res, 256, original_size)
    reference = sam.postprocess_masks(low_res, input_size=input_size, original_size=original_size)
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-6)


def test_postprocessing_keeps_sign_of_case_logits(shared_cases):
    # Probabilities are sigmoid(logits): a polyp-free logit map stays empty, unlike min-max scaling.
    case = shared_cases / "G6_sam_logits"
    positive = torch.from_numpy(np.load(case / "logits_pos.npy"))[None, None]
    negative = torch.from_numpy(np.load(case / "logits_neg.npy"))[None, None]

    positive_probabilities = torch.sigmoid(postprocess_logits(positive, 256, (256, 256)))
    negative_probabilities = torch.sigmoid(postprocess_logits(negative, 1024, (300, 400)))
    assert int((positive_probabilities > 0.5).sum()) == 5013
    assert int((negative_probabilities > 0.5).sum()) == 0


@pytest.mark.parametrize("multimask_output", [False, True])
def test_batched_decoding_matches_stock_decoder(multimask_output):
    sam = build_sam("tiny")
    generator = torch.Generator().manual_seed(2)
    batch, grid = 4, sam.prompt_encoder.image_embedding_size
    image_embeddings = torch.randn(batch, 256, *grid, generator=generator)
    dense = torch.randn(batch, 256, *grid, generator=generator)
    sparse = torch.randn(batch, 3, 256, generator=generator)
    image_pe = sam.prompt_encoder.get_dense_pe()

    with torch.no_grad():
        masks, iou = decode_masks(
            sam.mask_decoder, image_embeddings, image_pe, sparse, dense, multimask_output=multimask_output
        )
        per_image = [
            sam.mask_decoder(
                image_embeddings=image_embeddings[i : i + 1],
                image_pe=image_pe,
                sparse_prompt_embeddings=sparse[i : i + 1],
                dense_prompt_embeddings=dense[i : i + 1],
                multimask_output=multimask_output,
            )
            for i in range(batch)
        ]
    reference_masks = torch.cat([output[0] for output in per_image])
    reference_iou = torch.cat([output[1] for output in per_image])
    assert (
        masks.shape
        == reference_masks.shape
        == (batch, 3 if multimask_output else 1, 4 * grid[0], 4 * grid[1])
    )
    assert (masks - reference_masks).abs().max() <= 1e-5
    assert (iou - reference_iou).abs().max() <= 1e-5


def test_batched_decoding_without_sparse_tokens():
    sam = build_sam("tiny")
    generator = torch.Generator().manual_seed(4)
    image_embeddings = torch.randn(3, 256, 16, 16, generator=generator)
    dense = torch.randn(3, 256, 16, 16, generator=generator)
    no_tokens = torch.zeros(3, 0, 256)
    with torch.no_grad():
        masks, _ = decode_masks(
            sam.mask_decoder, image_embeddings, sam.prompt_encoder.get_dense_pe(), no_tokens, dense
        )
        second, _ = sam.mask_decoder(
            image_embeddings=image_embeddings[1:2],
            image_pe=sam.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=no_tokens[1:2],
            dense_prompt_embeddings=dense[1:2],
            multimask_output=False,
        )
    assert (masks[1:2] - second).abs().max() <= 1e-5


def test_training_changes_only_encoder():
    torch.manual_seed(0)
    net = AutoSAMNet(
        sam_model_type="tiny",
        encoder_name="resnet18",
        encoder_input_size=ENCODER_INPUT_SIZE,
        num_sparse_tokens=2,
        learn_logit_affine=True,
    )
    sam_before = {name: tensor.clone() for name, tensor in net.sam.state_dict().items()}
    encoder_before = {name: tensor.clone() for name, tensor in net.encoder.state_dict().items()}
    optimizer = torch.optim.Adam(net.trainable_parameters(), lr=1e-2)
    image = _random_image(2, 72, 96, seed=5)
    label = (torch.rand(2, 1, 72, 96, generator=torch.Generator().manual_seed(6)) > 0.5).float()

    net.train()
    assert not net.sam.training
    for _ in range(3):
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net(image), label)
        loss.backward()
        assert all(parameter.grad is None for parameter in net.sam.parameters())
        optimizer.step()

    assert not net.sam.training
    assert all(not parameter.requires_grad for parameter in net.sam.parameters())
    for name, tensor in net.sam.state_dict().items():
        assert torch.equal(tensor, sam_before[name]), f"SAM tensor {name} changed"
    changed = [
        name
        for name, tensor in net.encoder.state_dict().items()
        if not torch.equal(tensor, encoder_before[name])
    ]
    assert "head.conv2.weight" in changed
    assert "sparse_head.attention.weight" in changed
    assert net.logit_scale.item() != 1.0


def test_trainable_parameters_exclude_sam(net):
    trainable = {id(parameter) for parameter in net.trainable_parameters()}
    assert trainable == {id(parameter) for parameter in net.encoder.parameters()}


def test_state_dict_holds_only_trainable_tensors(net):
    state_dict = net.state_dict()
    assert state_dict
    assert not [key for key in state_dict if key.startswith("sam.")]
    assert set(state_dict) == {f"encoder.{key}" for key in net.encoder.state_dict()}


def test_state_dict_round_trip_restores_encoder(net, tmp_path):
    path = tmp_path / "net.pt"
    torch.save({"model": net.state_dict()}, path)
    torch.manual_seed(123)
    other = AutoSAMNet(sam_model_type="tiny", encoder_name="resnet18", encoder_input_size=ENCODER_INPUT_SIZE)
    result = other.load_state_dict(torch.load(path, weights_only=True)["model"], strict=True)
    assert not result.missing_keys
    assert not result.unexpected_keys

    image = _random_image(1, 80, 100, seed=7)
    net.eval()
    other.eval()
    with torch.no_grad():
        torch.testing.assert_close(other(image), net(image), rtol=0, atol=0)


def test_sam_entries_in_loaded_state_dict_are_ignored(net, caplog):
    key = "mask_decoder.iou_token.weight"
    before = net.sam.state_dict()[key].clone()
    state_dict = dict(net.state_dict(), **{f"sam.{key}": torch.full_like(before, 7.0)})

    net.load_state_dict(state_dict, strict=True)
    assert torch.equal(net.sam.state_dict()[key], before)
    assert "ignoring 1 SAM entries" in caplog.text


def test_precomputed_embeddings_give_same_logits(net):
    image = _random_image(2, 90, 120, seed=8)
    net.eval()
    image_embeddings = net.embed_images(image)
    assert image_embeddings.shape == (2, 256, 16, 16)
    assert not image_embeddings.requires_grad
    with torch.no_grad():
        torch.testing.assert_close(net(image, image_embeddings), net(image), rtol=0, atol=0)


def test_precomputed_embeddings_of_wrong_shape_raise(net):
    with pytest.raises(ValueError, match="embed_images"):
        net(_random_image(1, 64, 64), torch.zeros(1, 256, 64, 64))


def test_sam_config_id_names_type_size_and_weights(net):
    other_size = AutoSAMNet(
        sam_model_type="tiny", sam_input_size=320, encoder_name="resnet18", encoder_input_size=64
    )
    assert net.sam_config_id.startswith("tiny-256px-")
    assert other_size.sam_config_id.startswith("tiny-320px-")
    assert other_size.embedding_size == (20, 20)


def test_logit_affine_is_off_by_default(net):
    assert net.logit_scale is None
    assert net.logit_bias is None


def test_geometry_round_trip_aligns_real_mask(shared_data):
    # A Kvasir-SEG mask (622 x 529, not square) mapped to the padded 256 px frame and back must land
    # on itself, because a crop on the wrong side or a rounding slip would shift the polyp.
    from PIL import Image

    mask_path = shared_data / "kvasir_seg" / "masks" / "cju0qkwl35piu0993l0dewei2.jpg"
    mask = torch.from_numpy(np.asarray(Image.open(mask_path).convert("L")) >= 128).float()
    height, width = mask.shape
    assert height != width

    # Logits +10 inside the polyp and -10 outside on the 256 px frame, where the padding is background.
    frame = resize_longest_side_and_pad(mask[None, None] * 20, 256, torch.tensor(0.0), torch.tensor(1.0)) - 10
    restored = postprocess_logits(frame, 256, (height, width))[0, 0] > 0

    intersection = (restored & (mask > 0)).sum().item()
    dice = 2 * intersection / (restored.sum().item() + mask.sum().item())
    assert dice > 0.99
