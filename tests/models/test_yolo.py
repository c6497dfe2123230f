"""models/yolo.py: Detect decode, bias init, TTA helpers, dtype/device handling and ClassificationModel."""

from __future__ import annotations

import math
from copy import deepcopy

import torch
import torch.nn as nn

from models.common import Classify
from models.experimental import Ensemble
from models.yolo import ClassificationModel, Detect, DetectionModel

TINY = {
    "nc": 3, "depth_multiple": 1.0, "width_multiple": 1.0, "anchors": [[10, 13, 16, 30], [30, 61, 62, 45]],
    "backbone": [[-1, 1, "Conv", [8, 3, 2]], [-1, 1, "Conv", [16, 3, 2]], [-1, 1, "Conv", [16, 3, 2]]],
    "head": [[[1, 2], 1, "Detect", ["nc", "anchors"]]],
}


def _tiny() -> DetectionModel:
    torch.manual_seed(0)
    return DetectionModel(deepcopy(TINY))


def test_detect_decode_matches_formula():
    head = Detect(nc=2, anchors=[[10, 20, 30, 40]], ch=(4,))
    head.stride = torch.tensor([8.0])
    head.anchors /= 8
    head.eval()
    nn.init.zeros_(head.m[0].weight)
    logits = torch.tensor([0.5, -1.0, 0.3, -0.2, 2.0, -3.0, 1.0])
    head.m[0].bias.data = torch.cat([logits, logits + 1])  # anchor 0, anchor 1
    pred, raw = head([torch.zeros(1, 4, 2, 3)])  # ny=2, nx=3
    assert pred.shape == (1, 2 * 2 * 3, 7) and raw[0].shape == (1, 2, 2, 3, 7)
    rows = pred.view(2, 2, 3, 7)  # anchor-major, then y, then x
    for a, (aw, ah) in enumerate([(10, 20), (30, 40)]):
        s = (logits + a).sigmoid()
        for y in range(2):
            for x in range(3):
                expected = torch.tensor([(2 * s[0] - 0.5 + x) * 8, (2 * s[1] - 0.5 + y) * 8,
                                         (2 * s[2]) ** 2 * aw, (2 * s[3]) ** 2 * ah, s[4], s[5], s[6]])
                assert torch.allclose(rows[a, y, x], expected, atol=1e-5)


def _eval_forward(model: DetectionModel, x: torch.Tensor, grad: bool, bf16: bool = False):
    with torch.set_grad_enabled(grad), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        return model(x)


def test_detect_in_place_decode_is_bit_identical_to_the_per_level_decode():
    """Without autograd the levels are decoded straight into the output; the numbers must not change."""
    model = _tiny().eval()
    head = model.model[-1]
    x = torch.rand(2, 3, 32, 48)  # batch 2: each level's rows of the output are a strided slice
    for bf16 in (False, True):
        with torch.no_grad():
            assert head._decodes_in_place()
        reference, reference_raw = _eval_forward(model, x, grad=True, bf16=bf16)
        assert reference.requires_grad  # the out-of-place decode ran
        fast, fast_raw = _eval_forward(model, x, grad=False, bf16=bf16)
        assert fast.dtype == reference.dtype == torch.float32
        assert fast.shape == (2, 2 * (8 * 12 + 4 * 6), 8)
        assert torch.equal(fast, reference.detach())
        for a, b in zip(fast_raw, reference_raw, strict=True):
            assert torch.equal(a, b.detach()) and a.is_contiguous()


def test_detect_keeps_the_out_of_place_decode_for_export_tracing_and_overridden_decodes():
    model = _tiny().eval()
    head = model.model[-1]
    with torch.no_grad():
        head.export = True
        assert not head._decodes_in_place()
        head.export = False
        traced = torch.jit.trace(model, torch.rand(1, 3, 32, 32), strict=False, check_trace=False)
        traced_out = traced(torch.rand(1, 3, 32, 32))
        assert "aten::sigmoid_" not in str(traced.inlined_graph)  # the in-place decode was not traced
        assert traced_out[0].shape == (1, 2 * (64 + 16), 8)

        class OtherDecode(Detect):
            def _decode(self, xi, i):
                return super()._decode(xi, i) * 0

        head.__class__ = OtherDecode
        assert not head._decodes_in_place()
        assert not model(torch.rand(1, 3, 32, 32))[0].any()


def test_detect_training_returns_raw_levels_and_export_returns_tuple():
    model = _tiny()
    x = torch.rand(1, 3, 32, 32)
    raw = model.train()(x)
    assert [o.shape for o in raw] == [(1, 2, 8, 8, 8), (1, 2, 4, 4, 8)]
    model.eval().model[-1].export = True
    out = model(x)
    assert isinstance(out, tuple) and len(out) == 1 and out[0].shape == (1, 2 * (64 + 16), 8)


