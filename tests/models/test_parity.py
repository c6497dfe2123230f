"""Upstream parity: a real upstream checkpoint loaded through our safe loader reproduces upstream's numbers.

Reference tensors come from ``../shared/fixtures/upstream/yolov5n-trained.parity.pt`` (computed by upstream from the
same checkpoint). Outputs are pixels (decoded) or logits (raw train outputs); tolerance 1e-3 absolute.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from models.experimental import attempt_load
from models.loading import load_model
from models.yolo import Detect, DetectionModel

ATOL = 1e-3


@pytest.fixture(scope="module")
def upstream_model(upstream_fixture_dir) -> DetectionModel:
    return load_model(upstream_fixture_dir / "yolov5n-trained.pt", fuse=False)


def test_loaded_object_is_our_detection_model(upstream_model, parity):
    assert type(upstream_model) is DetectionModel and type(upstream_model.model[-1]) is Detect
    assert not upstream_model.training
    assert next(upstream_model.parameters()).dtype == torch.float32
    assert upstream_model.names == parity["names"]


def test_eval_output_matches_upstream(upstream_model, parity):
    with torch.no_grad():
        pred, raw = upstream_model(parity["input"])
    assert pred.shape == parity["infer"].shape == (2, 6300, 15)
    assert torch.allclose(pred, parity["infer"], atol=ATOL, rtol=0)
    assert len(raw) == 3


def test_fused_eval_output_matches_upstream(upstream_fixture_dir, parity):
    model = attempt_load(upstream_fixture_dir / "yolov5n-trained.pt", fuse=True)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    with torch.no_grad():
        pred = model(parity["input"])[0]
    assert torch.allclose(pred, parity["infer_fused"], atol=ATOL, rtol=0)


def test_train_mode_raw_outputs_match_upstream(upstream_fixture_dir, parity):
    model = load_model(upstream_fixture_dir / "yolov5n-trained.pt", fuse=False).train()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()  # running statistics, as upstream computed the reference
    with torch.no_grad():
        outputs = model(parity["input"])
    assert [o.shape for o in outputs] == [t.shape for t in parity["train"]]
    for ours, theirs in zip(outputs, parity["train"], strict=True):
        assert torch.allclose(ours, theirs, atol=ATOL, rtol=0)


def test_strides_and_pixel_anchors_match_upstream(upstream_model, parity):
    head = upstream_model.model[-1]
    assert torch.equal(upstream_model.stride.float(), parity["stride"].float())
    assert torch.allclose(head.stride.float(), parity["stride"].float())
    pixel_anchors = head.anchors * head.stride.view(-1, 1, 1)
    assert torch.allclose(pixel_anchors, parity["anchors"].float(), atol=ATOL)


def test_fixture_rebuilds_from_yaml_with_same_state_layout(upstream_model):
    fresh = DetectionModel(upstream_model.yaml, nc=upstream_model.yaml["nc"])
    ours, theirs = fresh.state_dict(), upstream_model.state_dict()
    assert list(ours) == list(theirs)
    assert all(ours[k].shape == theirs[k].shape for k in ours)
    fresh.load_state_dict(theirs)
    fresh.eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(fresh(x)[0], upstream_model(x)[0], atol=1e-5)
