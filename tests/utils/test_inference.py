"""Shared prediction steps: input tensors, NMS settings, boxes back to the original image, counts, drawing."""

from __future__ import annotations

import numpy as np
import torch

from utils.inference import NmsSettings, class_counts, scale_to_original, to_input_tensor
from utils.nms import non_max_suppression
from utils.plotting.detections import draw_detections

NAMES = {0: "cat", 1: "dog"}


def test_to_input_tensor_batches_and_scales():
    im = np.full((3, 4, 5), 255, np.uint8)
    x = to_input_tensor(im, "cpu")
    assert x.shape == (1, 3, 4, 5) and x.dtype == torch.float32 and float(x.max()) == 1.0
    assert to_input_tensor(np.stack([im, im]), "cpu", torch.float64).shape == (2, 3, 4, 5)


def test_nms_settings_apply_equals_the_direct_call():
    pred = torch.rand(2, 50, 7, generator=torch.Generator().manual_seed(0)) * torch.tensor([64, 64, 20, 20, 1, 1, 1])
    settings = NmsSettings(0.2, 0.5, classes=[1], max_det=5)
    for got, want in zip(settings.apply(pred), non_max_suppression(pred, 0.2, 0.5, [1], max_det=5), strict=True):
        assert torch.equal(got, want) and len(got) <= 5 and set(got[:, 5].tolist()) <= {1.0}


def test_scale_to_original_maps_letterbox_padding_back():
    det = torch.tensor([[0.0, 16.0, 32.0, 48.0, 0.9, 1.0]])  # input 64x64 of an original 64x128 (h, w)
    exact = scale_to_original(det.clone(), (64, 64), (64, 128))
    torch.testing.assert_close(exact[0, :4], torch.tensor([0.0, 0.0, 64.0, 64.0]))
    det = torch.tensor([[1.3, 17.3, 32.0, 48.0, 0.9, 1.0]])
    rounded = scale_to_original(det, (64, 64), (64, 128), round_boxes=True)
    assert rounded is det and rounded[0, :4].tolist() == [3.0, 3.0, 64.0, 64.0]


def test_class_counts_text():
    det = torch.tensor([[0, 0, 1, 1, 0.9, 1], [0, 0, 1, 1, 0.8, 0], [0, 0, 1, 1, 0.7, 1]], dtype=torch.float32)
    assert class_counts(det, NAMES) == ["1 cat", "2 dogs"] and class_counts(det[:0], NAMES) == []


def test_draw_detections_copies_and_follows_style():
    im = np.zeros((40, 60, 3), np.uint8)
    det = torch.tensor([[5.0, 15.0, 40.0, 35.0, 0.9, 0.0]])
    labelled = draw_detections(im, det, NAMES, line_width=1)
    plain = draw_detections(im, det, NAMES, line_width=1, labels=False)
    rgb = draw_detections(im, det, NAMES, line_width=1, labels=False, bgr=False)
    assert not im.any() and labelled.any() and not np.array_equal(labelled, plain)
    assert np.array_equal(plain[..., ::-1], rgb)