def test_initialize_biases_offsets():
    model = _tiny()
    head = model.model[-1]
    before = [m.bias.detach().clone().view(head.na, -1) for m in head.m]
    model._initialize_biases()
    for b0, conv, s in zip(before, head.m, head.stride, strict=True):
        delta = conv.bias.detach().view(head.na, -1) - b0
        assert torch.allclose(delta[:, 4], torch.full((2,), math.log(8 / (640 / s) ** 2)), atol=1e-6)
        assert torch.allclose(delta[:, 5:], torch.full((2, 3), math.log(0.6 / (3 - 0.99999))), atol=1e-6)
        assert torch.equal(delta[:, :4], torch.zeros(2, 4))
    frequencies = torch.tensor([1.0, 2.0, 5.0])
    before = head.m[0].bias.detach().clone().view(head.na, -1)
    model._initialize_biases(cf=frequencies)
    delta = head.m[0].bias.detach().view(head.na, -1) - before
    assert torch.allclose(delta[0, 5:], torch.log(frequencies / frequencies.sum()), atol=1e-6)


def test_tta_descale_and_clip():
    model = _tiny()
    p = torch.tensor([[[30.0, 10.0, 8.0, 4.0, 0.9]]])
    assert torch.allclose(model._descale_pred(p, 3, 0.5, (64, 100)), torch.tensor([[[40.0, 20.0, 16.0, 8.0, 0.9]]]))
    assert torch.allclose(model._descale_pred(p, 2, 1.0, (64, 100)), torch.tensor([[[30.0, 54.0, 8.0, 4.0, 0.9]]]))
    assert torch.equal(p, torch.tensor([[[30.0, 10.0, 8.0, 4.0, 0.9]]]))  # input untouched
    y = [torch.arange(20.0).view(1, 20, 1), torch.zeros(1, 7, 1), torch.arange(10.0).view(1, 10, 1)]
    clipped = model._clip_augmented(y)  # nl=2: g = 1 + 4 = 5
    assert clipped[0].shape[1] == 20 - 4 and clipped[0][0, -1, 0] == 15  # drop the last 20/5 * 1 rows
    assert clipped[2].shape[1] == 10 - 8 and clipped[2][0, 0, 0] == 8  # drop the first 10/5 * 4 rows


def test_augmented_forward_shape():
    model = _tiny().eval()
    with torch.no_grad():
        pred, extra = model(torch.rand(1, 3, 64, 64), augment=True)
    rows = [2 * ((size // 4) ** 2 + (size // 8) ** 2) for size in (64, 56, 48)]  # 0.83, 0.67 padded to 8 px
    assert extra is None and pred.shape == (1, rows[0] - rows[0] // 5 + rows[1] + rows[2] - rows[2] // 5 * 4, 8)


def test_half_and_channels_last_after_inference():
    model = _tiny().eval()
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        reference = model(x)[0]
        model.to(memory_format=torch.channels_last)
        assert torch.allclose(model(x.contiguous(memory_format=torch.channels_last))[0], reference, atol=1e-5)
        model.half()
    head = model.model[-1]
    assert head.stride.dtype == torch.float16 and head.anchors.dtype == torch.float16
    assert model.stride.dtype == torch.float32  # upstream: the model's own reference is left alone
    model.float()
    with torch.no_grad():
        assert torch.allclose(model(x)[0], reference, atol=0.5)


def test_classification_model_from_detection_model():
    detector = DetectionModel("yolov5n.yaml")
    model = ClassificationModel(model=detector, nc=7, cutoff=10)
    head = model.model[-1]
    assert isinstance(head, Classify) and head.i == 9 and head.type == "models.common.Classify"
    assert head.conv.conv.in_channels == 256 and len(model.model) == 10 and model.save == [] and model.nc == 7
    assert torch.equal(model.stride, detector.stride)
    assert model.eval()(torch.rand(2, 3, 64, 64)).shape == (2, 7)


def test_classification_model_unwraps_backend_wrapper():
    class Wrapper(nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

    model = ClassificationModel(model=Wrapper(_tiny()), nc=4, cutoff=2)
    assert isinstance(model.model[-1], Classify) and model.model[-1].conv.conv.in_channels == 8
    assert model.stride.tolist() == [4.0, 8.0]


def test_ensemble_concatenates_members():
    a, b = _tiny().eval(), _tiny().eval()
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        y, extra = Ensemble([a, b])(x)
    assert extra is None and y.shape == (1, 2 * 2 * (64 + 16), 8)
