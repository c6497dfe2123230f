"""Tests for extensions/yolov3.py (YOLOv3Head, decodes), yolov3_assign.py and yolov3_loss.py (loss variants)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from extensions.yolov3 import YOLOv3Head
from extensions.yolov3_loss import YOLOv3Loss, make_yolov3_loss, resolve_variant
from models.yolo import DetectionModel
from tests.module_support import run_fresh_python
from utils.files import ROOT, check_yaml, yaml_load

ANCHORS = [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]]
NC = 3
HYP = {"box": 0.05, "obj": 1.0, "cls": 0.5, "anchor_t": 4.0, "cls_pw": 1.0, "obj_pw": 1.0, "fl_gamma": 0.0}


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Small CPU models run far faster on one thread on a shared 2-core machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def bare_head(decode: str = "darknet", loss: str = "darknet", **kwargs) -> YOLOv3Head:
    """A head with strides 8/16/32 set by hand (anchors converted to grid units), zero weights and biases."""
    head = YOLOv3Head(NC, ANCHORS, (4, 4, 4), decode=decode, loss=loss, **kwargs)
    head.stride = torch.tensor([8.0, 16.0, 32.0])
    head.anchors /= head.stride.view(-1, 1, 1)
    for conv in head.m:
        conv.weight.data.zero_()
        conv.bias.data.zero_()
    return head


def zero_logits(image_size: int, batch_size: int = 1) -> list[torch.Tensor]:
    return [torch.zeros(batch_size, 3, image_size // s, image_size // s, 5 + NC) for s in (8, 16, 32)]


def tiny_cfg(decode: str = "darknet", loss: str = "darknet") -> dict:
    """yolov3-tiny-legacy at 1/8 width as a YAML dict (fast)."""
    cfg = yaml_load(check_yaml("yolov3-tiny-legacy.yaml"))
    cfg.update(nc=NC, width_multiple=0.125)
    cfg["head"][-1][3] = ["nc", "anchors", {"decode": decode, "loss": loss}]
    return cfg


def test_yaml_rows_resolve_by_bare_name():
    for name in ("yolov3-legacy.yaml", "yolov3-tiny-legacy.yaml", "yolov3-csp-legacy.yaml"):
        assert Path(check_yaml(name)) == ROOT / "extensions" / "cfg" / name


def test_tiny_model_shapes_strides_and_params():
    model = DetectionModel("yolov3-tiny-legacy.yaml")
    assert model.stride.tolist() == [16.0, 32.0]
    assert sum(p.numel() for p in model.parameters()) == 8852366  # same as upstream's yolov3-tiny (nc=80)
    out = model(torch.zeros(2, 3, 64, 64))
    assert [tuple(o.shape) for o in out] == [(2, 3, 4, 4, 85), (2, 3, 2, 2, 85)]
    model.eval()
    decoded, raw = model(torch.zeros(2, 3, 64, 64))
    assert decoded.shape == (2, 3 * (16 + 4), 85) and len(raw) == 2


def test_yaml_options_reach_the_head_and_unknown_options_fail():
    from models.builder import ModelYAMLError

    head = DetectionModel(tiny_cfg("yolov5", "ciou")).model[-1]
    assert (head.decode, head.loss, head.ignore_thresh) == ("yolov5", "ciou", 0.5)
    cfg = tiny_cfg()
    cfg["head"][-1][3] = ["nc", "anchors", {"decoder": "yolov5"}]
    with pytest.raises(ModelYAMLError, match="did you mean decode"):
        DetectionModel(cfg)


@pytest.mark.parametrize("decode", ["darknet", "yolov5"])
def test_zero_logits_decode_to_cell_centre_and_anchor(decode):
    head = bare_head(decode).eval()
    features = [torch.zeros(1, 4, 64 // s, 64 // s) for s in (8, 16, 32)]
    decoded, _ = head(features)
    level0 = decoded[0, : 3 * 8 * 8].view(3, 8, 8, 5 + NC)
    assert level0[0, 2, 5, :2].tolist() == [(5 + 0.5) * 8, (2 + 0.5) * 8]  # x from column 5, y from row 2
    assert level0[:, 0, 0, 2:4].tolist() == [[10, 13], [16, 30], [33, 23]]
    level2 = decoded[0, -3 * 2 * 2:].view(3, 2, 2, 5 + NC)
    assert level2[2, 1, 1].tolist() == pytest.approx([48, 48, 373, 326, 0.5, 0.5, 0.5, 0.5])


def test_large_logits_reach_the_decode_limits():
    for decode, xy_limit, wh_factor in (("darknet", 1.0, None), ("yolov5", 1.5, 4.0)):
        head = bare_head(decode).eval()
        for conv in head.m:
            conv.bias.data.fill_(30.0)
        features = [torch.zeros(1, 4, 64 // s, 64 // s) for s in (8, 16, 32)]
        decoded = head(features)[0][0, 0]  # level 0, anchor 0, cell (0, 0)
        assert decoded[:2].tolist() == pytest.approx([xy_limit * 8, xy_limit * 8])
        if wh_factor is not None:
            assert decoded[2:4].tolist() == pytest.approx([40.0, 52.0])
        else:
            assert torch.isfinite(decoded).all()


ONE_GT = torch.tensor([[0, 1, 98 / 256, 98 / 256, 33 / 256, 23 / 256]])  # a 33x23 px box at (98, 98) of 256 px


def positive_count(variant: str, targets: torch.Tensor, image_size: int = 256) -> int:
    p = zero_logits(image_size, int(targets[:, 0].max()) + 1)
    if variant == "yolov5":
        from utils.loss import YoloLoss

        head = bare_head("yolov5")
        indices = YoloLoss(HYP, head.anchors, NC, head.stride).build_targets(p, targets)[2]
        return sum(len(i[0]) for i in indices)
    positives = YOLOv3Loss(bare_head(loss=variant), variant).assign(p, targets)
    slots = (positives.level, positives.image, positives.anchor, positives.gy, positives.gx)
    assert len(set(zip(*(t.tolist() for t in slots), strict=True))) == len(positives.level)  # one GT per slot
    return len(positives.level)


def test_positive_counts_per_variant_for_one_box():
    # shape IoUs of 33x23 with the 9 anchors: 0.17, 0.42, 1.0, 0.36, 0.27, 0.11, 0.07, 0.02, 0.01 -> 4 above 0.2
    # yolov5: anchors within ratio 4: P3 3, P4 2, P5 1; 3 cells each (own + left + up) -> 18
    expected = {"darknet": 1, "ciou": 1, "multi_anchor": 4, "yolov5": 18}
    assert {v: positive_count(v, ONE_GT) for v in expected} == expected


def test_darknet_assignment_picks_the_best_anchor_and_resolves_collisions():
    head = bare_head()
    targets = torch.cat((ONE_GT, ONE_GT, torch.tensor([[0, 0, 0.5, 0.5, 150 / 256, 190 / 256]])))
    positives = YOLOv3Loss(head, "darknet").assign(zero_logits(256), targets)
    slots = sorted(zip(positives.target.tolist(), positives.level.tolist(), positives.anchor.tolist(), strict=True))
    # GT 0 takes (P3, anchor 2) with IoU 1; GT 1 wants the same slot and falls back to (P3, anchor 1), IoU 0.42
    assert slots == [(0, 0, 2), (1, 0, 1), (2, 2, 1)]


def test_multi_anchor_keeps_the_best_anchor_when_none_passes_the_threshold():
    head = bare_head(loss="multi_anchor", anchor_iou_thresh=1.5)
    positives = YOLOv3Loss(head, "multi_anchor").assign(zero_logits(256), ONE_GT)
    assert (positives.level.tolist(), positives.anchor.tolist()) == ([0], [2])


def test_darknet_box_term_hand_computed():
    head = bare_head()
    p = zero_logits(256)
    targets = torch.tensor([[0, 0, 100 / 256, 100 / 256, 33 / 256, 23 / 256]])  # P3 cell (12, 12), offset 0.5
    loss = YOLOv3Loss(head, "darknet")
    box = loss.terms(p, targets)["box"].item()
    assert box == pytest.approx(0.0, abs=1e-6)  # sigmoid(0) = 0.5 offset, exp(0) * anchor = size: exact
    p[0][0, 2, 12, 12, 0] = math.log(0.6 / 0.4)  # offset 0.6: error 0.1
    p[0][0, 2, 12, 12, 2] = 0.2  # log-size error 0.2
    scale = 2 - (33 / 256) * (23 / 256)
    assert loss.terms(p, targets)["box"].item() == pytest.approx(scale * (0.1**2 + 0.2**2), rel=1e-5)


def test_ignore_threshold_drops_matching_negatives_from_the_objectness_sum():
    targets = torch.tensor([[0, 0, 100 / 256, 100 / 256, 33 / 256, 23 / 256]])
    p = zero_logits(256)
    p[0][0, 2, 12, 13, 0] = -20.0  # a neighbour slot (column 13) whose box lands on the ground truth
    p[0][0, 2, 12, 13, 4] = 1.5
    kept = YOLOv3Loss(bare_head(ignore_thresh=2.0), "darknet").terms(p, targets)["obj"]
    ignored = YOLOv3Loss(bare_head(ignore_thresh=0.7), "darknet").terms(p, targets)["obj"]
    assert (kept - ignored).item() == pytest.approx(F.softplus(torch.tensor(1.5)).item(), rel=1e-5)


@pytest.mark.parametrize("image_size", [64, 128])
def test_no_object_term_is_summed_not_averaged(image_size):
    """The gradient on a negative's objectness logit is sigmoid(logit), whatever the number of slots."""
    head = bare_head()
    p = [t.requires_grad_(True) for t in zero_logits(image_size)]
    loss, _ = YOLOv3Loss(head, "darknet")(p, torch.zeros(0, 6))
    loss.backward()
    assert p[1].grad[0, 0, 0, 0, 4].item() == pytest.approx(0.5)


