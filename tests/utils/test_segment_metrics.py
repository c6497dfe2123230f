"""Mask operations and segmentation metrics on hand-made cases with exact expected numbers."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from utils.mask_ops import (
    crop_mask,
    mask_iou,
    masks2segments,
    masks_iou,
    process_mask,
    process_mask_native,
    process_mask_upsample,
    scale_image,
)
from utils.segment.metrics import Metrics, ap_per_class_box_and_mask, fitness, match_masks

IOUV = torch.linspace(0.5, 0.95, 10)


def _mask(shape, rows, cols):
    m = torch.zeros(shape, dtype=torch.bool)
    m[rows[0]:rows[1], cols[0]:cols[1]] = True
    return m


# ---------------------------------------------------------------------------------------------------------- mask ops
def test_mask_iou_exact():
    a = _mask((8, 8), (0, 4), (0, 5))  # 20 px
    b = _mask((8, 8), (0, 4), (0, 4))  # 16 px inside a
    c = _mask((8, 8), (2, 6), (3, 7))  # 16 px, 4 shared with b, 8 with a
    iou = mask_iou(torch.stack([a, b]).view(2, -1), torch.stack([b, c]).view(2, -1), eps=0.0)
    assert torch.allclose(iou, torch.tensor([[16 / 20, 4 / 32], [1.0, 2 / 30]]))
    assert torch.allclose(masks_iou(torch.stack([a, b]).view(2, -1), torch.stack([b, c]).view(2, -1), eps=0.0),
                          torch.tensor([0.8, 2 / 30]))


def test_crop_mask_keeps_pixels_whose_index_is_inside_the_box():
    masks = torch.ones(2, 4, 6)
    out = crop_mask(masks, torch.tensor([[1.0, 0.5, 3.0, 2.0], [0.0, 0.0, 6.0, 4.0]]))
    expected = torch.zeros(4, 6)
    expected[1, 1:3] = 1  # x in [1, 3), y in [0.5, 2): columns 1-2, row 1
    assert torch.equal(out[0], expected) and out[1].sum() == 24


def test_process_mask_thresholds_sigmoid_inside_the_box():
    protos = torch.zeros(2, 4, 4)
    protos[0] = 3.0  # coefficient (1, 0): logit 3 everywhere
    protos[1, :, :2] = -5.0  # coefficient (0, 1): logit -5 on the left half, 0 on the right (sigmoid 0.5: off)
    masks_in = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]])
    boxes = torch.tensor([[0.0, 0.0, 8.0, 8.0], [0.0, 0.0, 16.0, 16.0], [0.0, 0.0, 16.0, 8.0]])  # input 16 x 16
    out = process_mask(protos, masks_in, boxes, (16, 16))
    assert out.shape == (3, 4, 4) and out.dtype == torch.bool
    assert out[0].sum() == 4 and out[0][:2, :2].all()  # box scaled by 4/16 -> 2 x 2 cells
    assert out[1].sum() == 0
    assert torch.equal(out[2], _mask((4, 4), (0, 2), (0, 4)))  # 3 + 5 > 0 left, 3 > 0 right, rows 0-1
    up = process_mask(protos, masks_in, boxes, (16, 16), upsample=True)
    assert up.shape == (3, 16, 16) and up[0][:7, :7].all() and not up[0][9:].any()
    assert torch.equal(process_mask_upsample(protos, masks_in[:1], boxes[:1], (16, 16))[0],
                       _mask((16, 16), (0, 8), (0, 8)))


def test_process_mask_native_removes_the_letterbox_padding():
    protos = torch.full((1, 8, 8), 4.0)
    protos[0, :2] = -4.0  # letterbox rows 0-1 and 6-7 are padding for a 16 x 32 original in a 32 x 32 input
    protos[0, 6:] = -4.0
    out = process_mask_native(protos, torch.ones(1, 1), torch.tensor([[0.0, 0.0, 32.0, 16.0]]), (16, 32))
    assert out.shape == (1, 16, 32) and out.all()


def test_no_detections_give_empty_masks_of_the_right_size():
    protos, none, boxes = torch.randn(32, 8, 8), torch.zeros(0, 32), torch.zeros(0, 4)
    assert process_mask(protos, none, boxes, (32, 24)).shape == (0, 8, 8)
    assert process_mask(protos, none, boxes, (32, 24), upsample=True).shape == (0, 32, 24)
    assert process_mask_upsample(protos, none, boxes, (32, 24)).shape == (0, 32, 24)
    assert process_mask_native(protos, none, boxes, (30, 20)).shape == (0, 30, 20)


def test_scale_image_handles_more_than_512_channels():
    rng = np.random.default_rng(0)
    masks = rng.random((4, 5, 513)).astype(np.float32)
    out = scale_image((4, 5), masks, (8, 10))
    assert out.shape == (8, 10, 513)
    reference = np.stack([cv2.resize(masks[:, :, i], (10, 8)) for i in range(513)], 2)
    assert np.allclose(out, reference)
    assert scale_image((4, 5), masks[:, :, 0], (8, 10)).shape == (8, 10, 1)
    with pytest.raises(ValueError, match="masks must be"):
        scale_image((4, 5), np.zeros(3), (8, 10))


def test_masks2segments_outlines():
    masks = torch.stack([_mask((10, 10), (2, 5), (3, 8)), torch.zeros(10, 10, dtype=torch.bool)])
    segments = masks2segments(masks)
    assert segments[1].shape == (0, 2)
    assert segments[0].min(0).tolist() == [3, 2] and segments[0].max(0).tolist() == [7, 4]
    two = _mask((10, 10), (0, 2), (0, 2)) | _mask((10, 10), (5, 9), (5, 9))
    assert len(masks2segments(two[None], "concat")[0]) == 8  # both squares' 4 corners


# ---------------------------------------------------------------------------------------------------------- matching
def test_match_masks_uses_mask_iou_and_the_box_matching_rule():
    label0, label1 = _mask((8, 8), (0, 4), (0, 6)), _mask((8, 8), (5, 8), (5, 8))
    dets = torch.tensor([[0, 0, 5, 4, 0.9, 0], [5, 5, 8, 8, 0.8, 1], [5, 5, 8, 8, 0.7, 0]], dtype=torch.float32)
    pred = torch.stack([_mask((8, 8), (0, 4), (0, 4)), label1, label1])  # IoU 16/24 with label 0; 1.0; 1.0
    labels = torch.tensor([[0.0, 0, 0, 0, 0], [0.0, 0, 0, 0, 0]])
    correct = match_masks(dets, labels, IOUV, pred, torch.stack([label0, label1]))
    assert correct[0].tolist() == [True] * 4 + [False] * 6  # 0.667 passes 0.50..0.65
    assert not correct[1].any()  # class 1 vs label class 0
    assert correct[2].all()
    index = label0.to(torch.uint8) + 2 * label1.to(torch.uint8)  # overlap format, same labels
    assert torch.equal(match_masks(dets, labels, IOUV, pred, index[None], overlap=True), correct)
    big = torch.nn.functional.interpolate(torch.stack([label0, label1]).float()[None], (16, 16))[0]
    assert torch.equal(match_masks(dets, labels, IOUV, pred, big), correct)  # ground truth at 2x, resized


# ---------------------------------------------------------------------------------------------------------- metrics
def test_box_and_mask_ap_and_fitness_exact():
    # 2 labels of class 0; both detections match by mask at every threshold; by box the second one only at
    # IoU 0.50-0.70. Mask AP = 0.995 (upstream's 101-point AP of a perfect ranking); box AP at 0.75-0.95 = 0.6225
    # (recall 0.5, precision 1 -> 0.5: 0.49 + (1 + 0.5) / 2 * 0.01 + 0.125 by the trapezoid rule)
    tp_m = np.ones((2, 10), bool)
    tp_b = np.array([[True] * 10, [True] * 5 + [False] * 5])
    results = ap_per_class_box_and_mask(tp_m, tp_b, np.array([0.9, 0.8]), np.zeros(2), np.zeros(2))
    assert np.allclose(results["masks"]["ap"], 0.995)
    assert np.allclose(results["boxes"]["ap"], [[0.995] * 5 + [0.6225] * 5])
    metrics = Metrics()
    metrics.update(results)
    mean = metrics.mean_results()
    assert np.allclose(mean, [1.0, 1.0, 0.995, 0.80875, 1.0, 1.0, 0.995, 0.995], atol=1e-3)
    assert np.allclose(mean[2:4], [0.995, 0.80875]) and np.allclose(mean[6:], [0.995, 0.995])
    assert np.allclose(metrics.class_result(0)[2:4], [0.995, 0.80875])
    assert np.allclose(metrics.get_maps(3), [0.80875 + 0.995] * 3)  # upstream sums box and mask maps
    assert np.allclose(fitness(np.array([mean])), [0.1 * 0.995 + 0.9 * 0.80875 + 0.995])


def test_empty_metrics_are_zero():
    metrics = Metrics()
    assert metrics.mean_results() == (0.0,) * 8 and list(metrics.get_maps(2)) == [0.0, 0.0]


def test_rle_predictions_score_one_with_pycocotools_segm(tmp_path):
    import json

    from utils.coco_eval import masks_to_rle, predictions_to_coco, save_predictions_json, score_with_pycocotools

    masks = np.zeros((40, 50, 2), dtype=np.uint8)
    masks[5:20, 5:30, 0] = 1
    masks[25:38, 30:48, 1] = 1
    boxes = [[5, 5, 25, 15], [30, 25, 18, 13]]
    annotations = {  # ground truth as RLE of the same masks: a correct encoding scores mask IoU 1
        "images": [{"id": 7, "width": 50, "height": 40, "file_name": "7.jpg"}],
        "categories": [{"id": 0, "name": "a"}, {"id": 1, "name": "b"}],
        "annotations": [{"id": i + 1, "image_id": 7, "category_id": i, "iscrowd": 0, "segmentation": rle,
                         "area": float(masks[:, :, i].sum()), "bbox": boxes[i]}
                        for i, rle in enumerate(masks_to_rle(masks))],
    }
    (tmp_path / "anno.json").write_text(json.dumps(annotations))
    predn = torch.tensor([[5.0, 5, 30, 20, 0.9, 0], [30, 25, 48, 38, 0.8, 1]])
    entries = predictions_to_coco(predn, tmp_path / "7.jpg", [0, 1], masks=masks)
    assert entries[0]["segmentation"]["size"] == [40, 50] and isinstance(entries[0]["segmentation"]["counts"], str)
    save_predictions_json(entries, tmp_path / "pred.json")
    segm = score_with_pycocotools(tmp_path / "anno.json", tmp_path / "pred.json", iou_type="segm")
    assert segm is not None and segm[0] > 0.99 and segm[1] > 0.99
    wrong = predictions_to_coco(predn, tmp_path / "7.jpg", [0, 1], masks=masks[:, ::-1].copy())  # mirrored masks
    save_predictions_json(wrong, tmp_path / "pred.json")
    assert score_with_pycocotools(tmp_path / "anno.json", tmp_path / "pred.json", iou_type="segm")[0] < 0.5
