"""A classification checkpoint's backbone goes into the matching detector: every backbone tensor (N/N), values
equal, for the CSP (yolov5n/s), Darknet (YOLOv1 paper, YOLOv3 Darknet-53) and ConvNeXt backbones."""

from __future__ import annotations

from copy import deepcopy

import pytest
import torch

from extensions.transfer import backbone_length, load_backbone_weights
from models.yolo import ClassificationModel, DetectionModel
from utils.checkpoint import save_checkpoint
from utils.files import check_yaml, yaml_load

SMALL = {  # shrink the big Darknets so the test stays fast; names and layout are unchanged
    "yolov1.yaml": {"width_multiple": 0.0625, "head": [[-1, 1, "YOLOv1Head", [3, {"variant": "fc", "hidden": 32}]]]},
    "yolov3-legacy.yaml": {"width_multiple": 0.0625},
}


def _yaml(name: str) -> dict:
    d = yaml_load(check_yaml(name))
    d.update(deepcopy(SMALL.get(name, {})))
    return d


def _classifier_checkpoint(model: ClassificationModel, path) -> None:
    save_checkpoint({"epoch": 0, "best_fitness": 0.5, "model": deepcopy(model).half(), "ema": None, "updates": 1,
                     "optimizer": None, "opt": {}, "date": ""}, path)


@pytest.mark.parametrize("cfg", ["yolov5n.yaml", "yolov5s.yaml", "yolov1.yaml", "yolov3-legacy.yaml",
                                 "convnext_yolov5n.yaml"])
def test_classifier_backbone_transfers_completely(cfg, tmp_path, log_lines):
    torch.manual_seed(0)
    classifier = ClassificationModel(_yaml(cfg), nc=5)
    with torch.no_grad():  # make the classifier's tensors distinguishable from any initialisation
        for p in classifier.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    _classifier_checkpoint(classifier, tmp_path / "best.pt")
    detector = DetectionModel(_yaml(cfg), nc=2)
    report = load_backbone_weights(tmp_path / "best.pt", detector)
    assert report.total > 0 and report.num_transferred == report.total, report.skipped
    assert f"Transferred {report.total}/{report.total} backbone tensors" in "\n".join(log_lines)
    source = classifier.state_dict()
    for key in report.transferred:
        assert torch.equal(detector.state_dict()[key], source[key].half().float()), key
    rows = backbone_length(detector)
    assert {k.split(".")[1] for k in report.transferred} == {str(i) for i in range(rows)} - _parameterless(detector)


def _parameterless(model) -> set[str]:
    return {str(i) for i, m in enumerate(model.model) if not any(True for _ in m.state_dict())}


def test_upstream_style_classifier_transfers_all_but_the_replaced_layer(tmp_path):
    detector_source = DetectionModel("yolov5n.yaml", nc=3)
    classifier = ClassificationModel(model=detector_source, nc=4)  # upstream: layers 0-8 kept, 9 -> Classify
    _classifier_checkpoint(classifier, tmp_path / "cls.pt")
    report = load_backbone_weights(tmp_path / "cls.pt", DetectionModel("yolov5n.yaml", nc=2))
    assert report.skipped and all(key.startswith("model.9.") for key in report.skipped)
    assert report.num_transferred == report.total - len(report.skipped)
