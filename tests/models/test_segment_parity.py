"""Segmentation parity with upstream: ``../shared/fixtures/upstream-seg/yolov5n-seg-random.pt`` (an fp16 pickled
upstream ``SegmentationModel``, nc 10) loaded through the safe loader reproduces the tensors upstream computed from
it (``yolov5n-seg-random.parity.pt``, see the fixture README): eval outputs and prototypes, train-mode outputs, the
segmentation loss and its four items, NMS with 32 mask coefficients and ``process_mask`` masks (tolerance 1e-3;
masks: at most 0.1 % of pixels may differ), parameter count and summary line.
"""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn as nn

from models.loading import load_model
from models.yolo import Segment, SegmentationModel
from tests.module_support import REPO, run_fresh_python
from utils.checkpoint import torch_safe_load
from utils.logging import LOGGER
from utils.mask_ops import process_mask
from utils.nms import non_max_suppression
from utils.segment.loss import ComputeLoss

ATOL = 1e-3
CHECKPOINT = "yolov5n-seg-random.pt"


@pytest.fixture(scope="module")
def seg_model(upstream_seg_fixture_dir) -> SegmentationModel:
    return load_model(upstream_seg_fixture_dir / CHECKPOINT, fuse=False)


def test_checkpoint_loads_safely_in_a_fresh_process(upstream_seg_fixture_dir):
    code = ("import sys, torch; from utils.checkpoint import torch_safe_load; c = torch_safe_load(sys.argv[1]); "
            "m = c['model']; print(type(m).__module__, type(m).__name__, next(m.parameters()).dtype, c['epoch'], "
            "type(m.model[-1]).__name__, m.model[-1].detect.__qualname__)")
    result = run_fresh_python(code, upstream_seg_fixture_dir / CHECKPOINT, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["models.yolo", "SegmentationModel", "torch.float16", "-1", "Segment",
                                     "Detect.forward"]


def test_loaded_model_is_our_segmentation_model(seg_model, seg_parity):
    assert type(seg_model) is SegmentationModel and type(seg_model.model[-1]) is Segment
    assert next(seg_model.parameters()).dtype == torch.float32 and not seg_model.training
    assert seg_model.names == seg_parity["names"]
    head = seg_model.model[-1]
    assert (head.nc, head.nm, head.npr, head.no) == (10, 32, 64, 47)
    assert torch.equal(seg_model.stride.float(), seg_parity["stride"].float())
    assert torch.allclose(head.anchors * head.stride.view(-1, 1, 1), seg_parity["anchors"].float(), atol=ATOL)


def test_eval_outputs_and_prototypes_match_upstream(seg_model, seg_parity):
    with torch.no_grad():
        pred, proto, raw = seg_model(seg_parity["input"])
    assert pred.shape == seg_parity["infer"].shape == (2, 4032, 47)
    assert proto.shape == seg_parity["proto"].shape == (2, 32, 64, 64)
    assert (pred - seg_parity["infer"]).abs().max() < ATOL
    assert (proto - seg_parity["proto"]).abs().max() < ATOL
    assert len(raw) == 3


def test_train_mode_outputs_match_upstream(upstream_seg_fixture_dir, seg_parity):
    model = load_model(upstream_seg_fixture_dir / CHECKPOINT, fuse=False).train()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()
    with torch.no_grad():
        levels, proto = model(seg_parity["input"])
    assert [t.shape for t in levels] == [t.shape for t in seg_parity["train"]]
    for ours, theirs in zip(levels, seg_parity["train"], strict=True):
        assert (ours - theirs).abs().max() < ATOL
    assert (proto - seg_parity["train_proto"]).abs().max() < ATOL


def test_segmentation_loss_and_items_match_upstream(seg_model, seg_parity):
    loss_fn = ComputeLoss(seg_model, overlap=True, hyp=seg_parity["hyp"])
    loss, items = loss_fn((seg_parity["train"], seg_parity["train_proto"]), seg_parity["targets"], seg_parity["masks"])
    assert items.shape == (4,)  # box, seg, obj, cls
    assert (loss - seg_parity["loss"]).abs().max() < ATOL
    assert (items - seg_parity["loss_items"]).abs().max() < ATOL
    assert items[1] > 0  # the mask term is really computed


def test_loss_reads_model_hyp_like_upstream(seg_model, seg_parity):
    loss_fn = ComputeLoss(seg_model, overlap=True)  # the fixture's model.hyp is hyp.scratch-low, as the reference
    _, items = loss_fn((seg_parity["train"], seg_parity["train_proto"]), seg_parity["targets"], seg_parity["masks"])
    assert (items - seg_parity["loss_items"]).abs().max() < ATOL


def test_nms_with_mask_coefficients_matches_upstream(seg_parity):
    out = non_max_suppression(seg_parity["infer"], conf_thres=0.001, iou_thres=0.45, max_det=30, nm=32)
    for ours, theirs in zip(out, seg_parity["nms"], strict=True):
        assert ours.shape == theirs.shape == (30, 38)
        assert (ours - theirs).abs().max() < ATOL


def test_process_mask_matches_upstream(seg_parity):
    for i, det in enumerate(seg_parity["nms"]):
        masks = process_mask(seg_parity["proto"][i], det[:, 6:], det[:, :4], (256, 256), upsample=True)
        reference = seg_parity["masks_out"][i]
        assert masks.shape == reference.shape and masks.dtype == torch.bool
        assert (masks != reference).float().mean() <= 0.001
        assert reference.any()


def test_parameter_count_and_summary_line(seg_model, seg_parity, caplog):
    params = sum(p.numel() for p in seg_model.parameters())
    leaf_modules = sum(1 for m in seg_model.modules() if not m._modules)
    # upstream HEAD's line: "YOLOv5n-seg summary: 132 layers, 1,896,839 parameters, 6.9 GFLOPs" counts leaf modules;
    # our line keeps the convention of our detection line and upstream v7.0 (all modules: 225, measured with 7.0.14)
    assert (params, leaf_modules, len(list(seg_model.modules()))) == (1_896_839, 132, 225)
    LOGGER.setLevel(logging.INFO)
    with caplog.at_level(logging.INFO, logger=LOGGER.name):
        layers, n_p, _, flops = seg_model.info()
    assert (layers, n_p, round(flops, 1)) == (225, 1_896_839, 6.9)
    assert "YOLOv5n-seg summary: 225 layers, 1896839 parameters, 1896839 gradients, 6.9 GFLOPs" in caplog.text


def test_fixture_rebuilds_from_yaml_with_the_same_state_layout(seg_model):
    fresh = SegmentationModel(seg_model.yaml, nc=seg_model.yaml["nc"])
    ours, theirs = fresh.state_dict(), seg_model.state_dict()
    assert list(ours) == list(theirs) and all(ours[k].shape == theirs[k].shape for k in ours)
    fresh.load_state_dict(theirs)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(fresh.eval()(x)[1], seg_model(x)[1], atol=1e-5)


def test_checkpoint_keys_are_upstreams(upstream_seg_fixture_dir):
    ckpt = torch_safe_load(upstream_seg_fixture_dir / CHECKPOINT)
    assert {"epoch", "best_fitness", "model", "ema", "updates", "optimizer", "opt", "git", "date"} <= set(ckpt)
    assert ckpt["model"].hyp["box"] == 0.05