@pytest.mark.parametrize("variant", ["darknet", "ciou", "multi_anchor", "yolov5"])
def test_every_variant_finite_and_falling_when_overfitting(variant):
    torch.manual_seed(0)
    model = DetectionModel(tiny_cfg("yolov5" if variant == "yolov5" else "darknet", variant))
    model.hyp = dict(HYP)
    from utils.loss import build_loss

    criterion = build_loss(model)
    images = torch.rand(2, 3, 64, 64)
    targets = torch.tensor([[0, 1, 0.3, 0.3, 0.4, 0.3], [0, 2, 0.7, 0.6, 0.3, 0.5], [1, 0, 0.5, 0.5, 0.6, 0.6]])
    optimizer = torch.optim.Adam(model.parameters(), 3e-3)
    losses = []
    for _ in range(50):
        loss, items = criterion(model(images), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        assert math.isfinite(loss.item()) and torch.isfinite(items).all()
    assert losses[-1] < 0.5 * losses[0]


def test_loss_selection_by_head_argument_and_hyp():
    model = DetectionModel(tiny_cfg("yolov5", "ciou"))
    model.hyp = dict(HYP)
    from utils.loss import ComputeLoss, build_loss

    assert build_loss(model).variant == "ciou"
    model.hyp["v3_loss"] = 2  # index into LOSSES
    assert build_loss(model).variant == "multi_anchor"
    model.hyp["v3_loss"] = "yolov5"
    assert isinstance(build_loss(model), ComputeLoss)
    assert resolve_variant(0) == "darknet"
    with pytest.raises(ValueError, match="not one of"):
        make_yolov3_loss(model, model.model[-1], "focal", {})


def test_trainer_hyp_keyword_selects_the_loss_and_its_gains_without_model_hyp():
    from utils.hyp import Hyp
    from utils.loss import ComputeLoss, build_loss

    model = DetectionModel(tiny_cfg("yolov5", "ciou"))
    model.hyp = {"v3_loss": "darknet"}  # must not be read when hyp= is given
    hyp = Hyp.from_dict({**{k: v for k, v in HYP.items() if k in Hyp.keys()}, "v3_loss": 2, "v3_box": 0.25})
    criterion = build_loss(model, hyp=hyp)
    assert criterion.variant == "multi_anchor" and criterion.gains == {"box": 0.25, "obj": 1.0, "cls": 1.0}
    yolov5 = build_loss(model, hyp=Hyp.from_dict({**{k: v for k, v in HYP.items() if k in Hyp.keys()},
                                                   "v3_loss": 3, "box": 0.125}))
    assert isinstance(yolov5, ComputeLoss) and yolov5.hyp["box"] == 0.125


def test_eval_output_goes_through_nms():
    from utils.nms import non_max_suppression

    model = DetectionModel(tiny_cfg()).eval()
    detections = non_max_suppression(model(torch.rand(2, 3, 64, 64)), conf_thres=0.0, iou_thres=0.5)
    assert len(detections) == 2 and all(d.shape[1] == 6 and len(d) > 0 for d in detections)


def test_checkpoint_round_trip_in_fresh_process(tmp_path):
    from utils.checkpoint import make_checkpoint, save_checkpoint

    torch.manual_seed(0)
    model = DetectionModel(tiny_cfg("darknet", "multi_anchor")).eval()
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        expected = model(image)[0]
    file = tmp_path / "v3.pt"
    save_checkpoint(make_checkpoint(model), file)
    torch.save(image, tmp_path / "image.pt")
    code = ("import torch\nfrom models.loading import load_model\n"
            f"m = load_model(r'{file}')\nx = torch.load(r'{tmp_path / 'image.pt'}', weights_only=True)\n"
            "h = m.model[-1]\nprint(type(h).__module__, type(h).__name__, h.decode, h.loss)\n"
            f"torch.save(m(x)[0], r'{tmp_path / 'out.pt'}')\n")
    result = run_fresh_python(code, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-4:] == ["extensions.yolov3", "YOLOv3Head", "darknet", "multi_anchor"]
    loaded = torch.load(tmp_path / "out.pt", weights_only=True)
    assert torch.allclose(loaded[..., :4], expected[..., :4], rtol=2e-2, atol=0.5)
    assert torch.allclose(loaded[..., 4:], expected[..., 4:], atol=2e-2)


@pytest.mark.parametrize("decode", ["darknet", "yolov5"])
def test_onnx_export(tmp_path, decode):
    onnx = pytest.importorskip("onnx")
    model = DetectionModel(tiny_cfg(decode)).eval()
    model.model[-1].export = True
    image = torch.rand(1, 3, 64, 64)
    file = tmp_path / "v3.onnx"
    torch.onnx.export(model, (image,), str(file), opset_version=12, input_names=["images"],
                      output_names=["output0"], dynamo=False)
    graph = onnx.load(str(file))
    onnx.checker.check_model(graph)
    assert [o.name for o in graph.graph.output] == ["output0"]
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(file))
    onnx_out = session.run(None, {"images": image.numpy()})[0]
    assert onnx_out.shape == (1, 60, 5 + NC)
    assert torch.allclose(torch.from_numpy(onnx_out), model(image)[0], rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_darknet53_model_matches_the_reference_size():
    model = DetectionModel("yolov3-legacy.yaml")
    assert sum(p.numel() for p in model.parameters()) == 61949149  # upstream yolov3.yaml, nc=80
    assert model.stride.tolist() == [8.0, 16.0, 32.0]
    assert sum(type(m).__name__ == "DarknetConv" for m in model.model[:11].modules()) == 52
