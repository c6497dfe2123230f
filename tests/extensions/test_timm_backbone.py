"""Tests for extensions/timm_backbone.py: the timm feature row, Index selectors, pretrained weights, checkpoints."""

from __future__ import annotations

import time
from copy import deepcopy
from pathlib import Path

import pytest
import timm
import torch

from extensions.timm_backbone import (
    ENV_PRETRAINED,
    FeatureChannels,
    PretrainedWeightsNotFoundError,
    TimmBackbone,
    feature_contract,
    parse_pretrained_value,
)
from models.builder import ModelYAMLError, build_model
from models.yolo import Model
from tests.module_support import run_fresh_python
from utils.checkpoint import _offending_globals, make_checkpoint, safe_globals, save_checkpoint
from utils.files import ROOT, check_yaml, yaml_load

ATTO = "convnext_atto"


def _small_yaml(**overrides) -> dict:
    """Return the convnext_yolov5n YAML dict (ConvNeXt-Atto) with top-level overrides."""
    cfg = yaml_load(check_yaml("convnext_yolov5n.yaml"))
    cfg.update(nc=3, **overrides)
    return cfg


def _build_layers(cfg: dict) -> torch.nn.Sequential:
    """Build the YAML's layers only (no stride dry run, no FLOPs): enough for row-level checks."""
    return build_model(cfg, ch=[3], verbose=False).model


@pytest.fixture(scope="module")
def small_model() -> Model:
    torch.manual_seed(0)
    return Model(_small_yaml())


