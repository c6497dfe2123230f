"""Classification training setup and loop (engine/classify_setup.py, classify_trainer.py): --model resolution,
presets, errors, and short runs from a detection checkpoint and a torchvision model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine.classify_setup import (
    ClassifyError,
    ClassifyOptions,
    apply_dataset_defaults,
    build_classifier,
    parse_pretrained,
)
from models.common import Classify
from models.yolo import ClassificationModel, DetectionModel
from utils.checkpoint import make_checkpoint, save_checkpoint, torch_safe_load
from utils.data.builtin_cls import generate_shapes_cls_dataset


@pytest.fixture(scope="module")
def cls_data(tmp_path_factory) -> Path:
    return generate_shapes_cls_dataset(tmp_path_factory.mktemp("cls") / "data", {"train": 16, "val": 8})


def test_pretrained_flag_values():
    assert parse_pretrained("False") is False and parse_pretrained("true") is True and parse_pretrained(True)
    assert parse_pretrained("weights/resnet18.pth") == "weights/resnet18.pth"


def test_dataset_defaults_and_builtin_preset():
    opt = apply_dataset_defaults(ClassifyOptions(), builtin=False)
    assert (opt.imgsz, opt.epochs, opt.batch_size) == (224, 10, 64)
    opt = apply_dataset_defaults(ClassifyOptions(imgsz=96), builtin=True)
    assert (opt.imgsz, opt.epochs, opt.batch_size) == (96, 20, 32)


def test_model_from_yaml_detection_checkpoint_and_torchvision(tmp_path):
    assert isinstance(build_classifier(ClassifyOptions(model="yolov5n.yaml", dropout=0.2), 3).model[-1], Classify)
    detector = DetectionModel("yolov5n.yaml", nc=2)
    save_checkpoint(make_checkpoint(detector), tmp_path / "det.pt")
    cut = build_classifier(ClassifyOptions(model=str(tmp_path / "det.pt")), 4)
    assert isinstance(cut, ClassificationModel) and len(cut.model) == 10 and cut.model[9].linear.out_features == 4
    assert torch.equal(cut.model[0].conv.weight, detector.model[0].conv.weight.half().float())
    assert all(p.requires_grad for p in cut.parameters())
    fresh = build_classifier(ClassifyOptions(model=str(tmp_path / "det.pt"), pretrained=False), 4)
    assert not torch.equal(fresh.model[0].conv.weight, cut.model[0].conv.weight)
    resnet = build_classifier(ClassifyOptions(model="resnet18", pretrained=False), 6)
    assert resnet.fc.out_features == 6


def test_model_errors_are_clear(tmp_path):
    with pytest.raises(ClassifyError, match="file not found. Nothing is downloaded"):
        build_classifier(ClassifyOptions(model=str(tmp_path / "yolov5s-cls.pt")), 3)
    with pytest.raises(ClassifyError, match="not a .yaml, a .pt file or a torchvision model name"):
        build_classifier(ClassifyOptions(model="no_such_net"), 3)
    with pytest.raises(ClassifyError, match="--pretrained .*file not found"):
        build_classifier(ClassifyOptions(model="resnet18", pretrained=str(tmp_path / "none.pth")), 3)


def test_bad_options_fail_before_any_folder(tmp_path):
    from classify import train

    with pytest.raises(ClassifyError, match="--batch-size 0 must be a positive"):
        train.run(batch_size=0, project=str(tmp_path))
    with pytest.raises(TypeError, match="unknown classification option"):
        train.run(batch=4)
    assert not list(tmp_path.iterdir())


def test_torchvision_model_trains_saves_and_validates(cls_data, tmp_path):
    from classify import train, val

    opt = train.run(model="resnet18", pretrained=False, data=str(cls_data), epochs=1, imgsz=32, batch_size=8,
                    workers=0, project=str(tmp_path), name="tv", noplots=True)
    best = Path(opt.save_dir) / "weights" / "best.pt"
    model = torch_safe_load(best)["model"]
    assert type(model).__name__ == "ResNet" and model.fc.out_features == 8 and len(model.names) == 8
    top1, top5, loss = val.run(weights=best, data=str(cls_data), imgsz=32, workers=0, project=str(tmp_path))
    assert 0 <= top1 <= top5 <= 1 and loss > 0


def test_dropout_and_cutoff_reach_the_model(cls_data, tmp_path):
    from classify import train

    opt = train.run(model="yolov5n.yaml", cutoff=6, dropout=0.3, data=str(cls_data), epochs=1, imgsz=32,
                    batch_size=8, workers=0, project=str(tmp_path), name="cut", noplots=True)
    model = torch_safe_load(Path(opt.save_dir) / "weights" / "last.pt")["model"]
    assert len(model.model) == 7 and model.model[6].drop.p == 0.3 and model.yaml["cutoff"] == 6
