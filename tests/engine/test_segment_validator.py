"""SegmentValidator pieces: leaving out the masks of detections that cannot match changes no metric."""

from __future__ import annotations

import torch

from engine.segment_validator import candidate_mask_rows
from utils.boxes import xywh2xyxy
from utils.mask_ops import process_mask
from utils.segment.metrics import match_masks

IOUV = torch.linspace(0.5, 0.95, 10)


def _scene(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.tensor([[0.0, 16, 16, 16, 16], [1.0, 44, 20, 20, 12], [0.0, 40, 48, 16, 20]])  # cls, xywh (64 px)
    gt = torch.zeros(1, 16, 16)
    for k, box in enumerate((xywh2xyxy(labels[:, 1:]) / 4).round().long().tolist()):
        gt[0, box[1]:box[3], box[0]:box[2]] = k + 1
    xy = torch.rand(40, 2, generator=g) * 60
    boxes = torch.cat((xy, (xy + 4 + torch.rand(40, 2, generator=g) * 20).clamp(max=64)), 1)
    boxes[:3] = xywh2xyxy(labels[:, 1:]) + torch.randn(3, 4, generator=g)  # three good detections
    cls = torch.randint(0, 2, (40, 1), generator=g).float()
    cls[:3, 0] = labels[:, 0]
    conf = torch.rand(40, 1, generator=g).sort(0, descending=True).values
    coefficients = torch.randn(40, 32, generator=g)
    coefficients[:3] = 0
    coefficients[:3, 0] = 1.0  # prototype 0 is positive everywhere: the mask is the box
    protos = torch.randn(32, 16, 16, generator=g)
    protos[0] = 5.0
    dets = torch.cat((boxes, conf, cls, coefficients), 1)
    return dets, labels, gt, protos


def test_candidate_rows_give_the_same_mask_matches_as_every_mask():
    for seed in range(5):
        dets, labels, gt, protos = _scene(seed)
        labels_xyxy = torch.cat((labels[:, :1], xywh2xyxy(labels[:, 1:])), 1)
        every = match_masks(dets, labels_xyxy, IOUV, process_mask(protos, dets[:, 6:], dets[:, :4], (64, 64)), gt,
                            overlap=True)
        rows = candidate_mask_rows(dets, labels)
        partial = torch.zeros_like(every)
        partial[rows] = match_masks(dets[rows], labels_xyxy, IOUV,
                                    process_mask(protos, dets[rows, 6:], dets[rows, :4], (64, 64)), gt, overlap=True)
        assert torch.equal(partial, every)
        assert every[:3].any() and len(rows) < len(dets)


def test_candidate_rows_keep_the_first_rows_to_draw_and_handle_no_labels():
    dets, labels, _, _ = _scene()
    assert candidate_mask_rows(dets, labels[:0], first=15).tolist() == list(range(15))
    rows = candidate_mask_rows(dets, labels, first=5)
    assert rows[:5].tolist() == [0, 1, 2, 3, 4] and torch.equal(rows, rows.sort().values)
