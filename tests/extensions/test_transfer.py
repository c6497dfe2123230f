"""Tests for extensions/transfer.py: backbone-only transfer (--backbone-weights) from the supported sources."""

from __future__ import annotations

import logging
from copy import deepcopy
from pathlib import Path

import pytest
import timm
import torch

from extensions.transfer import (
    REASON_MISSING,
    backbone_length,
    extract_state_dict,
    freeze_backbone,
    load_backbone_weights,
    match_keys,
    normalize_key,
    raw_key_candidates,
    transfer_backbone,
)
from models.builder import build_model
from models.yolo import ClassificationModel, Model
from utils.checkpoint import torch_safe_load
from utils.files import check_yaml, yaml_load

FIXTURE = Path("/work/shared/fixtures/upstream/yolov5n-trained.pt")
needs_fixture = pytest.mark.skipif(not FIXTURE.is_file(), reason="upstream fixture checkpoint not available")


@pytest.fixture(scope="module")
def yolov5n() -> Model:
    torch.manual_seed(0)
    return Model("yolov5n.yaml", nc=10)


@pytest.fixture(scope="module")
def convnext_n() -> Model:
    torch.manual_seed(0)
    cfg = yaml_load(check_yaml("convnext_yolov5n.yaml"))
    cfg["nc"] = 3
    return Model(cfg)


def _randomized(model: Model, seed: int) -> Model:
    """A copy of ``model`` whose floating-point tensors are replaced by seeded random values."""
    torch.manual_seed(seed)
    copy = deepcopy(model)
    with torch.no_grad():
        for value in copy.state_dict().values():
            if value.is_floating_point():
                value.copy_(torch.randn_like(value))
    return copy


def _split(state: dict, n: int) -> tuple[dict, dict]:
    """Split a model state dict into (backbone rows < n without BN step counters, the rest)."""
    backbone = {k: v for k, v in state.items() if int(k.split(".")[1]) < n and not k.endswith("num_batches_tracked")}
    return backbone, {k: v for k, v in state.items() if k not in backbone}


@pytest.mark.parametrize("key, expected", [
    ("model.3.conv.weight", "3.conv.weight"),
    ("module.model.3.conv.weight", "3.conv.weight"),
    ("model.model.model.9.cv2.bn.bias", "9.cv2.bn.bias"),
    ("backbone.0.conv.weight", "0.conv.weight"),
    ("module.encoder.2.m.0.cv1.conv.weight", "2.m.0.cv1.conv.weight"),
    ("stages.1.blocks.0.gamma", "stages.1.blocks.0.gamma"),
    ("decoder.0.weight", "decoder.0.weight"),
])
def test_normalize_key(key, expected):
    assert normalize_key(key) == expected


def test_raw_key_candidates_undo_features_only_renaming():
    assert raw_key_candidates("stages_1.blocks.0.gamma") == ["stages_1.blocks.0.gamma", "stages.1.blocks.0.gamma"]
    assert raw_key_candidates("conv_stem_0.weight") == ["conv_stem_0.weight", "conv.stem_0.weight",
                                                        "conv_stem.0.weight"]
    assert raw_key_candidates("norm.weight") == ["norm.weight"]


def test_backbone_length(yolov5n, convnext_n):
    assert backbone_length(yolov5n) == 10
    assert backbone_length(convnext_n) == 8
    assert len(yaml_load(check_yaml("convnext_yolov5s.yaml"))["backbone"]) == 8
    with pytest.raises(ValueError, match="no YAML 'backbone:' section"):
        backbone_length(torch.nn.Linear(1, 1))


@needs_fixture
def test_upstream_checkpoint_into_yolov5n(yolov5n, caplog):
    model = deepcopy(yolov5n)
    head_before = _split(deepcopy(model.state_dict()), 10)[1]
    with caplog.at_level(logging.INFO, logger="yolov5"):
        report = load_backbone_weights(FIXTURE, model)
    source = torch_safe_load(FIXTURE)["model"].float().state_dict()
    backbone, head = _split(model.state_dict(), 10)
    assert report.total == len(backbone) == report.num_transferred and not report.skipped
    assert f"Transferred {len(backbone)}/{len(backbone)} backbone tensors from {FIXTURE}" in caplog.text
    for key, value in backbone.items():
        assert torch.equal(value, source[key]), key
    for key, value in head.items():
        assert torch.equal(value, head_before[key]), key
    assert not torch.equal(head["model.24.m.0.weight"], source["model.24.m.0.weight"])


def test_fake_timm_state_dict_into_convnext_row(convnext_n, tmp_path):
    torch.manual_seed(5)
    full = timm.create_model("convnext_atto")
    state = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in full.state_dict().items()}
    torch.save(state, tmp_path / "timm_atto.pth")
    model = deepcopy(convnext_n)
    before = deepcopy(model.state_dict())
    report = load_backbone_weights(tmp_path / "timm_atto.pth", model)
    body = model.model[0].body.state_dict()
    assert report.num_transferred == len(body)
    for key, value in body.items():
        assert torch.equal(value, state[key.replace("stem_", "stem.").replace("stages_", "stages.")]), key
    adapters = [k for k in before if k.startswith(("model.2.", "model.4.", "model.6.", "model.7."))
                and not k.endswith("num_batches_tracked")]
    assert adapters and all(report.skipped[k] == REASON_MISSING for k in adapters)
    assert report.total == len(body) + len(adapters)
    for key in before:
        if not key.startswith("model.0."):
            assert torch.equal(model.state_dict()[key], before[key]), key


