"""YAML builder and registry: extension modules, clear errors, upstream multiples, no eval, no leaks."""

from __future__ import annotations

from copy import deepcopy
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import yaml

from models.builder import ModelYAMLError, _scale_depth, build_model, parse_activation
from models.common import C3, Conv
from models.registry import add_module, known_modules, register_module, resolve, unregister_module
from models.yolo import Detect, DetectionModel, parse_model
from utils.files import check_yaml, yaml_load

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY = {
    "nc": 2,
    "depth_multiple": 1.0,
    "width_multiple": 1.0,
    "anchors": [[10, 13, 16, 30], [30, 61, 62, 45]],
    "backbone": [[-1, 1, "Conv", [8, 3, 2]], [-1, 1, "Conv", [16, 3, 2]], [-1, 1, "Conv", [16, 3, 2]]],
    "head": [[[1, 2], 1, "Detect", ["nc", "anchors"]]],
}


def _tiny(**changes) -> dict:
    cfg = deepcopy(TINY)
    cfg.update(changes)
    return cfg


def _write(tmp_path: Path, cfg: dict, name: str = "custom.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


class DoubleConv(nn.Module):
    """Toy layer defined outside models/: two 3x3 Conv layers."""

    def __init__(self, c1: int, c2: int):
        super().__init__()
        self.cv1 = Conv(c1, c2, 3)
        self.cv2 = Conv(c2, c2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv2(self.cv1(x))


@pytest.fixture
def double_conv():
    add_module("DoubleConv", DoubleConv, role="conv")
    yield
    unregister_module("DoubleConv")


def test_module_registered_outside_models_builds(double_conv):
    cfg = _tiny(width_multiple=0.5)
    cfg["backbone"].insert(2, [-1, 1, "DoubleConv", [32]])
    cfg["head"] = [[[1, 3], 1, "Detect", ["nc", "anchors"]]]
    model = DetectionModel(cfg)
    layer = model.model[2]
    assert isinstance(layer, DoubleConv) and layer.type.endswith("test_builder.DoubleConv")
    assert layer.cv1.conv.in_channels == 8 and layer.cv2.conv.out_channels == 16  # 32 * 0.5
    assert model.stride.tolist() == [4.0, 8.0]
    assert model.eval()(torch.rand(1, 3, 32, 32))[0].shape == (1, 2 * (8 * 8 + 4 * 4), 7)


def test_yaml_imports_key_registers_extension_module(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO_ROOT))
    cfg = _tiny(imports=["tests.models.yaml_imports_helper"])
    cfg["backbone"].append([-1, 1, "ChannelGate", [2.0]])
    cfg["head"] = [[[1, 3], 1, "Detect", ["nc", "anchors"]]]
    model = DetectionModel(_write(tmp_path, cfg))
    gate = model.model[3]
    assert type(gate).__name__ == "ChannelGate" and gate.gate.shape == (1, 16, 1, 1)
    assert torch.allclose(gate.gate, torch.full_like(gate.gate, 2.0))
    assert "ChannelGate" in known_modules()


def test_missing_import_names_the_entry(tmp_path):
    with pytest.raises(ImportError, match="no_such_extension_module"):
        build_model(_tiny(imports=["no_such_extension_module"]), ch=[3], verbose=False)


def test_unknown_module_error_names_file_row_and_known_modules(tmp_path):
    cfg = _tiny()
    cfg["backbone"][1] = [-1, 1, "Convv", [16, 3, 2]]
    path = _write(tmp_path, cfg, "broken.yaml")
    with pytest.raises(ModelYAMLError) as info:
        DetectionModel(path)
    message = str(info.value)
    assert "broken.yaml" in message and "row 1" in message and "'Convv'" in message
    assert "Did you mean Conv" in message and "C3" in message and "SPPF" in message and "Detect" in message


@pytest.mark.parametrize("bad_from", [3, -4, "x"])
def test_bad_from_index_error(tmp_path, bad_from):
    cfg = _tiny()
    cfg["backbone"][2] = [bad_from, 1, "Conv", [16, 3, 2]]
    with pytest.raises(ModelYAMLError, match=r"bad\.yaml: row 2 .*'from' index"):
        DetectionModel(_write(tmp_path, cfg, "bad.yaml"))


def test_bad_from_in_concat_list(tmp_path):
    cfg = _tiny()
    cfg["head"] = [[[1, 7], 1, "Detect", ["nc", "anchors"]]]
    with pytest.raises(ModelYAMLError, match=r"row 3 .*'from' index 7"):
        build_model(cfg, ch=[3], yaml_file="concat.yaml", verbose=False)


def test_wrong_argument_count_error(tmp_path):
    cfg = _tiny()
    cfg["backbone"][1] = [-1, 1, "Conv", [16, 3, 2, 1, 1, 1, True, "extra"]]
    with pytest.raises(ModelYAMLError, match=r"args\.yaml: row 1 .*cannot build Conv"):
        DetectionModel(_write(tmp_path, cfg, "args.yaml"))


def test_row_shape_error():
    cfg = _tiny()
    cfg["backbone"][0] = [-1, 1, "Conv"]
    with pytest.raises(ModelYAMLError, match=r"row 0 .*\[from, number, module, args\]"):
        build_model(cfg, ch=[3], yaml_file="rows.yaml", verbose=False)


def test_activation_override_does_not_leak():
    leaky = DetectionModel("yolov5s-LeakyReLU.yaml")
    acts = {type(m.act) for m in leaky.modules() if isinstance(m, Conv)}
    assert acts == {nn.LeakyReLU}
    assert next(m.act for m in leaky.modules() if isinstance(m, Conv)).negative_slope == 0.1
    assert type(Conv.default_act) is nn.SiLU
    plain = DetectionModel("yolov5n.yaml")
    assert {type(m.act) for m in plain.modules() if isinstance(m, Conv)} == {nn.SiLU}


def test_activation_restored_after_failed_build():
    cfg = _tiny(activation="nn.ReLU()")
    cfg["backbone"][1] = [-1, 1, "Nope", [16]]
    with pytest.raises(ModelYAMLError):
        build_model(cfg, ch=[3], verbose=False)
    assert type(Conv.default_act) is nn.SiLU


@pytest.mark.parametrize("spec, expected", [("nn.LeakyReLU(0.1)", nn.LeakyReLU), ("nn.SiLU()", nn.SiLU),
                                            ("Hardswish", nn.Hardswish), ("torch.nn.ReLU()", nn.ReLU)])
def test_parse_activation(spec, expected):
    assert type(parse_activation(spec)) is expected


@pytest.mark.parametrize("spec", ["os.system('x')", "nn.LeakyReLU(__import__('os'))", "print", "nn.Conv2d(1, 1, 1)x"])
def test_parse_activation_rejects_code(spec):
    with pytest.raises(ModelYAMLError):
        parse_activation(spec)


@pytest.mark.parametrize("gd, expected", [(0.33, [1, 1, 2, 3]), (0.67, [1, 2, 4, 6]), (1.0, [1, 3, 6, 9]),
                                          (1.33, [1, 4, 8, 12])])
def test_depth_multiple_like_upstream(gd, expected):
    assert [_scale_depth(n, gd) for n in (1, 3, 6, 9)] == expected


def test_width_and_depth_multiples_in_built_model():
    model = DetectionModel("yolov5n.yaml")
    widths = [m.cv3.conv.out_channels if isinstance(m, C3) else m.conv.out_channels
              for m in model.model[:10] if hasattr(m, "conv") or isinstance(m, C3)]
    assert widths == [16, 32, 32, 64, 64, 128, 128, 256, 256]  # 64..1024 x 0.25, rounded up to multiples of 8
    assert [len(model.model[i].m) for i in (2, 4, 6, 8, 13, 17, 20, 23)] == [1, 2, 3, 1, 1, 1, 1, 1]
    assert model.model[-1].m[0].out_channels == 255  # head width (na * (nc + 5)) is never scaled
    assert model.save == [4, 6, 10, 14, 17, 20, 23]


def test_yaml_strings_are_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    payload = f"__import__('os').system('touch {marker}')"
    cfg = _tiny()
    cfg["backbone"].append([-1, 1, "nn.Upsample", [None, 2, payload]])
    built = build_model(cfg, ch=[3], verbose=False)
    assert built.model[3].mode == payload  # stays a plain string
    cfg["backbone"][3] = [-1, 1, payload, []]
    with pytest.raises(ModelYAMLError, match="unknown module"):
        build_model(cfg, ch=[3], verbose=False)
    cfg["backbone"][3] = [-1, 1, "os.system", [f"touch {marker}"]]
    with pytest.raises(ModelYAMLError, match="unknown module"):
        build_model(cfg, ch=[3], verbose=False)
    assert not marker.exists()


def test_symbols_resolve_without_eval():
    cfg = _tiny()
    cfg["backbone"].append([-1, 1, "nn.Upsample", ["None", 2, "nearest"]])
    cfg["head"] = [[[1, 3], 1, "Detect", ["nc", "anchors"]]]
    built = build_model(cfg, ch=[3], verbose=False)
    assert built.model[3].size is None and built.model[3].scale_factor == 2.0
    head = built.model[4]
    assert isinstance(head, Detect) and head.nc == 2 and head.anchors.shape == (2, 2, 2)


def test_nc_and_anchors_overrides():
    model = DetectionModel("yolov5n.yaml", nc=3, anchors=4)
    head = model.model[-1]
    assert model.yaml["nc"] == 3 and model.yaml["anchors"] == 4
    assert (head.nc, head.no, head.na, head.nl) == (3, 8, 4, 3)
    assert head.m[0].out_channels == 4 * 8 and model.names == ["0", "1", "2"]
    assert model.yaml_file == "yolov5n.yaml"


def test_int_anchors_give_placeholder_anchors():
    head = DetectionModel(_tiny(anchors=2)).model[-1]
    assert head.na == 2 and head.anchors.shape == (2, 2, 2)


def test_detection_model_anchors_in_grid_units_and_biases():
    model = DetectionModel("yolov5n.yaml")
    head = model.model[-1]
    assert torch.allclose(head.anchors[0], torch.tensor([[1.25, 1.625], [2.0, 3.75], [4.125, 2.875]]))
    assert torch.allclose(head.anchors * head.stride.view(-1, 1, 1),
                          torch.tensor(yaml_load(check_yaml("yolov5n.yaml"))["anchors"]).float().view(3, 3, 2))
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert (bn.eps, bn.momentum) == (1e-3, 0.03)


def test_reversed_anchor_order_is_flipped():
    cfg = _tiny(anchors=[[30, 61, 62, 45], [10, 13, 16, 30]])  # large anchors on the small-stride level
    head = DetectionModel(cfg).model[-1]
    assert torch.allclose(head.anchors[0] * 4, torch.tensor([[10.0, 13.0], [16.0, 30.0]]))


def test_registry_rejects_duplicate_names_and_resolves_dotted_paths():
    with pytest.raises(ValueError, match="already registered"):
        register_module("Conv", role="conv")(DoubleConv)
    assert resolve("nn.Identity").cls is nn.Identity
    assert resolve("torch.nn.Identity").role == "passthrough"
    assert resolve("models.common.C3").role == "csp"
    assert resolve(f"{__name__}.DoubleConv").cls is DoubleConv
    with pytest.raises(KeyError, match="Known modules"):
        resolve("nn.NotALayer")


def test_parse_model_shim_matches_upstream_signature():
    layers, save = parse_model(deepcopy(TINY), ch=[3])
    assert isinstance(layers, nn.Sequential) and save == [1, 2]
    assert [m.i for m in layers] == [0, 1, 2, 3] and layers[3].f == [1, 2]
    assert layers[0].type == "models.common.Conv" and layers[0].np == 8 * 3 * 9 + 16
