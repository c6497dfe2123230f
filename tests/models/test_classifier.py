"""Classifiers from detection YAMLs (models/classifier.py, ClassificationModel): kept rows, head choice, names
shared with the detector, torchvision output resizing and dropout."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from models.classifier import (
    ClassifyTaps,
    backbone_sinks,
    classifier_yaml,
    reshape_classifier_output,
    set_dropout,
)
from models.common import Classify
from models.yolo import ClassificationModel, DetectionModel
from utils.files import check_yaml, yaml_load


def test_backbone_sinks_of_sequential_and_branching_rows():
    assert backbone_sinks([[-1, 1, "Conv", []]] * 4) == [3]
    rows = [[-1, 1, "T", []], [0, 1, "I", [0]], [-1, 1, "Conv", []], [0, 1, "I", [1]], [-1, 1, "Conv", []]]
    assert backbone_sinks(rows) == [2, 4]


def test_classifier_yaml_keeps_cutoff_rows_and_chooses_the_head():
    d = yaml_load(check_yaml("yolov5s.yaml"))
    out = classifier_yaml(d, nc=5)
    assert out["backbone"] == d["backbone"] and out["head"] == [[-1, 1, "Classify", [5]]] and out["cutoff"] == 10
    assert classifier_yaml(d, nc=5, cutoff=6)["backbone"] == d["backbone"][:6]
    convnext = classifier_yaml(yaml_load(check_yaml("convnext_yolov5n.yaml")), nc=3)
    assert convnext["head"] == [[[2, 4, 7], 1, "ClassifyTaps", [3]]]
    with pytest.raises(ValueError, match="--cutoff 0 must be between 1 and"):
        classifier_yaml(d, nc=5, cutoff=0)
    assert d["head"][-1][2] == "Detect"  # the input dict is not modified


def test_yolov5s_classifier_has_the_detector_backbone_names_and_shapes():
    classifier = ClassificationModel("yolov5s.yaml", nc=7)
    detector = DetectionModel("yolov5s.yaml", nc=2)
    backbone = {k: v.shape for k, v in detector.state_dict().items() if int(k.split(".")[1]) < 10}
    mine = classifier.state_dict()
    assert all(mine[k].shape == shape for k, shape in backbone.items())
    assert isinstance(classifier.model[10], Classify) and classifier.model[10].linear.out_features == 7
    assert classifier(torch.zeros(2, 3, 64, 64)).shape == (2, 7)
    assert float(classifier.stride.max()) == 32.0 and classifier.names == [str(i) for i in range(7)]


def test_convnext_classifier_trains_every_backbone_tensor():
    classifier = ClassificationModel("convnext_yolov5n.yaml", nc=4)
    head = classifier.model[-1]
    assert isinstance(head, ClassifyTaps) and len(head.convs) == 3
    classifier(torch.randn(2, 3, 64, 64)).sum().backward()
    untouched = [n for n, p in classifier.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert not untouched


def test_upstream_cut_of_a_detection_model_is_unchanged():
    classifier = ClassificationModel(model=DetectionModel("yolov5n.yaml"), nc=3)
    assert len(classifier.model) == 10 and isinstance(classifier.model[9], Classify)
    assert classifier.model[9].conv.conv.in_channels == 256


def test_model_needs_cfg_or_model():
    with pytest.raises(ValueError, match="needs a detection YAML"):
        ClassificationModel()


def test_reshape_classifier_output_for_our_and_torchvision_heads():
    import torchvision

    classifier = ClassificationModel("yolov5n.yaml", nc=3)
    reshape_classifier_output(classifier, 9)
    assert classifier.eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 9)
    resnet = torchvision.models.resnet18()
    reshape_classifier_output(resnet, 4)
    assert resnet.fc.out_features == 4
    mobile = torchvision.models.mobilenet_v3_small()
    reshape_classifier_output(mobile, 5)
    assert mobile.eval()(torch.zeros(1, 3, 64, 64)).shape == (1, 5)
    with pytest.raises(TypeError, match="no fc, head or classifier"):
        reshape_classifier_output(nn.Sequential(nn.ReLU()), 3)


def test_set_dropout_changes_every_dropout_layer():
    model = nn.Sequential(nn.Dropout(0.1), nn.Linear(2, 2), nn.Dropout(0.0))
    assert set_dropout(model, 0.3) == 2 and all(m.p == 0.3 for m in model if isinstance(m, nn.Dropout))
