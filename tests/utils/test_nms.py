"""Tests for utils/nms.py: equality with a per-image, per-class reference, robustness, fallback NMS, upstream parity."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

import utils.nms as nms_module
from utils.nms import MAX_NMS, nms, nms_torch, non_max_suppression

PARITY = Path("/work/shared/fixtures/upstream/yolov5n-trained.parity.pt")


def reference_nms(prediction, conf_thres=0.25, iou_thres=0.45, classes=None, agnostic=False, multi_label=False,
                  labels=(), max_det=300, nm=0):
    """Straightforward per-image reference: one torchvision NMS call per class, no coordinate offsets."""
    nc = prediction.shape[2] - nm - 5
    output = []
    for index, x in enumerate(prediction):
        x = x[x[:, 4] > conf_thres]
        if labels and len(labels[index]):
            lb = labels[index]
            extra = torch.zeros((len(lb), nc + nm + 5))
            extra[:, :4], extra[:, 4] = lb[:, 1:5], 1.0
            extra[torch.arange(len(lb)), lb[:, 0].long() + 5] = 1.0
            x = torch.cat((x, extra))
        scores = x[:, 5:5 + nc] * x[:, 4:5]
        half = x[:, 2:4] / 2
        box, mask = torch.cat((x[:, :2] - half, x[:, :2] + half), 1), x[:, 5 + nc:] * x[:, 4:5]  # upstream scales
        if multi_label and nc > 1:
            i, j = (scores > conf_thres).nonzero(as_tuple=True)
            x = torch.cat((box[i], scores[i, j, None], j[:, None].float(), mask[i]), 1)
        else:
            conf, j = scores.max(1, keepdim=True)
            x = torch.cat((box, conf, j.float(), mask), 1)[conf.view(-1) > conf_thres]
        x = x[torch.isfinite(x[:, :5]).all(1)]
        if classes is not None:
            x = x[(x[:, 5:6] == torch.tensor(classes, dtype=x.dtype)).any(1)]
        x = x[x[:, 4].argsort(descending=True)[:MAX_NMS]]
        groups = torch.zeros(len(x)) if agnostic else x[:, 5]
        keep = torch.zeros(len(x), dtype=torch.bool)
        for group in groups.unique():
            members = (groups == group).nonzero().flatten()
            keep[members[torchvision.ops.nms(x[members, :4], x[members, 4], iou_thres)]] = True
        output.append(x[keep][:max_det])
    return output


def random_prediction(batch=3, n=1500, nc=6, nm=0, seed=0, clusters=25):
    """Head-like output (B, N, 5 + nc + nm): scattered boxes plus clusters of overlapping, confident boxes."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(batch, n, 2, generator=g) * 320
    wh = torch.rand(batch, n, 2, generator=g) * 60 + 4
    members = n // 4
    centres = (torch.rand(batch, clusters, 2, generator=g) * 320).repeat_interleave(members // clusters + 1, 1)
    xy[:, :members] = centres[:, :members] + torch.randn(batch, members, 2, generator=g) * 4
    wh[:, :members] = 40 + torch.randn(batch, members, 2, generator=g) * 4
    obj = torch.rand(batch, n, 1, generator=g) ** 3
    cls = torch.rand(batch, n, nc, generator=g)
    masks = torch.randn(batch, n, nm, generator=g)
    return torch.cat((xy, wh, obj, cls, masks), 2)


def assert_same(ours, reference):
    assert len(ours) == len(reference)
    for a, b in zip(ours, reference, strict=True):
        assert a.shape == b.shape
        assert torch.equal(a, b)


@pytest.mark.parametrize("kwargs", [
    dict(conf_thres=0.25, iou_thres=0.45),
    dict(conf_thres=0.001, iou_thres=0.6, multi_label=True),
    dict(conf_thres=0.01, iou_thres=0.5, agnostic=True),
    dict(conf_thres=0.01, iou_thres=0.5, classes=[0, 3]),
    dict(conf_thres=0.001, iou_thres=0.7, multi_label=True, max_det=7),
    dict(conf_thres=0.05, iou_thres=0.3, multi_label=True, agnostic=True, classes=[1, 2, 5]),
    dict(conf_thres=0.0, iou_thres=1.0, max_det=1000),
])
def test_matches_reference(kwargs):
    prediction = random_prediction()
    ours = non_max_suppression(prediction, **kwargs)
    reference = reference_nms(prediction, **kwargs)
    assert_same(ours, reference)
    assert sum(len(x) for x in ours) > 0


def test_output_format_and_order():
    out = non_max_suppression(random_prediction(batch=2, nc=4), 0.001, 0.6, max_det=50)
    for det in out:
        assert det.shape[1] == 6 and det.dtype == torch.float32
        assert len(det) == 50
        assert (det[1:, 4] <= det[:-1, 4]).all()
        assert (det[:, 2] >= det[:, 0]).all() and (det[:, 3] >= det[:, 1]).all()


def test_prefix_growth_with_heavy_suppression(monkeypatch):
    # 40 clusters of 100 near-identical boxes -> at most 80 survivors (2 classes): max_det=300 needs every box
    g = torch.Generator().manual_seed(3)
    centres = torch.rand(1, 40, 2, generator=g).repeat_interleave(100, 1) * 2000
    xy = centres + torch.rand(1, 4000, 2, generator=g)
    prediction = torch.cat((xy, torch.full((1, 4000, 2), 30.0), torch.rand(1, 4000, 3, generator=g)), 2)
    calls = []
    real_nms = nms_module.nms
    monkeypatch.setattr(nms_module, "nms", lambda boxes, *args: calls.append(len(boxes)) or real_nms(boxes, *args))
    for max_det in (10, 39, 300):
        calls.clear()
        ours = non_max_suppression(prediction, 0.001, 0.5, max_det=max_det)
        assert_same(ours, reference_nms(prediction, 0.001, 0.5, max_det=max_det))
    candidates = int(((prediction[0, :, 5:] * prediction[0, :, 4:5]).max(1).values > 0.001).sum())
    assert 39 < len(ours[0]) < 300
    assert len(calls) > 1 and calls[-1] == candidates and calls == sorted(calls)


def test_max_nms_cap():
    # 30,000 identical confident boxes then 1,000 weaker distinct ones: only the top 30,000 enter NMS
    strong = torch.tensor([50.0, 50.0, 20.0, 20.0, 0.9, 1.0]).repeat(MAX_NMS, 1)
    xy = torch.stack((torch.arange(1000.0) * 30 + 1000, torch.full((1000,), 500.0)), 1)
    weak = torch.cat((xy, torch.full((1000, 2), 10.0), torch.full((1000, 1), 0.5), torch.ones(1000, 1)), 1)
    prediction = torch.cat((strong, weak))[None]
    ours = non_max_suppression(prediction, 0.1, 0.5, max_det=2000)
    assert len(ours[0]) == 1
    assert_same(ours, reference_nms(prediction, 0.1, 0.5, max_det=2000))


def test_classes_never_interact_even_with_negative_and_large_coordinates():
    box = [-500.0, -300.0, 200.0, 100.0]
    prediction = torch.tensor([[box + [0.9, 1.0, 0.0, 0.0], box + [0.85, 0.0, 0.0, 1.0],
                                [9e4, 9e4, 10.0, 10.0, 0.8, 1.0, 0.0, 0.0]]])
    per_class = non_max_suppression(prediction, 0.1, 0.5)[0]
    assert per_class[:, 5].tolist() == [0.0, 2.0, 0.0]
    agnostic = non_max_suppression(prediction, 0.1, 0.5, agnostic=True)[0]
    assert agnostic[:, 5].tolist() == [0.0, 0.0]


def test_iou_exactly_at_threshold_is_kept():
    # IoU of the two boxes is exactly 0.5: suppression needs IoU > iou_thres
    # xyxy (0, 0, 20, 20) and (10, 0, 20, 20): intersection 200, union 400
    prediction = torch.tensor([[[10.0, 10.0, 20.0, 20.0, 0.9, 1.0], [15.0, 10.0, 10.0, 20.0, 0.8, 1.0]]])
    assert len(non_max_suppression(prediction, 0.1, 0.5)[0]) == 2
    assert len(non_max_suppression(prediction, 0.1, 0.49)[0]) == 1


def test_empty_images_and_empty_batch():
    prediction = random_prediction(batch=3)
    prediction[1, :, 4] = 0.0
    out = non_max_suppression(prediction, 0.25, 0.45, nm=0)
    assert out[1].shape == (0, 6)
    assert len(out[0]) and len(out[2])
    out = non_max_suppression(torch.zeros((2, 0, 9)), nm=1)
    assert [o.shape for o in out] == [(0, 7), (0, 7)]


def test_non_finite_rows_are_dropped():
    prediction = random_prediction(batch=2, seed=4)
    bad = prediction.clone()
    bad[0, :20, 0] = float("nan")
    bad[0, 20:40, 2] = float("inf")
    bad[1, :20, 4] = float("nan")
    bad[1, 20:40, 4] = float("inf")
    bad[1, 40:60, 6] = float("nan")
    bad[1, 60:80, 7] = float("inf")
    ours = non_max_suppression(bad, 0.001, 0.6, multi_label=True)
    assert all(torch.isfinite(o).all() for o in ours)
    assert_same(ours, reference_nms(bad, 0.001, 0.6, multi_label=True))
    nan_everything = torch.full((2, 50, 8), float("nan"))
    assert [len(o) for o in non_max_suppression(nan_everything, 0.001)] == [0, 0]


def test_apriori_labels_are_added_with_conf_one():
    prediction = random_prediction(batch=2, seed=5)
    labels = [torch.tensor([[2.0, 100.0, 100.0, 30.0, 30.0], [4.0, 3000.0, 3000.0, 10.0, 10.0]]), torch.zeros((0, 5))]
    ours = non_max_suppression(prediction, 0.01, 0.5, labels=labels, multi_label=True)
    assert_same(ours, reference_nms(prediction, 0.01, 0.5, labels=labels, multi_label=True))
    far = ours[0][ours[0][:, 0] > 2000]
    assert far.tolist() == [[2995.0, 2995.0, 3005.0, 3005.0, 1.0, 4.0]]


def test_apriori_label_with_bad_class_is_rejected():
    labels = [torch.zeros((0, 5)), torch.tensor([[9.0, 10.0, 10.0, 5.0, 5.0]])]
    with pytest.raises(ValueError, match=r"labels\[1\] has class 9 outside \[0, 6\)"):
        non_max_suppression(random_prediction(batch=2), labels=labels)


def test_mask_coefficients_are_carried_times_objectness_as_upstream():
    prediction = random_prediction(batch=2, nc=3, nm=4, seed=6)
    ours = non_max_suppression(prediction, 0.01, 0.5, nm=4)
    assert all(o.shape[1] == 10 for o in ours)
    assert_same(ours, reference_nms(prediction, 0.01, 0.5, nm=4))
    prediction[..., 4] = 1.0  # objectness 1: the raw coefficients come out
    row = non_max_suppression(prediction[:1], 0.01, 0.5, nm=4)[0][0]
    match = (prediction[0, :, 5:8].max(1).values - row[4]).abs().argmin()
    assert torch.equal(row[6:], prediction[0, match, 8:])


def test_tuple_input_and_single_class_multi_label():
    prediction = random_prediction(batch=1, nc=1, seed=7)
    ours = non_max_suppression((prediction, ["raw outputs"]), 0.01, 0.5, multi_label=True)
    assert_same(ours, reference_nms(prediction, 0.01, 0.5))


def test_tied_confidences_follow_upstream_sort():
    prediction = random_prediction(batch=2, seed=8)
    prediction[..., 4] = 0.5
    prediction[..., 5:] = torch.round(prediction[..., 5:] * 4) / 4  # many exact ties
    assert_same(non_max_suppression(prediction, 0.001, 0.5), reference_nms(prediction, 0.001, 0.5))


@pytest.mark.parametrize("conf_thres, iou_thres, message", [
    (1.5, 0.5, "Invalid Confidence threshold 1.5"), (-0.1, 0.5, "Invalid Confidence threshold"),
    (0.25, 1.01, "Invalid IoU 1.01"), (0.25, -1, "Invalid IoU")])
def test_threshold_validation(conf_thres, iou_thres, message):
    with pytest.raises(AssertionError, match=message):
        non_max_suppression(torch.zeros((1, 5, 7)), conf_thres, iou_thres)


def test_fallback_path_gives_identical_results(monkeypatch):
    prediction = random_prediction(batch=2, seed=9)
    expected = non_max_suppression(prediction, 0.001, 0.6, multi_label=True)
    monkeypatch.setattr(nms_module, "_torchvision_nms", lambda: None)
    assert_same(non_max_suppression(prediction, 0.001, 0.6, multi_label=True), expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n, spread", [(0, 100), (1, 100), (7, 20), (150, 60), (400, 150)])
def test_nms_torch_equals_torchvision(n, spread, dtype):
    g = torch.Generator().manual_seed(n)
    xy = torch.rand(n, 2, generator=g) * spread
    boxes = torch.cat((xy, xy + torch.rand(n, 2, generator=g) * 40), 1).to(dtype)
    boxes[::17, 2:] = boxes[::17, :2]  # some zero-area boxes
    scores = (torch.rand(n, generator=g) * 10).round().to(dtype)  # many tied scores
    for threshold in (0.0, 0.3, 0.5, 0.9):
        expected = torchvision.ops.nms(boxes, scores, threshold)
        assert torch.equal(nms_torch(boxes, scores, threshold), expected)
        assert torch.equal(nms_torch(boxes, scores, threshold, block_size=7), expected)
        assert torch.equal(nms(boxes, scores, threshold), expected)


@pytest.mark.skipif(not PARITY.exists(), reason="upstream parity fixture not available")
def test_upstream_parity_fixture():
    fixture = torch.load(PARITY, weights_only=True)
    ours = non_max_suppression(fixture["infer"], conf_thres=0.001, iou_thres=0.6, max_det=300)
    assert len(ours) == len(fixture["nms"]) == 2
    for a, b in zip(ours, fixture["nms"], strict=True):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, atol=1e-3, rtol=0)
