"""Tests for utils/precision.py: policy selection, the fp32-must-stay-fp32 rules and the fast-path accuracy guard.

Accuracy guard: the upstream fixture model (``../shared/fixtures/upstream/yolov5n-trained.pt``, fused) on its parity
input (2, 3, 320, 320) is run in plain fp32 NCHW and in the CPU fast path (channels_last + bf16 autocast). Measured
deviation of the fast path from fp32 on this fixture (AMX-BF16 CPU, torch 2.x, decoding in fp32 as
``Detect._decode`` does), over all 2 x 6300 decoded rows:

    box IoU per row >= 0.996, |d xy| <= 0.007 px, |d wh| / wh <= 0.3 %, |d obj| <= 3.1e-4, |d cls| <= 9.2e-4

Tolerances below carry a margin of 3x or more. The fixture was trained for only 3 epochs: its best score on the
parity input is 0.0014 and its class scores are near ties, so NMS at conf 0.25 returns no boxes in either precision
and NMS at conf 0.001 picks among near-equal boxes. The detection-level checks therefore compare candidate detections
row by row (box IoU, confidence, class where the class is not a near tie) and NMS box counts; the per-row check and
the training comparison in benchmarks/bench_precision_train.py are the guards with teeth.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from utils import precision
from utils.boxes import xywh2xyxy
from utils.metrics import box_iou
from utils.nms import non_max_suppression
from utils.precision import (
    InferencePrecision,
    PrecisionPolicy,
    cpu_flags,
    float_outputs,
    inference_precision,
    select_precision,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
UPSTREAM = REPO_ROOT.parent / "shared" / "fixtures" / "upstream"
WEIGHTS, PARITY = UPSTREAM / "yolov5n-trained.pt", UPSTREAM / "yolov5n-trained.parity.pt"

# Fast path vs fp32, per decoded row (see the module docstring for the measured values).
ROW_IOU_MIN, XY_PX_MAX, WH_REL_MAX, OBJ_ABS_MAX, CLS_ABS_MAX = 0.97, 0.5, 0.03, 1e-3, 5e-3
# Fast path vs fp32, after NMS(conf 0.25, IoU 0.45), per image.
COUNT_SLACK, MATCH_IOU_MIN, BOX_PX_MAX, CONF_ABS_MAX = 1, 0.9, 2.0, 0.02
# channels_last fp32 (the no-native-bf16 fallback) vs NCHW fp32: same maths, different summation order.
CHANNELS_LAST_ABS_MAX = 2e-3

NEEDS_BF16 = pytest.mark.skipif(not precision.cpu_has_native_bf16(),
                                reason="this CPU has no native bf16 (AMX-BF16/AVX512-BF16): the policy never uses "
                                       "bf16 here, so the bf16 fast path is not checked")


# ---------------------------------------------------------------------------------------------- policy selection


@pytest.fixture
def no_env_override(monkeypatch):
    monkeypatch.delenv("YOLOV5_FP32", raising=False)


def test_force_fp32_gives_reference_numerics(no_env_override):
    policy = select_precision("cpu", force_fp32=True, log=False)
    assert (policy.name, policy.autocast_dtype, policy.channels_last, policy.amp) == ("fp32", None, False, False)
    assert "forced" in policy.reason
    with policy.autocast():
        assert not torch.is_autocast_enabled("cpu")


@pytest.mark.parametrize("value", ["1", "true", "YES", " 1 "])
def test_env_variable_forces_fp32(monkeypatch, value):
    monkeypatch.setenv("YOLOV5_FP32", value)
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert select_precision("cpu", log=False).name == "fp32"
    assert select_precision("cuda", log=False).name == "fp32"


@pytest.mark.parametrize("value", ["", "0", "false", "no"])
def test_env_variable_other_values_do_not_force(monkeypatch, value):
    monkeypatch.setenv("YOLOV5_FP32", value)
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert select_precision("cpu", log=False).name == "bf16+channels_last"


def test_cpu_without_native_bf16_falls_back_to_fp32_channels_last(monkeypatch, no_env_override):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    policy = select_precision(torch.device("cpu"), log=False)
    assert (policy.name, policy.autocast_dtype, policy.channels_last) == ("fp32+channels_last", None, True)
    with policy.autocast():
        assert not torch.is_autocast_enabled("cpu")


def test_cpu_with_native_bf16_uses_bf16_autocast(monkeypatch, no_env_override):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    policy = select_precision("cpu", log=False)
    assert (policy.name, policy.autocast_dtype, policy.channels_last, policy.amp) == (
        "bf16+channels_last", torch.bfloat16, True, True)
    with policy.autocast():
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    with policy.autocast(enabled=False):
        assert not torch.is_autocast_enabled("cpu")


def test_cuda_uses_fp16_amp_unless_the_amp_check_failed(no_env_override):
    assert select_precision("cuda:0", log=False) == PrecisionPolicy("cuda", torch.float16, False,
                                                                    "CUDA automatic mixed precision")
    assert select_precision("cuda", log=False).name == "fp16"
    assert select_precision("cuda", cuda_amp=False, log=False).name == "fp32"


def test_other_devices_use_fp32(no_env_override):
    assert select_precision("mps", log=False).name == "fp32"
    assert select_precision("meta", log=False).name == "fp32"


def test_choice_and_reason_are_logged(monkeypatch, no_env_override):
    messages = []
    monkeypatch.setattr(precision.LOGGER, "info", messages.append)
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    select_precision("cpu")
    select_precision("cpu", log=False)
    assert messages == ["precision: fp32+channels_last (no native bf16 on this CPU; channels_last fp32)"]


def test_cpu_flags_parsing(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512_bf16 amx_tile\nbugs\t\t: none\n")
    assert cpu_flags(cpuinfo) == frozenset({"fpu", "sse2", "avx512_bf16", "amx_tile"})
    assert cpu_flags(tmp_path / "missing") == frozenset()


def test_no_native_bf16_without_cpu_flags(monkeypatch):
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2", "avx512f"}))
    assert precision.cpu_has_native_bf16.__wrapped__() is False
    assert isinstance(precision.cpu_has_native_bf16(), bool)


def test_prepare_model_and_input_follow_the_memory_format():
    fast, plain = PrecisionPolicy("cpu", None, True, "test"), PrecisionPolicy("cpu", None, False, "test")
    conv = nn.Conv2d(3, 8, 3)
    assert plain.prepare_model(conv).weight.is_contiguous()
    assert fast.prepare_model(conv) is conv and conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not conv.weight.is_contiguous()
    image = torch.rand(2, 3, 8, 8)
    assert fast.prepare_input(image).is_contiguous(memory_format=torch.channels_last)
    assert plain.prepare_input(image) is image
    flat = torch.rand(3, 8, 8)
    assert fast.prepare_input(flat) is flat


def test_float_outputs_casts_nested_floating_tensors_only():
    raw = (torch.ones(2, dtype=torch.bfloat16), [torch.ones(1, dtype=torch.float16), torch.ones(1, dtype=torch.long)],
           "meta")
    out = float_outputs(raw)
    assert isinstance(out, tuple) and isinstance(out[1], list) and out[2] == "meta"
    assert [out[0].dtype, out[1][0].dtype, out[1][1].dtype] == [torch.float32, torch.float32, torch.long]


def test_inference_precision_follows_the_cpu_policy_and_keeps_upstream_on_cuda(monkeypatch, no_env_override):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert inference_precision("cpu", log=False).name == "bf16+channels_last"
    assert inference_precision("cpu", force_fp32=True, log=False).name == "fp32"
    cuda = inference_precision("cuda:0", log=False)
    assert (cuda.name, cuda.autocast_dtype, cuda.channels_last) == ("fp32", None, False) and "--half" in cuda.reason
    assert "forced" in inference_precision("cuda", force_fp32=True, log=False).reason


def test_inference_precision_switch_follows_fp32_env_and_logs_each_change(monkeypatch, no_env_override):
    messages = []
    monkeypatch.setattr(precision.LOGGER, "info", messages.append)
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    conv, switch = nn.Conv2d(3, 4, 3), InferencePrecision()
    assert switch.update(conv, "cpu").name == switch.update(conv, "cpu").name == "bf16+channels_last"
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and len(messages) == 1
    assert switch.update(conv, "cpu", force_fp32=True).name == "fp32"
    assert conv.weight.is_contiguous() and len(messages) == 2
    assert switch.update(conv, "cpu").name == "bf16+channels_last" and len(messages) == 3
    monkeypatch.setenv("YOLOV5_FP32", "1")
    assert switch.update(conv, "cpu").name == "fp32" and conv.weight.is_contiguous() and len(messages) == 4
    assert messages[-1] == "precision: fp32 (fp32 forced (--fp32 / YOLOV5_FP32))"


def test_inference_precision_prepares_a_copied_model_once_without_logging_again(monkeypatch, no_env_override):
    import copy
    import pickle

    messages, prepared = [], []
    monkeypatch.setattr(precision.LOGGER, "info", messages.append)
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(PrecisionPolicy, "prepare_model", lambda self, model: prepared.append(model) or model)
    conv, switch = nn.Conv2d(3, 4, 3), InferencePrecision()
    switch.update(conv, "cpu")
    switch.update(conv, "cpu")
    copied_conv, copied_switch = copy.deepcopy((conv, switch))
    copied_switch.update(copied_conv, "cpu")
    copied_switch.update(copied_conv, "cpu")
    assert prepared == [conv, copied_conv] and len(messages) == 1
    restored = pickle.loads(pickle.dumps(switch))
    restored.update(conv, "cpu")
    assert prepared[-1] is conv and len(prepared) == 3


# ------------------------------------------------------------------------------------------------ accuracy guard


def _require_fixtures() -> None:
    if not (WEIGHTS.is_file() and PARITY.is_file()):
        pytest.skip(f"upstream parity fixtures not found in {UPSTREAM} (../shared beside the repository)")


@pytest.fixture(scope="module")
def parity() -> dict:
    _require_fixtures()
    return torch.load(PARITY, weights_only=True)


@pytest.fixture(scope="module")
def fixture_model(parity) -> nn.Module:
    """The upstream fixture model, unfused, fp32, eval mode (tests take copies)."""
    from models.loading import load_model

    return load_model(WEIGHTS, fuse=False)


@pytest.fixture(scope="module")
def fused_outputs(parity, fixture_model) -> dict[str, torch.Tensor]:
    """Decoded outputs (2, 6300, 15) of the fused fixture model: fp32 NCHW, fp32 channels_last, bf16 fast path."""
    image = parity["input"]
    reference = copy.deepcopy(fixture_model).fuse().eval()
    fast = copy.deepcopy(reference).to(memory_format=torch.channels_last)
    fast_input = image.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        outputs = {"fp32": reference(image)[0], "channels_last": fast(fast_input)[0]}
        if precision.cpu_has_native_bf16():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                decoded, raw = fast(fast_input)
            outputs.update(bf16=decoded, bf16_raw_dtype=raw[0].dtype)
            packed = PrecisionPolicy("cpu", torch.bfloat16, True, "test").prepare_model(copy.deepcopy(reference))
            with torch.autocast("cpu", dtype=torch.bfloat16):
                outputs["bf16_packed"] = packed(fast_input)[0]
    return outputs


def _row_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of corresponding rows of two (n, 4) xyxy box tensors."""
    top_left, bottom_right = torch.max(a[:, :2], b[:, :2]), torch.min(a[:, 2:], b[:, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(1)
    return inter / ((a[:, 2:] - a[:, :2]).prod(1) + (b[:, 2:] - b[:, :2]).prod(1) - inter)


def _assert_same_detections(reference: list[torch.Tensor], candidate: list[torch.Tensor]) -> None:
    """Every image: count within COUNT_SLACK; every matched box IoU > MATCH_IOU_MIN, |d xyxy| < BOX_PX_MAX px,
    |d conf| < CONF_ABS_MAX and the same class (at most COUNT_SLACK unmatched boxes)."""
    for index, (ref, cand) in enumerate(zip(reference, candidate, strict=True)):
        assert abs(len(ref) - len(cand)) <= COUNT_SLACK, f"image {index}: {len(ref)} vs {len(cand)} boxes"
        if not len(ref) or not len(cand):
            continue
        best_iou, match = box_iou(ref[:, :4], cand[:, :4]).max(1)
        matched = best_iou > MATCH_IOU_MIN
        assert int((~matched).sum()) <= COUNT_SLACK, f"image {index}: IoUs {best_iou.tolist()}"
        ref, cand = ref[matched], cand[match[matched]]
        assert (ref[:, :4] - cand[:, :4]).abs().max() < BOX_PX_MAX
        assert (ref[:, 4] - cand[:, 4]).abs().max() < CONF_ABS_MAX
        assert torch.equal(ref[:, 5], cand[:, 5])


def _assert_rows_close(reference: torch.Tensor, candidate: torch.Tensor) -> None:
    """Per decoded row ``[x, y, w, h, obj, cls...]``: the tolerances stated at the top of the module."""
    assert candidate.shape == reference.shape and candidate.dtype == torch.float32
    iou = _row_iou(xywh2xyxy(reference[..., :4]).view(-1, 4), xywh2xyxy(candidate[..., :4]).view(-1, 4))
    assert iou.min() >= ROW_IOU_MIN
    diff = (candidate - reference).abs()
    assert diff[..., :2].max() <= XY_PX_MAX
    assert (diff[..., 2:4] / reference[..., 2:4]).max() <= WH_REL_MAX
    assert diff[..., 4].max() <= OBJ_ABS_MAX
    assert diff[..., 5:].max() <= CLS_ABS_MAX


def test_fp32_reference_matches_upstream(fused_outputs, parity):
    assert torch.allclose(fused_outputs["fp32"], parity["infer_fused"], atol=1e-3, rtol=1e-4)


def test_channels_last_fp32_matches_nchw(fused_outputs):
    assert (fused_outputs["channels_last"] - fused_outputs["fp32"]).abs().max() <= CHANNELS_LAST_ABS_MAX
    nms = {k: non_max_suppression(fused_outputs[k], conf_thres=0.25, iou_thres=0.45) for k in ("fp32", "channels_last")}
    _assert_same_detections(nms["fp32"], nms["channels_last"])


@NEEDS_BF16
@pytest.mark.parametrize("variant", ["bf16", "bf16_packed"])
def test_bf16_fast_path_matches_fp32_per_decoded_row(fused_outputs, variant):
    """Plain autocast and the policy's packed conv kernels (utils/cpu_fast.py) are both within the tolerances."""
    _assert_rows_close(fused_outputs["fp32"], fused_outputs[variant])


@NEEDS_BF16
def test_bf16_fast_path_gives_the_same_detections(fused_outputs):
    """NMS(0.25, 0.45) in both precisions: on this fixture fp32 finds no box, so this checks for spurious boxes."""
    reference = non_max_suppression(fused_outputs["fp32"], conf_thres=0.25, iou_thres=0.45)
    candidate = non_max_suppression(fused_outputs["bf16"], conf_thres=0.25, iou_thres=0.45)
    _assert_same_detections(reference, candidate)


@NEEDS_BF16
def test_autocast_decoded_boxes_are_float32_raw_levels_are_not(fused_outputs):
    """Detect's decoded rows come out fp32 (the fp32 grid promotes them); the raw levels stay bf16 -> float_outputs."""
    assert fused_outputs["bf16"].dtype == torch.float32
    assert fused_outputs["bf16_raw_dtype"] == torch.bfloat16


# Through the entry points (DetectMultiBackend ``.pt``, default policy vs ``fp32=True``), per candidate detection:
# every decoded row whose fp32 confidence obj * max(cls) is >= 0.001 (upstream's val threshold; 600 rows here).
# Measured: box IoU >= 0.996, |d conf| / conf <= 2.5 %, class flips only where the top two class scores differ by
# < 1.5 % of conf (this 3-epoch fixture has near-tied classes); NMS(0.001, 0.6) keeps 166 vs 169 boxes per image.
CANDIDATE_CONF, CANDIDATE_IOU_MIN, CANDIDATE_CONF_REL_MAX, CLASS_MARGIN_REL = 0.001, 0.98, 0.05, 0.03
NMS_COUNT_REL_MAX = 0.05


@pytest.fixture(scope="module")
def backend_outputs(parity) -> dict:
    """Decoded outputs of the fixture through DetectMultiBackend: default policy ('fast') and fp32=True."""
    from models.backends import DetectMultiBackend

    fast, reference = DetectMultiBackend(WEIGHTS), DetectMultiBackend(WEIGHTS, fp32=True)
    with torch.inference_mode():
        return {"fast": fast(parity["input"])[0], "fp32": reference(parity["input"])[0],
                "policies": (fast.precision.name, reference.precision.name)}


def _candidates(decoded: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(b, n, 5 + nc) decoded rows -> xyxy boxes (b, n, 4), conf, class, top-1 minus top-2 class score (b, n)."""
    scores = decoded[..., 5:] * decoded[..., 4:5]
    conf, cls = scores.max(-1)
    top2 = scores.topk(2, dim=-1).values
    return xywh2xyxy(decoded[..., :4]), conf, cls, top2[..., 0] - top2[..., 1]


def test_detect_multibackend_fast_path_gives_the_same_candidate_detections(backend_outputs):
    assert backend_outputs["policies"] == (select_precision("cpu", log=False).name, "fp32")
    reference, fast = backend_outputs["fp32"], backend_outputs["fast"]
    assert fast.dtype == reference.dtype == torch.float32
    boxes, conf, cls, margin = _candidates(reference)
    fast_boxes, fast_conf, fast_cls, _ = _candidates(fast)
    keep = conf >= CANDIDATE_CONF
    assert int(keep.sum()) >= 500
    assert _row_iou(boxes[keep], fast_boxes[keep]).min() >= CANDIDATE_IOU_MIN
    assert ((fast_conf - conf).abs() / conf)[keep].max() <= CANDIDATE_CONF_REL_MAX
    clear = keep & (margin > CLASS_MARGIN_REL * conf)
    assert int(clear.sum()) >= 100 and torch.equal(cls[clear], fast_cls[clear])
    for ref_det, fast_det in zip(non_max_suppression(reference, CANDIDATE_CONF, 0.6, max_det=300),
                                 non_max_suppression(fast, CANDIDATE_CONF, 0.6, max_det=300), strict=True):
        assert abs(len(fast_det) - len(ref_det)) <= NMS_COUNT_REL_MAX * len(ref_det)


# ------------------------------------------------------------------------------- fp32 state under autocast training


def _training_model(fixture_model: nn.Module, parity: dict) -> nn.Module:
    """A train-mode, channels_last copy of the fixture model with its hyperparameters (for ComputeLoss)."""
    model = copy.deepcopy(fixture_model).train()
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    model.hyp = dict(parity["hyp"])
    return model.to(memory_format=torch.channels_last)


def _small_batch(parity: dict, size: int) -> torch.Tensor:
    """The parity images resized to ``size`` px (normalised targets stay valid), channels_last."""
    image = nn.functional.interpolate(parity["input"], size=(size, size), mode="bilinear", align_corners=False)
    return image.contiguous(memory_format=torch.channels_last)


@NEEDS_BF16
def test_training_step_under_autocast_keeps_fp32_state(parity, fixture_model):
    from utils.loss import ComputeLoss
    from utils.optim import smart_optimizer

    model = _training_model(fixture_model, parity)
    criterion = ComputeLoss(model)
    optimizer = smart_optimizer(model, "SGD", lr=0.01, momentum=0.937, decay=5e-4)
    batch_norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    before = [(bn.running_mean.clone(), int(bn.num_batches_tracked)) for bn in batch_norms]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        predictions = model(_small_batch(parity, 128))
    assert predictions[0].dtype == torch.bfloat16
    loss, items = criterion(float_outputs(predictions), parity["targets"])
    assert loss.dtype == items.dtype == torch.float32 and torch.isfinite(loss).all()
    loss.backward()
    optimizer.step()
    for bn, (old_mean, old_count) in zip(batch_norms, before, strict=True):
        assert bn.running_mean.dtype == bn.running_var.dtype == torch.float32
        assert int(bn.num_batches_tracked) == old_count + 1
        assert not torch.equal(bn.running_mean, old_mean)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert {p.grad.dtype for p in model.parameters() if p.grad is not None} == {torch.float32}
    buffers = [state["momentum_buffer"] for state in optimizer.state.values()]
    assert len(buffers) == len(list(model.parameters())) and {b.dtype for b in buffers} == {torch.float32}


@NEEDS_BF16
def test_loss_on_autocast_outputs_is_fp32_and_matches(parity, fixture_model):
    """ComputeLoss (BatchNorm in eval mode) on bf16 outputs cast with float_outputs: fp32, within 0.5% of fp32."""
    from utils.loss import ComputeLoss

    model = _training_model(fixture_model, parity)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.eval()
    criterion = ComputeLoss(model)
    image = _small_batch(parity, 160)
    with torch.no_grad():
        reference, reference_items = criterion(model(image), parity["targets"])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            predictions = model(image)
        loss, items = criterion(float_outputs(predictions), parity["targets"])
    assert loss.dtype == items.dtype == torch.float32
    assert torch.allclose(loss, reference, rtol=5e-3)
    assert torch.allclose(items, reference_items, rtol=1e-2)


def test_checkpoint_of_a_channels_last_model_is_fp16_and_equal(parity, fixture_model):
    from utils.checkpoint import make_checkpoint

    model = _training_model(fixture_model, parity)
    saved = make_checkpoint(model)["model"]
    assert {p.dtype for p in saved.parameters()} == {torch.float16}
    for key, value in saved.state_dict().items():
        expected = model.state_dict()[key]
        if value.is_floating_point():
            assert torch.equal(value, expected.half()), key
