"""Tests for extensions/autoencoder: encoder/decoder shapes, masked loss, pretexts, checkpoints and export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from extensions.autoencoder.data import random_fliplr
from extensions.autoencoder.export import (
    backbone_tensors,
    export_backbone,
    init_encoder_from,
    load_pretrain_checkpoint,
    make_pretrain_checkpoint,
    save_pretrain_checkpoint,
)
from extensions.autoencoder.loss import (
    ReconstructionLoss,
    box_mask,
    gaussian_blur,
    images_with_boxes,
    loss_weights,
    masked_mse,
    pretext_pair,
)
from extensions.autoencoder.model import Autoencoder, load_cfg
from extensions.autoencoder.plots import reconstruction_grid
from extensions.transfer import load_backbone_weights
from models.yolo import Model
from utils.checkpoint import torch_safe_load

FIXTURE = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "upstream" / "yolov5n-trained.pt"
needs_fixture = pytest.mark.skipif(not FIXTURE.is_file(), reason="upstream fixture checkpoint not available")
STEP_COUNTER = "num_batches_tracked"


def tiny_cfg() -> dict:
    """yolov5n rows at 1/8 width (8..128 channels): fast enough to train in a unit test."""
    cfg = load_cfg("yolov5n.yaml")
    cfg["width_multiple"] = 0.125
    return cfg


def backbone_shapes(model: Model) -> dict:
    n = len(model.yaml["backbone"])
    return {k: tuple(v.shape) for k, v in model.state_dict().items() if int(k.split(".")[1]) < n}


@pytest.fixture(scope="module")
def ae_n() -> Autoencoder:
    torch.manual_seed(0)
    return Autoencoder("yolov5n.yaml").eval()


@pytest.mark.parametrize("cfg", ["yolov5n.yaml", "yolov5s.yaml", "yolov5n6.yaml"])
def test_encoder_keys_and_shapes_equal_detection_backbone(cfg):
    ae, detector = Autoencoder(cfg), Model(cfg)
    encoder_shapes = {k: tuple(v.shape) for k, v in ae.encoder.state_dict().items()}
    assert encoder_shapes == backbone_shapes(detector)
    assert list(ae.backbone_state_dict()) == list(encoder_shapes)
    assert ae.backbone_layers == len(detector.yaml["backbone"])


def test_yolov5s_layout_mirrors_the_encoder():
    ae = Autoencoder("yolov5s.yaml")
    assert ae.stride == 32
    assert ae.layout.skip_layers == {4: 2, 8: 4, 16: 6, 32: 8}
    assert {s: ae.layout.repeats[s] for s in (4, 8, 16, 32)} == {4: 1, 8: 2, 16: 3, 32: 1}
    assert ae.layout.bottleneck == 9 and ae.layout.channels[9] == 512
    csp_repeats = [len(level.csp.m) if hasattr(level.csp, "m") else 0 for level in ae.decoder.levels]
    assert csp_repeats == [1, 3, 2, 1, 0, 0]  # strides 32, 16, 8, 4, 2, 1: the encoder's stages in reverse
    up_widths = [level.up.conv.out_channels for level in ae.decoder.levels[:-1]]
    assert up_widths == [256, 128, 64, 32, 16]
    assert ae.decoder.head.out_channels == 3


@pytest.mark.parametrize("skips", [True, False])
@pytest.mark.parametrize("size", [(64, 64), (96, 96), (128, 128), (64, 96)])
def test_output_size_equals_input_size(ae_n, size, skips):
    ae_n.skips = skips
    with torch.no_grad():
        out = ae_n(torch.rand(2, 3, *size))
    assert out.shape == (2, 3, *size)
    assert out.min() >= 0 and out.max() <= 1


def test_p6_stride_and_output_size():
    ae = Autoencoder("yolov5n6.yaml").eval()
    assert ae.stride == 64 and ae.layout.skip_layers == {4: 2, 8: 4, 16: 6, 32: 8, 64: 10}
    with torch.no_grad():
        assert ae(torch.rand(1, 3, 128, 192)).shape == (1, 3, 128, 192)


def test_input_not_multiple_of_stride_is_refused(ae_n):
    with pytest.raises(ValueError, match="multiple of the model stride 32"):
        ae_n(torch.rand(1, 3, 64, 80))


def test_no_skip_mode_ignores_the_stage_outputs(ae_n):
    torch.manual_seed(1)
    with torch.no_grad():
        features = ae_n.encoder(torch.rand(1, 3, 64, 64))
        zeroed = list(features)
        for index in ae_n.layout.skip_layers.values():
            zeroed[index] = torch.zeros_like(features[index])
        assert torch.equal(ae_n.decoder(features, skips=False), ae_n.decoder(zeroed, skips=False))
        assert not torch.allclose(ae_n.decoder(features, skips=True), ae_n.decoder(zeroed, skips=True))


@pytest.mark.slow
def test_timm_convnext_backbone():
    cfg = load_cfg("convnext_yolov5n.yaml")
    ae, detector = Autoencoder(cfg).eval(), Model(cfg)
    assert {k: tuple(v.shape) for k, v in ae.encoder.state_dict().items()} == backbone_shapes(detector)
    assert ae.layout.skip_layers == {8: 2, 16: 4, 32: 6}
    with torch.no_grad():
        assert ae(torch.rand(1, 3, 64, 96)).shape == (1, 3, 64, 96)


def test_box_mask_matches_pixel_centres():
    # image 0: box x 0.25..0.75, y 0.0..0.5 on 4x8 (h x w) -> cols 2..5, rows 0..1; overlapping second box
    # image 1: no boxes; image 2: box beyond the border is clipped
    targets = torch.tensor([[0, 1, 0.5, 0.25, 0.5, 0.5], [0, 2, 0.375, 0.25, 0.25, 0.5],
                            [2, 0, 0.9375, 0.875, 0.375, 0.5]])
    mask = box_mask(targets, 3, 4, 8)
    expected = np.zeros((3, 4, 8), dtype=np.float32)
    expected[0, 0:2, 2:6] = 1
    expected[2, 2:4, 6:8] = 1
    assert mask.shape == (3, 1, 4, 8)
    np.testing.assert_array_equal(mask[:, 0].numpy(), expected)
    assert images_with_boxes(targets, 3).tolist() == [True, False, True]


@pytest.mark.parametrize("p", [0.05, 0.01])
def test_mask_weighting_hand_computed_4x4(p):
    targets = torch.tensor([[0, 0, 0.25, 0.25, 0.5, 0.5]])  # top-left 2x2 pixels of a 4x4 image
    prediction = torch.zeros(1, 3, 4, 4, requires_grad=True)
    target = torch.ones(1, 3, 4, 4)
    loss, mask = ReconstructionLoss(p)(prediction, target, targets)
    inside, outside = 1 / p, 1 / (1 - p)
    assert mask[0, 0].sum() == 4 and mask[0, 0, :2, :2].all()
    assert loss.item() == pytest.approx((4 * inside + 12 * outside) * 3 / 48, rel=1e-6)
    loss.backward()
    grad = prediction.grad[0, 0]
    assert grad[0, 0].item() == pytest.approx(-2 * inside / 48, rel=1e-6)
    assert (grad[0, 0] / grad[3, 3]).item() == pytest.approx((1 - p) / p, rel=1e-6)  # 19 for p = 0.05


def test_images_without_labels_get_uniform_weights():
    targets = torch.tensor([[1, 0, 0.5, 0.5, 0.5, 0.5]])
    b = 2
    weights = loss_weights(box_mask(targets, b, 4, 4), images_with_boxes(targets, b), 0.01)
    assert torch.equal(weights[0], torch.ones(1, 4, 4))
    assert weights[1].max().item() == pytest.approx(100) and weights[1].min().item() == pytest.approx(1 / 0.99)
    assert masked_mse(torch.zeros(1, 3, 2, 2), torch.full((1, 3, 2, 2), 0.5), torch.ones(1, 1, 2, 2)) == 0.25


@pytest.mark.parametrize("p", [0.0, 1.0, -0.1])
def test_invalid_mask_p_is_refused(p):
    with pytest.raises(ValueError, match="mask p must be in"):
        ReconstructionLoss(p)


def test_pretext_blur_changes_only_box_pixels():
    torch.manual_seed(0)
    images = torch.rand(2, 3, 32, 32)
    targets = torch.tensor([[0, 0, 0.5, 0.5, 0.5, 0.5]])
    mask = box_mask(targets, 2, 32, 32)
    inputs, target = pretext_pair(images, mask, images_with_boxes(targets, 2), "blur", sigma=2.0)
    assert torch.equal(target, images)
    outside = mask.expand_as(images) < 0.5
    assert torch.equal(inputs[outside], images[outside])
    assert torch.equal(inputs[1], images[1])  # no boxes: unchanged
    inside = ~outside[0]
    assert inputs[0][inside].var() < 0.2 * images[0][inside].var()


def test_gaussian_blur_keeps_constant_images_and_shape():
    flat = torch.full((1, 3, 9, 11), 0.3)
    assert torch.allclose(gaussian_blur(flat, 1.5), flat, atol=1e-6)
    assert gaussian_blur(torch.rand(2, 3, 5, 7), 4.0).shape == (2, 3, 5, 7)


def test_pretext_boxes_target_is_black_outside_boxes():
    images = torch.rand(2, 3, 8, 8)
    targets = torch.tensor([[0, 0, 0.25, 0.25, 0.5, 0.5]])
    mask = box_mask(targets, 2, 8, 8)
    inputs, target = pretext_pair(images, mask, images_with_boxes(targets, 2), "boxes")
    assert torch.equal(inputs, images)
    assert torch.equal(target[0, :, :4, :4], images[0, :, :4, :4])
    assert target[0, :, 4:, :].abs().sum() == 0 and target[0, :, :, 4:].abs().sum() == 0
    assert torch.equal(target[1], images[1])  # no boxes: the whole image
    with pytest.raises(ValueError, match="unknown pretext"):
        pretext_pair(images, mask, images_with_boxes(targets, 2), "jigsaw")


def test_random_fliplr_mirrors_images_and_labels():
    images = torch.arange(2 * 1 * 2 * 3, dtype=torch.float32).view(2, 1, 2, 3)
    targets = torch.tensor([[0, 0, 0.2, 0.5, 0.1, 0.1], [1, 0, 0.7, 0.5, 0.1, 0.1]])
    flipped, new_targets = random_fliplr(images, targets, 1.0)
    assert torch.equal(flipped, images.flip(-1))
    assert new_targets[:, 2].tolist() == pytest.approx([0.8, 0.3])
    assert targets[0, 2].item() == pytest.approx(0.2)  # input untouched
    same, same_targets = random_fliplr(images, targets, 0.0)
    assert same is images and same_targets is targets


def test_loss_falls_when_overfitting_four_images():
    torch.manual_seed(0)
    model = Autoencoder(tiny_cfg()).train()
    images = torch.nn.functional.interpolate(torch.rand(4, 3, 8, 8), size=64, mode="bilinear", align_corners=False)
    targets = torch.tensor([[0, 0, 0.5, 0.5, 0.4, 0.4], [2, 1, 0.3, 0.6, 0.2, 0.3]])
    criterion = ReconstructionLoss(0.05)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss, _ = criterion(model(images), images, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:3])


def test_checkpoint_is_safe_and_transfers_100_percent_into_yolov5s(tmp_path):
    torch.manual_seed(0)
    ae = Autoencoder("yolov5s.yaml")
    with torch.no_grad():
        for value in ae.encoder.state_dict().values():
            if value.is_floating_point():
                value.copy_(torch.randn_like(value))
    file = save_pretrain_checkpoint(make_pretrain_checkpoint(ae, 3, 0.5, opt={"cfg": "yolov5s.yaml"}),
                                    tmp_path / "ae.pt")
    assert torch.serialization.get_unsafe_globals_in_checkpoint(str(file)) == []
    ckpt = torch_safe_load(file)
    assert ckpt["epoch"] == 3 and ckpt["best_loss"] == 0.5 and ckpt["best_fitness"] == -0.5
    detector = Model("yolov5s.yaml", nc=8)
    head_before = {k: v.clone() for k, v in detector.state_dict().items() if int(k.split(".")[1]) >= 10}
    report = load_backbone_weights(file, detector)
    assert report.num_transferred == report.total == 165  # every yolov5s backbone tensor but BN step counters
    assert not report.skipped
    state = detector.state_dict()
    for key, value in ae.backbone_state_dict().items():
        if not key.endswith(STEP_COUNTER):
            assert torch.equal(state[key], value), key
    assert all(torch.equal(state[k], v) for k, v in head_before.items())


def test_export_backbone_file_has_only_backbone_keys(tmp_path):
    torch.manual_seed(0)
    ae = Autoencoder(tiny_cfg())
    ckpt = make_pretrain_checkpoint(ae, 0, 1.0)
    file = export_backbone(ckpt, tmp_path / "backbone.pt")
    tensors = torch_safe_load(file)
    assert list(tensors) == list(ae.encoder.state_dict())
    assert {int(k.split(".")[1]) for k in tensors} == set(range(10))
    assert all(k.startswith("model.") for k in tensors)
    detector = Model(tiny_cfg())
    assert load_backbone_weights(file, detector).num_transferred == len(
        [k for k in tensors if not k.endswith(STEP_COUNTER)])


def test_load_pretrain_checkpoint_refuses_other_files(tmp_path):
    torch.save({"model": {"a": torch.zeros(1)}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an autoencoder pretraining checkpoint"):
        load_pretrain_checkpoint(tmp_path / "other.pt")


@needs_fixture
def test_encoder_starts_from_upstream_detector_backbone(tmp_path):
    ae = Autoencoder("yolov5n.yaml")
    report = init_encoder_from(FIXTURE, ae)
    assert report.num_transferred == report.total and not report.skipped
    detector = torch_safe_load(FIXTURE)["model"].float()
    reference = detector.state_dict()
    for key, value in ae.encoder.state_dict().items():
        if not key.endswith(STEP_COUNTER):
            assert torch.equal(value, reference[key]), key
    exported = backbone_tensors(FIXTURE)
    assert list(exported) == list(ae.encoder.state_dict())
    assert torch.equal(exported["model.9.cv2.conv.weight"], reference["model.9.cv2.conv.weight"])


def test_reconstruction_grid_layout():
    inputs = torch.zeros(2, 3, 8, 10)
    recon = torch.ones(2, 3, 8, 10)
    masks = torch.zeros(2, 1, 8, 10)
    masks[:, :, :4] = 1
    grid = reconstruction_grid(inputs, recon, masks, gap=2)
    assert grid.shape == (2 * 8 + 2, 3 * 10 + 4, 3) and grid.dtype == np.uint8
    assert (grid[:8, :10] == 0).all() and (grid[:8, 12:22] == 255).all()
    assert (grid[:4, 24:34] == 255).all() and (grid[4:8, 24:34] == 0).all()
    assert reconstruction_grid(inputs, recon, masks, targets=recon, gap=2).shape[1] == 4 * 10 + 6


def test_backbone_state_dict_is_a_detached_copy():
    ae = Autoencoder(tiny_cfg())
    exported = ae.backbone_state_dict()
    before = exported["model.0.conv.weight"].clone()
    with torch.no_grad():
        ae.encoder.model[0].conv.weight.add_(1)
    assert torch.equal(exported["model.0.conv.weight"], before)
    assert not exported["model.0.conv.weight"].requires_grad


def test_pretrain_checkpoint_of_a_channels_last_model_is_contiguous(ae_n):
    from copy import deepcopy

    from extensions.autoencoder.export import make_pretrain_checkpoint

    model = deepcopy(ae_n).train().to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model(torch.rand(1, 3, 64, 64).contiguous(memory_format=torch.channels_last)).mean().backward()
    optimizer.step()
    assert not model.encoder.model[0].conv.weight.is_contiguous()
    ckpt = make_pretrain_checkpoint(model, epoch=0, best_loss=1.0, optimizer=optimizer)
    momentum = [s["momentum_buffer"] for s in ckpt["optimizer"]["state"].values()]
    for name, tensors in (("backbone", ckpt["backbone"].values()), ("autoencoder", ckpt["autoencoder"].values()),
                          ("optimizer", momentum)):
        tensors = list(tensors)
        assert tensors and all(t.is_contiguous() for t in tensors), name
    assert model.encoder.model[0].conv.weight.is_contiguous(memory_format=torch.channels_last), "live model kept"
