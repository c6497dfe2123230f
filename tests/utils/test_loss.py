"""Tests for utils.loss: upstream parity, target assignment, focal loss, label smoothing, hooks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn

from utils.loss import ComputeLoss, FocalLoss, YoloLoss, build_loss, smooth_BCE

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "upstream"
ANCHORS = torch.tensor([[[1.25, 1.625], [2.0, 3.75], [4.125, 2.875]],
                        [[1.875, 3.8125], [3.875, 2.8125], [3.6875, 7.4375]],
                        [[3.625, 2.8125], [4.875, 6.1875], [11.65625, 10.1875]]])  # yolov5 P3-P5, grid units
HYP = {"box": 0.05, "obj": 1.0, "cls": 0.5, "cls_pw": 1.0, "obj_pw": 1.0, "anchor_t": 4.0, "fl_gamma": 0.0}


def _outputs(nc: int = 3, bs: int = 1, size: int = 64, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(bs, 3, size // s, size // s, 5 + nc, generator=g) for s in (8, 16, 32)]


@pytest.fixture(scope="module")
def parity():
    if not (FIXTURES / "yolov5n-trained.parity.pt").is_file():
        pytest.skip("upstream parity fixtures not available")
    from models.loading import load_model

    data = torch.load(FIXTURES / "yolov5n-trained.parity.pt", weights_only=True)
    model = load_model(FIXTURES / "yolov5n-trained.pt", fuse=False)
    model.hyp = data["hyp"]  # the checkpoint's hyp, already gain-scaled by upstream's train.py
    return model, data


def test_loss_matches_upstream_fixture(parity):
    model, data = parity
    loss, items = ComputeLoss(model)(data["train"], data["targets"])
    torch.testing.assert_close(loss, data["loss"], rtol=1e-5, atol=0)
    torch.testing.assert_close(items, data["loss_items"], rtol=1e-5, atol=0)
    assert loss.shape == (1,) and items.shape == (3,) and not items.requires_grad


def test_named_terms_sum_to_total(parity):
    model, data = parity
    criterion = ComputeLoss(model)
    terms = criterion.terms(data["train"], data["targets"])
    assert set(terms) == {"box", "obj", "cls"}
    total = (terms["box"] + terms["obj"] + terms["cls"]) * data["train"][0].shape[0]
    torch.testing.assert_close(total, data["loss"], rtol=1e-5, atol=0)


def test_loss_backpropagates(parity):
    model, data = parity
    p = [x.clone().requires_grad_(True) for x in data["train"]]
    loss, _ = ComputeLoss(model)(p, data["targets"])
    loss.backward()
    assert all(x.grad is not None and torch.isfinite(x.grad).all() for x in p)
    assert p[0].grad.abs().sum() > 0


def test_low_precision_outputs_give_the_fp32_loss_and_gradients(parity):
    """ComputeLoss casts what it reads (positives, objectness) to fp32 itself: feeding it bf16 head outputs gives
    exactly the loss of the same values cast to fp32 first, and the same gradients up to bf16 rounding (a cell read
    several times, as positives of several targets or for objectness too, sums its gradients in bf16)."""
    model, data = parity
    criterion = ComputeLoss(model)
    assert criterion.casts_to_fp32
    low = [x.to(torch.bfloat16).requires_grad_(True) for x in data["train"]]
    high = [x.detach().float().requires_grad_(True) for x in low]
    loss_low, items_low = criterion(low, data["targets"])
    loss_high, items_high = criterion(high, data["targets"])
    assert loss_low.dtype == torch.float32 and torch.equal(loss_low, loss_high) and torch.equal(items_low, items_high)
    loss_low.backward()
    loss_high.backward()
    for a, b in zip(low, high, strict=True):
        assert a.grad.dtype == torch.bfloat16
        torch.testing.assert_close(a.grad.float(), b.grad, rtol=2**-6, atol=1e-7)


def test_build_targets_counts_cells_and_offsets():
    criterion = YoloLoss(HYP, ANCHORS, nc=3, strides=(8, 16, 32))
    targets = torch.tensor([[0, 1, 0.28, 0.28, 0.25, 0.25]])  # 64 px image: grids 8, 4, 2
    tcls, tbox, indices, anchors = criterion.build_targets(_outputs(), targets)
    assert [len(t) for t in tcls] == [9, 6, 0]  # 3 anchors x 3 cells; 2 anchors x 3 cells; wh ratio too large
    image, anchor, gj, gi = indices[0]
    assert image.tolist() == [0] * 9 and tcls[0].tolist() == [1] * 9
    assert anchor.tolist() == [0, 1, 2] * 3  # offset-major, anchor-minor order
    assert gi.tolist() == [2, 2, 2, 1, 1, 1, 2, 2, 2] and gj.tolist() == [2, 2, 2, 2, 2, 2, 1, 1, 1]
    offsets = [[0.24, 0.24]] * 3 + [[1.24, 0.24]] * 3 + [[0.24, 1.24]] * 3
    torch.testing.assert_close(tbox[0][:, :2], torch.tensor(offsets))
    torch.testing.assert_close(tbox[0][:, 2:], torch.full((9, 2), 2.0))
    torch.testing.assert_close(anchors[0], ANCHORS[0].repeat(3, 1))
    assert indices[1][1].tolist() == [0, 1] * 3 and indices[1][3].tolist() == [1, 1, 0, 0, 1, 1]


def test_build_targets_high_side_neighbours_and_edge_clamp():
    criterion = YoloLoss(HYP, ANCHORS[:1].clone(), nc=3, strides=(8,))
    p = [torch.zeros(1, 3, 8, 8, 8)]
    targets = torch.tensor([[0, 0, 0.70, 0.70, 0.2, 0.2],  # gxy 5.6: right and down neighbours
                            [0, 0, 1.00, 1.00, 0.2, 0.2]])  # gxy 8.0 on the border: own cell clamped to 7
    _, tbox, indices, _ = criterion.build_targets(p, targets)
    image, anchor, gj, gi = indices[0]
    cells = sorted({(int(x), int(y)) for x, y in zip(gi, gj, strict=True)})
    assert cells == [(5, 5), (5, 6), (6, 5), (7, 7)]  # the border target's own/left/up cells all clamp to (7, 7)
    assert len(image) == 3 * 3 * 2  # 3 anchors x 3 cells for each target
    border = (gi == 7) & (gj == 7)
    torch.testing.assert_close(tbox[0][border, :2], torch.ones(9, 2))  # offsets from the clamped cell
    assert float(tbox[0][:, :2].max()) <= 1.5 and float(tbox[0][:, :2].min()) >= -0.5


def test_no_targets_gives_only_objectness():
    criterion = YoloLoss(HYP, ANCHORS, nc=3, strides=(8, 16, 32))
    loss, items = criterion(_outputs(bs=2), torch.zeros((0, 6)))
    assert items[0] == 0 and items[2] == 0 and items[1] > 0
    torch.testing.assert_close(loss, items.sum().view(1) * 2)


def test_single_class_has_no_class_loss():
    criterion = YoloLoss(HYP, ANCHORS, nc=1, strides=(8, 16, 32))
    _, items = criterion(_outputs(nc=1), torch.tensor([[0, 0, 0.5, 0.5, 0.3, 0.3]]))
    assert items[2] == 0 and items[0] > 0


def test_focal_loss_formula_and_effect():
    pred, true = torch.tensor([2.0, -1.0, 0.5]), torch.tensor([1.0, 0.0, 1.0])
    focal = FocalLoss(nn.BCEWithLogitsLoss(), gamma=2.0, alpha=0.25)
    p = pred.sigmoid()
    bce = nn.functional.binary_cross_entropy_with_logits(pred, true, reduction="none")
    p_t = true * p + (1 - true) * (1 - p)
    expected = (bce * (true * 0.25 + (1 - true) * 0.75) * (1 - p_t) ** 2).mean()
    torch.testing.assert_close(focal(pred, true), expected)
    targets = torch.tensor([[0, 1, 0.5, 0.5, 0.3, 0.3]])
    plain = YoloLoss(HYP, ANCHORS, nc=3, strides=(8, 16, 32))(_outputs(), targets)[1]
    focused_criterion = YoloLoss({**HYP, "fl_gamma": 1.5}, ANCHORS, nc=3, strides=(8, 16, 32))
    assert isinstance(focused_criterion.BCEcls, FocalLoss) and isinstance(focused_criterion.BCEobj, FocalLoss)
    focused = focused_criterion(_outputs(), targets)[1]
    assert focused[0] == plain[0]  # box loss unaffected
    assert focused[1] < plain[1] and focused[2] < plain[2]


def test_label_smoothing_targets():
    assert smooth_BCE(0.0) == (1.0, 0.0) and smooth_BCE(0.1) == (0.95, 0.05)
    targets = torch.tensor([[0, 2, 0.5, 0.5, 0.3, 0.3]])
    p = _outputs()
    plain = YoloLoss(HYP, ANCHORS, nc=3, strides=(8, 16, 32))
    smoothed = YoloLoss({**HYP, "label_smoothing": 0.1}, ANCHORS, nc=3, strides=(8, 16, 32))
    assert (smoothed.cp, smoothed.cn) == (0.95, 0.05)
    tcls, _, indices, _ = smoothed.build_targets(p, targets)
    expected = torch.zeros(1)
    for level, index in enumerate(indices):
        if len(tcls[level]):
            logits = p[level][index][:, 5:]
            target = torch.full_like(logits, 0.05)
            target[:, 2] = 0.95
            expected += nn.functional.binary_cross_entropy_with_logits(logits, target)
    torch.testing.assert_close(smoothed(p, targets)[1][2], (expected * HYP["cls"])[0])
    assert smoothed(p, targets)[1][2] != plain(p, targets)[1][2]


def test_autobalance_updates_balance():
    criterion = YoloLoss(HYP, ANCHORS, nc=3, strides=(8, 16, 32), autobalance=True)
    assert criterion.ssi == 1
    criterion(_outputs(), torch.tensor([[0, 1, 0.5, 0.5, 0.3, 0.3]]))
    assert criterion.balance[1] == 1.0 and criterion.balance != [4.0, 1.0, 0.4]


def test_missing_hyp_is_explained_and_build_loss_hook(parity):
    from copy import deepcopy

    model = deepcopy(parity[0])
    del model.hyp
    with pytest.raises(AttributeError, match="model.hyp"):
        ComputeLoss(model)
    model.hyp = HYP
    criterion = build_loss(model)
    assert type(criterion) is ComputeLoss and criterion.nc == 10 and criterion.nl == 3

    def make_loss(m):
        return "custom"

    model.model[-1].make_loss = make_loss
    assert build_loss(model) == "custom"


def test_hyp_keyword_is_used_instead_of_model_hyp(parity):
    from copy import deepcopy

    from utils.hyp import Hyp

    model, data = deepcopy(parity[0]), parity[1]
    expected = ComputeLoss(model)(data["train"], data["targets"])
    hyp = Hyp.from_dict({k: v for k, v in model.hyp.items() if k in Hyp.keys() or k.startswith("v3_")})
    model.hyp = {"box": 100.0, "obj": 100.0, "cls": 100.0}  # must not be read when hyp= is given
    for criterion in (ComputeLoss(model, hyp=hyp), build_loss(model, hyp=hyp)):
        loss, items = criterion(data["train"], data["targets"])
        torch.testing.assert_close(loss, expected[0], rtol=1e-6, atol=0)
        torch.testing.assert_close(items, expected[1], rtol=1e-6, atol=0)
    seen = []
    model.model[-1].make_loss = lambda m, hyp=None: seen.append(hyp) or "custom"
    assert build_loss(model, hyp=hyp) == "custom" and seen == [hyp], "a head's make_loss receives hyp="