def test_safetensors_and_prefixed_timm_keys(convnext_n, tmp_path):
    from safetensors.torch import save_file

    row = timm.create_model("convnext_atto", features_only=True, out_indices=(1, 2, 3))
    state = {f"module.backbone.{k}": torch.randn_like(v) for k, v in row.state_dict().items()}
    save_file(state, str(tmp_path / "features.safetensors"))
    model = deepcopy(convnext_n)
    report = load_backbone_weights(tmp_path / "features.safetensors", model)
    assert report.num_transferred == len(row.state_dict())
    assert torch.equal(model.model[0].body.stages_3.blocks[1].gamma, state["module.backbone.stages_3.blocks.1.gamma"])


def test_nothing_matching_is_a_clear_error(yolov5n, tmp_path):
    path = tmp_path / "unrelated.pt"
    torch.save({"encoder.weight": torch.zeros(3, 3), "fc.bias": torch.zeros(3)}, path)
    model = deepcopy(yolov5n)
    before = deepcopy(model.state_dict())
    with pytest.raises(ValueError, match=r"unrelated\.pt: 0/\d+ backbone tensors matched \(missing in source\)"):
        load_backbone_weights(path, model)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_wrong_architecture_reports_shape_mismatch(yolov5n, tmp_path):
    path = tmp_path / "yolov5s_state.pt"
    torch.save(build_model(yaml_load(check_yaml("yolov5s.yaml")), ch=[3], verbose=False).model.state_dict(), path)
    with pytest.raises(ValueError, match="shape mismatch"):
        load_backbone_weights(path, deepcopy(yolov5n))


def test_match_keys_reasons():
    dst = {"model.0.w": torch.zeros(2, 3), "model.0.b": torch.zeros(2), "model.1.w": torch.zeros(1)}
    src = {"0.w": torch.ones(2, 3), "0.b": torch.ones(3)}
    report = match_keys(src, dst, {k: [k[len("model."):]] for k in dst}, source="s.pt")
    assert report.transferred == ["model.0.w"]
    assert report.skipped == {"model.0.b": "shape mismatch src (3,) vs dst (2,)", "model.1.w": REASON_MISSING}
    assert report.summary() == "Transferred 1/3 backbone tensors from s.pt"
    assert torch.equal(dst["model.0.w"], torch.zeros(2, 3))  # matching copies nothing


def test_autoencoder_checkpoint_formats(yolov5n, tmp_path):
    source = _randomized(yolov5n, 7)
    encoder = {f"encoder.{k[len('model.'):]}": v for k, v in source.state_dict().items()
               if int(k.split(".")[1]) < 10 and not k.endswith("num_batches_tracked")}
    decoder = {"decoder.0.weight": torch.randn(4, 4)}
    torch.save({"epoch": 3, "model": {**encoder, **decoder}}, tmp_path / "ae_model.pt")
    torch.save({"backbone": {k.replace("encoder.", "backbone."): v for k, v in encoder.items()}, "epoch": 3},
               tmp_path / "ae_backbone.pt")
    for name in ("ae_model.pt", "ae_backbone.pt"):
        model = deepcopy(yolov5n)
        report = load_backbone_weights(tmp_path / name, model)
        assert report.num_transferred == report.total == len(encoder), name
        assert torch.equal(model.model[9].cv2.conv.weight, source.model[9].cv2.conv.weight)


def test_pickled_module_and_classification_checkpoints(yolov5n, tmp_path):
    detector = _randomized(yolov5n, 8)
    torch.save({"model": deepcopy(detector).half(), "ema": None}, tmp_path / "det.pt")
    classifier = ClassificationModel(model=deepcopy(detector), nc=4, cutoff=10)
    torch.save({"model": classifier, "ema": None}, tmp_path / "cls.pt")
    model = deepcopy(yolov5n)
    report = load_backbone_weights(tmp_path / "cls.pt", model)
    assert report.skipped and all(k.startswith("model.9.") for k in report.skipped)
    assert torch.equal(model.model[8].cv3.conv.weight, detector.model[8].cv3.conv.weight)
    report = load_backbone_weights(tmp_path / "det.pt", model)
    assert report.num_transferred == report.total
    assert torch.equal(model.model[0].conv.weight, detector.model[0].conv.weight.half().float())


def test_extract_state_dict_prefers_backbone_then_ema():
    tensor = torch.ones(1)
    assert extract_state_dict({"backbone": {"a": tensor}, "model": {"b": tensor}}) == {"a": tensor}
    with pytest.raises(ValueError, match="no model or state dict found"):
        extract_state_dict({"epoch": 1, "opt": {}}, "x.pt")


def test_transfer_backbone_pure_state_dict_with_explicit_rows(yolov5n):
    model = deepcopy(yolov5n)
    src = {k: torch.full_like(v, 0.5) for k, v in model.state_dict().items() if v.is_floating_point()}
    report = transfer_backbone(src, model, backbone_layers=2)
    assert report.transferred and all(k.startswith(("model.0.", "model.1.")) for k in report.transferred)
    assert float(model.model[1].conv.weight.mean()) == 0.5
    assert float(model.model[2].cv1.conv.weight.mean()) != 0.5


def test_freeze_backbone(convnext_n):
    model = deepcopy(convnext_n)
    frozen = freeze_backbone(model)
    assert frozen and all(int(name.split(".")[1]) < 8 for name in frozen)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(int(n.split(".")[1]) >= 8 for n in trainable)
