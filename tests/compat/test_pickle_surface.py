"""The import and pickle surface upstream checkpoints and user scripts rely on (facts doc sections 3.3 and 3.4).

Unpickling restores ``__dict__`` without calling ``__init__``, so the qualified class names and the instance
attribute names below are frozen. The lists are static on purpose: a rename must fail here.
"""

from __future__ import annotations

import importlib
import inspect
from copy import deepcopy

import pytest
import torch
import torch.nn as nn

# Classes upstream checkpoints reference by module path; they must be defined in exactly that module.
PICKLED_CLASSES = {
    "models.yolo": ["DetectionModel", "Detect", "Segment", "SegmentationModel", "ClassificationModel", "BaseModel"],
    "models.common": ["Conv", "DWConv", "DWConvTranspose2d", "TransformerLayer", "TransformerBlock", "Bottleneck",
                      "BottleneckCSP", "CrossConv", "C3", "C3x", "C3TR", "C3SPP", "C3Ghost", "SPP", "SPPF", "Focus",
                      "GhostConv", "GhostBottleneck", "Contract", "Expand", "Concat", "Proto", "Classify"],
    "models.experimental": ["MixConv2d", "Ensemble", "Sum"],
}
# Importable names (aliases, functions and re-exported wrappers).
IMPORTABLE = {
    "models.yolo": ["Model", "parse_model"],
    "models.common": ["autopad", "DetectMultiBackend", "AutoShape", "Detections"],
    "models.experimental": ["attempt_load", "CrossConv", "GhostConv", "GhostBottleneck"],
}
# Upstream public Python API and the module each name must be importable from.
PUBLIC_API = {
    "utils.general": ["check_yaml", "check_file", "increment_path", "scale_boxes", "xywh2xyxy", "xyxy2xywh",
                      "xywhn2xyxy", "xyxy2xywhn", "clip_boxes", "make_divisible", "LOGGER", "non_max_suppression"],
    "utils.metrics": ["box_iou", "bbox_iou"],
    "utils.torch_utils": ["select_device", "de_parallel", "ModelEMA", "smart_optimizer"],
}
SIGNATURES = {
    ("models.yolo", "DetectionModel"): ["self", "cfg", "ch", "nc", "anchors"],
    ("models.experimental", "attempt_load"): ["weights", "device", "inplace", "fuse"],
    ("models.yolo", "ClassificationModel"): ["self", "cfg", "model", "nc", "cutoff"],
}


@pytest.mark.parametrize("module_name, class_name",
                         [(m, c) for m, classes in PICKLED_CLASSES.items() for c in classes])
def test_pickled_class_lives_in_its_upstream_module(module_name, class_name):
    cls = getattr(importlib.import_module(module_name), class_name)
    assert inspect.isclass(cls) and cls.__module__ == module_name and cls.__qualname__ == class_name


@pytest.mark.parametrize("module_name, name", [(m, n) for m, names in IMPORTABLE.items() for n in names])
def test_importable_names(module_name, name):
    assert getattr(importlib.import_module(module_name), name) is not None


def test_model_alias_and_method_reference():
    from models.yolo import Detect, DetectionModel, Model, Segment

    assert Model is DetectionModel
    assert Segment.__mro__[1] is Detect and Detect.forward.__qualname__ == "Detect.forward"


@pytest.mark.parametrize("module_name, names", PUBLIC_API.items())
def test_upstream_public_api_names(module_name, names):
    module = importlib.import_module(module_name)
    missing = [n for n in names if not hasattr(module, n)]
    assert not missing, f"{module_name} lacks {missing}"


@pytest.mark.parametrize("key, params", SIGNATURES.items())
def test_public_signatures(key, params):
    target = getattr(importlib.import_module(key[0]), key[1])
    target = target.__init__ if inspect.isclass(target) else target
    assert list(inspect.signature(target).parameters) == params


def _tiny_model():
    from models.yolo import DetectionModel

    cfg = {"nc": 2, "depth_multiple": 1.0, "width_multiple": 1.0, "anchors": [[10, 13, 16, 30, 33, 23]],
           "backbone": [[-1, 1, "Conv", [8, 6, 2, 2]], [-1, 1, "C3", [8]], [-1, 1, "Conv", [16, 3, 2]],
                        [-1, 1, "SPPF", [16, 5]]],
           "head": [[-1, 1, "nn.Upsample", [None, 2, "nearest"]], [[-1, 1], 1, "Concat", [1]],
                    [-1, 1, "Conv", [16, 3, 2]], [[6], 1, "Detect", ["nc", "anchors"]]]}
    return DetectionModel(cfg)


# Instance attributes (children and plain) each class's forward or the loaders read after unpickling.
INSTANCE_ATTRIBUTES = {
    "DetectionModel": ["yaml", "model", "save", "names", "inplace", "stride"],
    "Detect": ["nc", "no", "nl", "na", "grid", "anchor_grid", "anchors", "m", "inplace", "stride"],
    "Conv": ["conv", "bn", "act"],
    "C3": ["cv1", "cv2", "cv3", "m"],
    "Bottleneck": ["cv1", "cv2", "add"],
    "SPPF": ["cv1", "cv2", "m"],
    "Concat": ["d"],
    "Upsample": ["size", "scale_factor", "mode", "recompute_scale_factor"],
}
LAYER_ATTRIBUTES = ["i", "f", "type", "np"]


def test_instance_attribute_names_survive_a_pickle_round_trip(tmp_path):
    model = _tiny_model()
    path = tmp_path / "m.pt"
    torch.save({"model": deepcopy(model).half()}, path)
    from utils.checkpoint import torch_safe_load

    loaded = torch_safe_load(path)["model"]
    seen = set()
    for module in [loaded, *loaded.modules()]:
        expected = INSTANCE_ATTRIBUTES.get(type(module).__name__)
        if expected:
            seen.add(type(module).__name__)
            missing = [a for a in expected if a not in module.__dict__ and a not in module._modules
                       and a not in module._buffers and a not in vars(type(module))]
            assert not missing, f"{type(module).__name__} lacks {missing}"
    assert seen == set(INSTANCE_ATTRIBUTES)
    for layer in loaded.model:
        assert all(a in layer.__dict__ for a in LAYER_ATTRIBUTES)
    assert [layer.type for layer in loaded.model] == [
        "models.common.Conv", "models.common.C3", "models.common.Conv", "models.common.SPPF",
        "torch.nn.modules.upsampling.Upsample", "models.common.Concat", "models.common.Conv", "models.yolo.Detect"]
    head = loaded.model[-1]
    assert isinstance(head.grid, list) and isinstance(head.anchor_grid, list) and head.anchors.shape == (1, 3, 2)
    assert {"stride", "dynamic", "export"} <= set(vars(type(head)))


def test_yaml_built_model_records_yaml_file():
    from models.yolo import DetectionModel

    model = DetectionModel("yolov5n.yaml")
    assert model.yaml_file == "yolov5n.yaml" and model.yaml["ch"] == 3
    assert isinstance(model.model, nn.Sequential) and model.save == [4, 6, 10, 14, 17, 20, 23]