@pytest.fixture()
def no_caches(tmp_path, monkeypatch):
    """Point the Hugging Face and torch hub caches at empty folders and clear the env override."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(ENV_PRETRAINED, raising=False)
    return tmp_path


def _random_timm_state(name: str = ATTO, seed: int = 1) -> dict:
    """A full (classifier included) timm state dict with random values, as a timm checkpoint would hold."""
    torch.manual_seed(seed)
    full = timm.create_model(name, pretrained=False)
    return {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in full.state_dict().items()}


def test_yamls_resolve_by_bare_name():
    for name in ("convnext_yolov5s.yaml", "convnext_yolov5n.yaml"):
        assert Path(check_yaml(name)) == ROOT / "extensions" / "cfg" / name


def test_backbone_row_channels_and_strides_from_feature_info():
    row = TimmBackbone(3, ATTO, (1, 2, 3))
    assert row.channels == [80, 160, 320]
    assert row.strides == [8, 16, 32]
    outputs = row(torch.rand(2, 3, 64, 64))
    assert [tuple(o.shape) for o in outputs] == [(2, 80, 8, 8), (2, 160, 4, 4), (2, 320, 2, 2)]


def test_feature_contract_of_convnext_tiny_and_other_levels():
    assert feature_contract("convnext_tiny", (1, 2, 3)) == ([192, 384, 768], [8, 16, 32])
    assert feature_contract(ATTO, (0, 3)) == ([40, 320], [4, 32])


def test_unknown_timm_name_is_a_clear_yaml_error():
    cfg = _small_yaml()
    cfg["backbone"][0] = [-1, 1, "TimmBackbone", ["convnext_atoo", [1, 2, 3]]]
    with pytest.raises(ModelYAMLError, match=r"row 0 .*unknown timm model 'convnext_atoo'.*convnext_atto"):
        Model(cfg)


def test_input_is_normalised_with_the_pretrained_mean_std():
    row = TimmBackbone(3, ATTO).eval()
    assert torch.allclose(row.mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))
    assert torch.allclose(row.std.flatten(), torch.tensor([0.229, 0.224, 0.225]))
    x = torch.rand(1, 3, 32, 32)
    manual = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(
        1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(row(x)[-1], row.body(manual)[-1], atol=1e-6)
        raw = TimmBackbone(3, ATTO, normalize=False)
        raw.load_state_dict(row.state_dict())
        assert torch.allclose(raw.eval()(manual)[-1], row(x)[-1], atol=1e-6)
    assert "mean" not in row.state_dict()  # constants, not transferable tensors


def test_index_rows_take_level_widths(small_model):
    layers = small_model.model
    assert [type(layers[i]).__name__ for i in (1, 3, 5)] == ["Index", "Index", "Index"]
    assert [layers[i].index for i in (1, 3, 5)] == [0, 1, 2]
    assert [(layers[i].conv.in_channels, layers[i].conv.out_channels) for i in (2, 4, 6)] == [(80, 64), (160, 128),
                                                                                              (320, 256)]


def test_feature_channels_carries_levels():
    width = FeatureChannels([80, 160, 320], [8, 16, 32])
    assert int(width) == 320 and width.levels == (80, 160, 320) and width.strides == (8, 16, 32)


@pytest.mark.parametrize("row, message", [
    ([0, 1, "Index", [3]], "out of range for a row with 3 feature levels"),
    ([2, 1, "Index", [0]], "its 'from' must be a TimmBackbone row"),
])
def test_bad_index_rows(row, message):
    cfg = _small_yaml()
    cfg["backbone"][3] = row
    with pytest.raises(ModelYAMLError, match=message):
        Model(cfg)


def test_full_model_strides(small_model):
    assert small_model.stride.tolist() == [8.0, 16.0, 32.0]
    assert small_model.model[-1].stride.tolist() == [8.0, 16.0, 32.0]


def test_forward_backward(small_model):
    model = deepcopy(small_model).train()
    out = model(torch.rand(2, 3, 64, 64))
    assert [tuple(o.shape) for o in out] == [(2, 3, 8, 8, 8), (2, 3, 4, 4, 8), (2, 3, 2, 2, 8)]
    sum(o.sum() for o in out).backward()
    stem = model.model[0].body.stem_0.weight
    assert stem.grad is not None and stem.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        pred, raw = model(torch.rand(1, 3, 64, 64))
    assert pred.shape == (1, 3 * (64 + 16 + 4), 8)


def test_one_training_step_changes_backbone_and_head(small_model):
    from utils.loss import ComputeLoss

    torch.manual_seed(0)
    model = deepcopy(small_model).train()
    model.hyp = yaml_load(ROOT / "data" / "hyps" / "hyp.scratch-low.yaml")
    loss_fn = ComputeLoss(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    targets = torch.tensor([[0, 1, 0.5, 0.5, 0.4, 0.3], [1, 2, 0.3, 0.6, 0.2, 0.2]])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loss, items = loss_fn(model(torch.rand(2, 3, 64, 64)), targets)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss) and items.shape == (3,) and loss.item() > 0
    after = model.state_dict()
    assert not torch.equal(before["model.0.body.stem_0.weight"], after["model.0.body.stem_0.weight"])
    assert not torch.equal(before["model.22.m.0.weight"], after["model.22.m.0.weight"])


def test_drop_path_rate_from_yaml():
    layers = _build_layers(_small_yaml(drop_path_rate=0.2))
    rates = [m.drop_prob for m in layers[0].modules() if type(m).__name__ == "DropPath"]
    assert rates and max(rates) == pytest.approx(0.2)


@pytest.mark.parametrize("value, expected", [
    (False, False), (None, False), ("false", False), ("0", False), ("", False), (True, True), ("true", True),
    ("1", True), ("w/convnext.pth", "w/convnext.pth"),
])
def test_parse_pretrained_value(value, expected):
    assert parse_pretrained_value(value) == expected


def test_pretrained_true_without_cache_fails_fast(no_caches):
    start = time.monotonic()
    with pytest.raises(PretrainedWeightsNotFoundError) as info:
        Model(_small_yaml(pretrained=True))
    assert time.monotonic() - start < 10
    message = str(info.value)
    assert str(no_caches / "hf" / "models--timm--convnext_atto.d2_in1k") in message
    assert "model.safetensors" in message
    assert "https://huggingface.co/timm/convnext_atto.d2_in1k/resolve/main/model.safetensors" in message
    assert str(no_caches / "torch" / "hub" / "checkpoints" / "convnext_atto_d2-01bb0f51.pth") in message
    assert ENV_PRETRAINED in message


def test_pretrained_true_uses_hf_cache_file(no_caches):
    from safetensors.torch import save_file

    state = _random_timm_state()
    snapshot = no_caches / "hf" / "models--timm--convnext_atto.d2_in1k" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("abc123")
    save_file(state, str(snapshot / "model.safetensors"))
    row = TimmBackbone(3, ATTO, pretrained=True)
    assert row.pretrained_file == str(snapshot / "model.safetensors")
    assert torch.equal(row.body.stages_2.blocks[0].conv_dw.weight, state["stages.2.blocks.0.conv_dw.weight"])


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_pretrained_local_file_loads_backbone_only(no_caches, suffix):
    state = _random_timm_state()
    path = no_caches / f"atto{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)
    torch.manual_seed(0)
    layers = _build_layers(_small_yaml(pretrained=str(path)))
    for key, value in layers[0].body.state_dict().items():
        raw = key.replace("stem_", "stem.").replace("stages_", "stages.")
        assert torch.equal(value, state[raw]), key
    torch.manual_seed(0)
    scratch = dict(_build_layers(_small_yaml()).named_parameters())
    for key, value in layers.named_parameters():  # neck and head keep their (seeded) initialisation
        if not key.startswith("0."):
            assert torch.equal(value, scratch[key]), key


def test_env_override_beats_yaml(no_caches, monkeypatch):
    path = no_caches / "atto.pth"
    state = _random_timm_state(seed=3)
    torch.save(state, path)
    monkeypatch.setenv(ENV_PRETRAINED, str(path))
    layers = _build_layers(_small_yaml(pretrained=False))
    assert torch.equal(layers[0].body.stem_0.weight, state["stem.0.weight"])
    monkeypatch.setenv(ENV_PRETRAINED, "0")
    assert _build_layers(_small_yaml(pretrained=True))[0].pretrained_file is None


def test_pretrained_missing_path_and_unrelated_file(no_caches):
    with pytest.raises(FileNotFoundError, match="not found: nowhere/atto.pth"):
        TimmBackbone(3, ATTO, pretrained="nowhere/atto.pth")
    unrelated = no_caches / "other.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, unrelated)
    with pytest.raises(ValueError, match="no tensor matches timm model 'convnext_atto'"):
        TimmBackbone(3, ATTO, pretrained=str(unrelated))


def test_checkpoint_round_trip_in_fresh_process(small_model, tmp_path):
    model = deepcopy(small_model).half().float().eval()  # fp16-exact weights: the checkpoint stores fp16
    weights = tmp_path / "convnext.pt"
    save_checkpoint(make_checkpoint(model), weights)
    assert _offending_globals(weights, safe_globals()) == []
    x = torch.rand(1, 3, 64, 64)
    torch.save(x, tmp_path / "x.pt")
    code = ("import torch; from models.loading import load_model; "
            f"m = load_model({str(weights)!r}, fuse=False); x = torch.load({str(tmp_path / 'x.pt')!r}, "
            "weights_only=True)\nwith torch.no_grad(): y = m(x)[0]\n"
            f"torch.save(y, {str(tmp_path / 'y.pt')!r}); print(type(m.model[0]).__module__)")
    result = run_fresh_python(code, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("extensions.timm_backbone")
    with torch.no_grad():
        expected = model(x)[0]
    assert torch.allclose(torch.load(tmp_path / "y.pt", weights_only=True), expected, atol=1e-5, rtol=0)


def test_onnx_export(small_model, tmp_path):
    pytest.importorskip("onnx")
    model = deepcopy(small_model).eval()
    model.model[-1].export = True
    x = torch.rand(1, 3, 64, 64)
    path = tmp_path / "convnext.onnx"
    torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=17, input_names=["images"],
                      output_names=["output0"])
    import onnx

    onnx.checker.check_model(str(path))
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = model(x)[0].numpy()
    got = session.run(None, {"images": x.numpy()})[0]
    assert got.shape == (1, 252, 8)
    assert abs(got - expected).max() < 1e-3


@pytest.mark.slow
def test_convnext_yolov5s_builds_with_tiny_stages():
    model = Model("convnext_yolov5s.yaml", nc=2)
    assert model.model[0].model_name == "convnext_tiny"
    assert model.model[0].channels == [192, 384, 768]
    assert model.stride.tolist() == [8.0, 16.0, 32.0]
    assert [model.model[i].conv.out_channels for i in (2, 4, 6)] == [128, 256, 512]
