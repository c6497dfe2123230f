"""Tests for extensions/yolov1.py (YOLOv1Head, decode) and extensions/yolov1_loss.py (YOLOv1Loss)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from extensions.yolov1 import YOLOv1Head, adaptive_avg_pool, decode_yolov1
from extensions.yolov1_loss import YOLOv1Loss
from models.yolo import DetectionModel
from tests.module_support import run_fresh_python
from utils.files import ROOT, check_yaml, yaml_load

S, B, C = 2, 2, 3


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Small CPU models run far faster on one thread on a shared 2-core machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tiny_cfg(**head_options) -> dict:
    """A 3-conv backbone (stride 8) + YOLOv1 head as a YAML dict, for fast tests."""
    options = {"grid": S, "boxes": B, "variant": "conv", "hidden": 16, "dropout": 0.0, **head_options}
    return {"imports": ["extensions.yolov1"], "nc": C, "depth_multiple": 1.0, "width_multiple": 1.0,
            "backbone": [[-1, 1, "DarknetConv", [8, 3, 2]], [-1, 1, "DarknetConv", [16, 3, 2]],
                         [-1, 1, "DarknetConv", [16, 3, 2]]],
            "head": [[-1, 1, "YOLOv1Head", ["nc", options]]]}


def loss_fn(conf_target: str = "iou") -> YOLOv1Loss:
    return YOLOv1Loss(YOLOv1Head(4, nc=C, grid=S, boxes=B, variant="conv", hidden=4), conf_target=conf_target)


def perfect_grid(targets: torch.Tensor, batch_size: int = 1) -> torch.Tensor:
    """Head output that predicts ``targets`` exactly with box 0 (conf 1); box 1 is a far-off tiny box (conf 0)."""
    grid = torch.zeros(batch_size, S, S, B * 5 + C)
    for image, cls, x, y, w, h in targets.tolist():
        col, row = int(x * S), int(y * S)
        grid[int(image), row, col, 0:5] = torch.tensor([x * S - col, y * S - row, w, h, 1.0])
        grid[int(image), row, col, 5:10] = torch.tensor([0.0, 0.0, 0.01, 0.01, 0.0])
        grid[int(image), row, col, B * 5 + int(cls)] = 1.0
    return grid


TARGETS = torch.tensor([[0, 1, 0.30, 0.40, 0.20, 0.30], [0, 2, 0.75, 0.70, 0.40, 0.20]])


def test_head_training_output_shape_fc_and_conv():
    x = torch.rand(2, 16, 5, 6)
    for variant in ("fc", "conv"):
        head = YOLOv1Head(16, nc=20, grid=7, boxes=2, variant=variant, hidden=32).train()
        assert head(x).shape == (2, 7, 7, 30)


def test_paper_fc_head_structure():
    with torch.device("meta"):  # structure only: no 205M-weight allocation
        head = YOLOv1Head(1024, nc=20, grid=7, boxes=2, variant="fc", hidden=4096, dropout=0.5)
    linear1, act, dropout, linear2 = head.m[1:]
    assert (linear1.in_features, linear1.out_features) == (1024 * 7 * 7, 4096)
    assert act.negative_slope == pytest.approx(0.1) and dropout.p == 0.5
    assert (linear2.in_features, linear2.out_features) == (4096, 7 * 7 * 30)


def test_eval_output_format_and_export_flag():
    head = YOLOv1Head(16, nc=C, grid=S, boxes=B, variant="conv", hidden=8).eval()
    head.stride = torch.tensor([16.0])
    decoded, raw = head(torch.rand(3, 16, 4, 4))
    assert decoded.shape == (3, S * S * B, 5 + C) and raw.shape == (3, S, S, B * 5 + C)
    head.export = True
    out = head(torch.rand(3, 16, 4, 4))
    assert isinstance(out, tuple) and len(out) == 1 and out[0].shape == decoded.shape


def test_decode_values_in_pixels():
    out = torch.zeros(1, S, S, B * 5 + C)
    out[0, 1, 0, 0:5] = torch.tensor([0.5, 0.25, 0.5, 0.25, 0.8])  # row 1, col 0, box 0
    out[0, 1, 0, 10:13] = torch.tensor([0.1, 0.6, 1.7])
    rows = decode_yolov1(out, B, (64, 128))  # image 64 px high, 128 px wide
    row = rows[0, (1 * S + 0) * B + 0]
    expected = [(0 + 0.5) * 64, (1 + 0.25) * 32, 0.5 * 128, 0.25 * 64, 0.8, 0.1, 0.6, 1.0]  # cls clipped to 1
    assert row.tolist() == pytest.approx(expected)
    assert rows[0, (1 * S + 0) * B + 1, 5:].tolist() == pytest.approx([0.1, 0.6, 1.0])  # class shared by B boxes


def test_loss_is_zero_for_perfect_prediction():
    for conf_target in ("iou", "one"):
        loss, items = loss_fn(conf_target)(perfect_grid(TARGETS), TARGETS)
        assert loss.item() == pytest.approx(0.0, abs=1e-9) and items.abs().max().item() < 1e-9


def test_shifted_box_costs_lambda_coord_delta_squared():
    delta = 0.1
    grid = perfect_grid(TARGETS)
    grid[0, 0, 0, 0] += delta  # first target sits in row 0, col 0; shift its x by delta cells
    loss, items = loss_fn("one")(grid, TARGETS)
    assert loss.item() == pytest.approx(5 * delta**2, rel=1e-5)
    assert items.tolist() == pytest.approx([5 * delta**2, 0.0, 0.0], abs=1e-7)
    width_shift = delta / S  # in image fractions
    iou = (0.2 - width_shift) / (0.2 + width_shift)
    loss_iou, _ = loss_fn("iou")(grid, TARGETS)
    assert loss_iou.item() == pytest.approx(5 * delta**2 + (1 - iou) ** 2, rel=1e-5)


def test_non_object_cell_confidence_costs_lambda_noobj_c_squared():
    c = 0.3
    grid = perfect_grid(TARGETS)
    grid[0, 1, 0, 4] = c  # row 1, col 0 holds no object: both predictors penalised
    grid[0, 1, 0, 9] = c
    loss, items = loss_fn()(grid, TARGETS)
    assert loss.item() == pytest.approx(0.5 * B * c**2, rel=1e-5)
    assert items[1].item() == pytest.approx(0.5 * B * c**2, rel=1e-5)


def test_reduction_is_per_image_sum_and_total_is_batch_sum():
    c = 0.3
    targets = torch.cat((TARGETS, TARGETS + torch.tensor([1, 0, 0, 0, 0, 0])))
    grid = perfect_grid(targets, batch_size=2)
    grid[:, 1, 0, 4] = c
    loss, items = loss_fn()(grid, targets)
    assert items[1].item() == pytest.approx(0.5 * c**2, rel=1e-5)  # per image
    assert loss.item() == pytest.approx(2 * 0.5 * c**2, rel=1e-5)  # sum over the batch


def test_responsible_box_switches_when_ious_swap():
    target = torch.tensor([[0, 0, 0.25, 0.25, 0.3, 0.3]])  # cell (0, 0), offset (0.5, 0.5)
    close = torch.tensor([0.55, 0.5, 0.3, 0.3, 0.5])  # IoU ~0.85
    far = torch.tensor([0.9, 0.5, 0.3, 0.3, 0.5])  # IoU ~0.3

    def conf_grads(first: torch.Tensor, second: torch.Tensor) -> list[float]:
        grid = torch.zeros(1, S, S, B * 5 + C)
        grid[0, 0, 0, 0:5], grid[0, 0, 0, 5:10] = first, second
        grid.requires_grad_(True)
        loss_fn("one")(grid, target)[0].backward()
        return [grid.grad[0, 0, 0, 4].item(), grid.grad[0, 0, 0, 9].item()]

    # responsible: d/dc (c - 1)^2 = -1 at c = 0.5; other: d/dc 0.5 c^2 = 0.5
    assert conf_grads(close, far) == pytest.approx([-1.0, 0.5])
    assert conf_grads(far, close) == pytest.approx([0.5, -1.0])


def test_one_object_per_cell_keeps_the_largest():
    targets = torch.tensor([[0, 0, 0.1, 0.1, 0.1, 0.1], [0, 1, 0.2, 0.2, 0.3, 0.3], [0, 2, 0.15, 0.2, 0.2, 0.2],
                            [1, 2, 0.9, 0.9, 0.1, 0.1]])
    cells = loss_fn().build_targets(targets, batch_size=2)
    assert cells.cls.tolist() == [1, 2] and cells.image.tolist() == [0, 1]
    assert cells.row.tolist() == [0, 1] and cells.col.tolist() == [0, 1]
    assert cells.xy.flatten().tolist() == pytest.approx([0.4, 0.4, 0.8, 0.8])


def test_yaml_rows_resolve_by_bare_name():
    for name in ("yolov1.yaml", "yolov1-csp.yaml"):
        assert Path(check_yaml(name)) == ROOT / "extensions" / "cfg" / name


def test_csp_model_builds_and_decodes_through_nms():
    from utils.nms import non_max_suppression

    cfg = yaml_load(check_yaml("yolov1-csp.yaml"))
    model = DetectionModel(cfg, nc=C)
    head = model.model[-1]
    assert isinstance(head, YOLOv1Head) and head.variant == "conv" and model.stride.tolist() == [32.0]
    assert model(torch.rand(1, 3, 64, 64)).shape == (1, 7, 7, 10 + C)
    model.eval()
    decoded, raw = model(torch.rand(2, 3, 64, 96))
    assert decoded.shape == (2, 7 * 7 * 2, 5 + C) and raw.shape == (2, 7, 7, 10 + C)
    assert decoded[..., 0].max() <= 96 and decoded[..., 1].max() <= 64  # sigmoid output keeps centres inside
    detections = non_max_suppression(decoded, conf_thres=0.0, iou_thres=0.5)
    assert len(detections) == 2 and all(d.shape[1] == 6 for d in detections)


def test_loss_finite_and_falling_when_overfitting():
    torch.manual_seed(0)
    model = DetectionModel(tiny_cfg())
    model.hyp = {}
    from utils.loss import build_loss

    criterion = build_loss(model)
    assert isinstance(criterion, YOLOv1Loss)
    images = torch.rand(2, 3, 64, 64)
    targets = torch.tensor([[0, 1, 0.3, 0.3, 0.4, 0.3], [1, 2, 0.7, 0.6, 0.3, 0.5]])
    optimizer = torch.optim.Adam(model.parameters(), 3e-3)
    losses = []
    for _ in range(60):
        loss, items = criterion(model(images), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        assert math.isfinite(loss.item()) and torch.isfinite(items).all()
    assert losses[-1] < 0.3 * losses[0]


def test_checkpoint_round_trip_in_fresh_process(tmp_path):
    from utils.checkpoint import make_checkpoint, save_checkpoint

    torch.manual_seed(0)
    model = DetectionModel(tiny_cfg()).eval()
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        expected = model(image)[0]
    file = tmp_path / "v1.pt"
    save_checkpoint(make_checkpoint(model), file)
    torch.save(image, tmp_path / "image.pt")
    code = ("import torch, sys\nfrom models.loading import load_model\n"
            f"m = load_model(r'{file}')\nx = torch.load(r'{tmp_path / 'image.pt'}', weights_only=True)\n"
            "y = m(x)[0]\nprint(type(m.model[-1]).__module__, type(m.model[-1]).__name__)\n"
            f"torch.save(y, r'{tmp_path / 'out.pt'}')\n")
    result = run_fresh_python(code, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-2:] == ["extensions.yolov1", "YOLOv1Head"]
    loaded = torch.load(tmp_path / "out.pt", weights_only=True)
    assert torch.allclose(loaded, expected, atol=2e-2)  # fp16 checkpoint + fused BN


def test_adaptive_pool_matches_torch_for_any_size():
    for height, width in ((4, 4), (10, 13), (3, 7), (20, 20)):
        x = torch.randn(2, 3, height, width)
        assert torch.allclose(adaptive_avg_pool(x, 7), F.adaptive_avg_pool2d(x, 7), atol=1e-6)


def test_onnx_export(tmp_path):
    onnx = pytest.importorskip("onnx")
    model = DetectionModel(tiny_cfg(grid=3)).eval()  # 8x8 features -> 3x3 cells: not a divisor (ONNX-unfriendly)
    model.model[-1].export = True
    image = torch.rand(1, 3, 64, 64)
    file = tmp_path / "v1.onnx"
    torch.onnx.export(model, (image,), str(file), opset_version=12, input_names=["images"],
                      output_names=["output0"], dynamo=False)
    graph = onnx.load(str(file))
    onnx.checker.check_model(graph)
    assert [o.name for o in graph.graph.output] == ["output0"]
    ort = pytest.importorskip("onnxruntime")
    onnx_out = ort.InferenceSession(str(file)).run(None, {"images": image.numpy()})[0]
    assert onnx_out.shape == (1, 3 * 3 * B, 5 + C)
    assert torch.allclose(torch.from_numpy(onnx_out), model(image)[0], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_paper_model_shape_at_448():
    model = DetectionModel("yolov1.yaml")
    head = model.model[-1]
    assert model.stride.tolist() == [64.0] and head.variant == "fc" and (head.S, head.B, head.nc) == (7, 2, 20)
    convs = [m for m in model.modules() if type(m).__name__ == "DarknetConv"]
    assert len(convs) == 24 and all(c.act.negative_slope == pytest.approx(0.1) for c in convs)
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 448, 448)).shape == (1, 7, 7, 30)
