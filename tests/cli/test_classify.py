"""classify/train.py -> classify/val.py -> classify/predict.py end to end on tiny data (CPU, 32 px), the
classification checkpoint format, torch.hub class probabilities, and an upstream-made checkpoint (fixture)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from utils.checkpoint import torch_safe_load
from utils.data.builtin_cls import generate_shapes_cls_dataset
from utils.data.shapes import SHAPE_NAMES

REPO = Path(__file__).resolve().parents[2]
UPSTREAM = REPO / "tests" / "fixtures" / "upstream_cls"
UPSTREAM_COLUMNS = ["epoch", "train/loss", "val/loss", "metrics/accuracy_top1", "metrics/accuracy_top5", "lr/0"]


@pytest.fixture(scope="module")
def cls_data(tmp_path_factory) -> Path:
    """ImageNet-style folders: 2 train and 1 val image per class of the built-in generator (8 classes)."""
    return generate_shapes_cls_dataset(tmp_path_factory.mktemp("cls") / "data", {"train": 16, "val": 8})


@pytest.fixture(scope="module")
def trained(cls_data, tmp_path_factory) -> Path:
    """One epoch of classify/train.py (yolov5n backbone + Classify, 32 px); returns the run folder."""
    from classify import train

    project = tmp_path_factory.mktemp("runs")
    opt = train.run(model="yolov5n.yaml", data=str(cls_data), epochs=2, imgsz=32, batch_size=8, workers=0,
                    project=str(project), name="exp", device="cpu", verbose=True)
    return Path(opt.save_dir)


def test_training_writes_upstream_outputs(trained):
    assert (trained / "weights" / "best.pt").is_file() and (trained / "weights" / "last.pt").is_file()
    lines = (trained / "results.csv").read_text().splitlines()
    assert [c.strip() for c in lines[0].split(",")] == UPSTREAM_COLUMNS and len(lines) == 3
    values = np.array([[float(v) for v in line.split(",")] for line in lines[1:]])
    assert (values[:, 3:5] >= 0).all() and (values[:, 3:5] <= 1).all() and (values[:, 3] <= values[:, 4]).all()
    assert values[1, 5] < values[0, 5]  # linear LR decay
    for name in ("results.png", "train_images.jpg", "test_images.jpg", "opt.yaml"):
        assert (trained / name).is_file(), name


def test_checkpoint_is_upstream_classification_format(trained):
    ckpt = torch_safe_load(trained / "weights" / "best.pt")
    assert {"epoch", "best_fitness", "model", "ema", "updates", "optimizer", "opt", "date"} <= set(ckpt)
    assert ckpt["ema"] is None and ckpt["optimizer"] is None and isinstance(ckpt["updates"], int)
    model = ckpt["model"]
    assert type(model).__name__ == "ClassificationModel" and type(model.model[-1]).__name__ == "Classify"
    assert all(p.dtype == torch.float16 and not p.requires_grad for p in model.parameters())
    assert model.names == sorted(SHAPE_NAMES) and model.nc == 8
    assert type(model.transforms).__name__ == "Compose" and model.transforms.transforms[0].h == 32
    assert len(model.model) == 11  # yolov5n backbone rows 0-9 (SPPF kept) + Classify
    assert ckpt["opt"]["model"] == "yolov5n.yaml" and ckpt["opt"]["imgsz"] == 32


def _manual_predictions(weights: Path, data: Path, imgsz: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    from models.loading import load_model
    from utils.data.classify_augment import classify_transforms

    model = load_model(weights, fuse=False)
    names = list(model.names.values())
    files = sorted((data / "val").rglob("*.jpg"))
    x = torch.stack([classify_transforms(imgsz)(cv2.imread(str(f))) for f in files])
    with torch.no_grad():
        probs = torch.softmax(model(x), 1).numpy()
    return probs, np.array([names.index(f.parent.name) for f in files]), [str(f) for f in files]


def test_val_reports_top1_top5_of_the_checkpoint(trained, cls_data, log_lines):
    from classify import val

    top1, top5, loss = val.run(weights=trained / "weights" / "best.pt", data=str(cls_data), imgsz=32, batch_size=3,
                               workers=0, project=str(trained.parent), name="val", verbose=True)
    probs, labels, _ = _manual_predictions(trained / "weights" / "best.pt", cls_data, 32)
    ranks = np.argsort(-probs, 1)
    assert top1 == pytest.approx((ranks[:, 0] == labels).mean())
    assert top5 == pytest.approx((ranks[:, :5] == labels[:, None]).any(1).mean())
    assert loss == pytest.approx(-np.log(probs[np.arange(len(labels)), labels]).mean(), rel=1e-4)
    text = "\n".join(log_lines)
    assert "top1_acc" in text and "star" in text  # the per-class table


def test_predict_writes_top5_labels_and_annotated_images(trained, cls_data, tmp_path):
    from classify import predict

    save_dir = predict.run(weights=trained / "weights" / "best.pt", source=cls_data / "val" / "star", imgsz=[32],
                           save_txt=True, save_csv=True, project=str(tmp_path), name="p")
    probs, _, files = _manual_predictions(trained / "weights" / "best.pt", cls_data, 32)
    star = next(i for i, f in enumerate(files) if "/star/" in f)
    stem = Path(files[star]).stem
    lines = (save_dir / "labels" / f"{stem}.txt").read_text().splitlines()
    names = sorted(SHAPE_NAMES)
    expected = [f"{probs[star][j]:.2f} {names[j]}" for j in np.argsort(-probs[star])[:5]]
    assert lines == expected
    assert (save_dir / f"{stem}.jpg").is_file()
    row = (save_dir / "predictions.csv").read_text().splitlines()[1]
    assert row.startswith(f"{stem}.jpg,{names[np.argmax(probs[star])]},")


def test_hub_custom_returns_class_probabilities(trained, cls_data, hubconf):
    model = hubconf.custom(path=trained / "weights" / "best.pt", _verbose=False)
    probs, _, files = _manual_predictions(trained / "weights" / "best.pt", cls_data, 32)
    results = model(files)
    assert results.probs.shape == (8, 8) and torch.allclose(results.probs.sum(1), torch.ones(8))
    assert np.allclose(results.probs.numpy(), probs, atol=2e-5)
    assert results.pandas()[0]["confidence"].is_monotonic_decreasing and len(results.top5(0)) == 5
    tensor_probs = model(torch.zeros(2, 3, 32, 32))
    assert tensor_probs.shape == (2, 8)


def test_upstream_checkpoint_loads_safely_and_validates_like_upstream(tmp_path):
    from classify import val

    reference = json.loads((UPSTREAM / "upstream_val.json").read_text())
    ckpt = torch_safe_load(UPSTREAM / "yolov5-tiny-cls.pt")
    assert ckpt["ema"] is None and ckpt["optimizer"] is None and type(ckpt["model"]).__name__ == "ClassificationModel"
    data = tmp_path / "data"
    shutil.copytree(UPSTREAM / "val", data / "val")  # the image check's cache is written beside the split
    top1, top5, _ = val.run(weights=UPSTREAM / "yolov5-tiny-cls.pt", data=str(data), imgsz=reference["imgsz"],
                            batch_size=8, workers=0, project=str(tmp_path), name="upstream-fixture")
    assert (round(top1, 3), round(top5, 3)) == (reference["top1"], reference["top5"])
    probs, _, files = _manual_predictions(UPSTREAM / "yolov5-tiny-cls.pt", data, reference["imgsz"])
    upstream = np.array([reference["probs"][str(Path(f).relative_to(data))] for f in files])
    assert np.abs(probs - upstream).max() < 1e-5


def test_predict_reads_videos_through_the_detection_sources(trained, tmp_path):
    from classify import predict

    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5, (80, 60))
    for i in range(3):
        writer.write(np.full((60, 80, 3), 60 * i, np.uint8))
    writer.release()
    save_dir = predict.run(weights=trained / "weights" / "best.pt", source=video, imgsz=[32], save_txt=True,
                           project=str(tmp_path), name="v")
    assert (save_dir / "clip.mp4").is_file()
    labels = sorted(p.name for p in (save_dir / "labels").iterdir())
    assert labels == ["clip_1.txt", "clip_2.txt", "clip_3.txt"]
    assert len((save_dir / "labels" / "clip_1.txt").read_text().splitlines()) == 5


def test_exported_onnx_validates_and_predicts_like_the_checkpoint(trained, cls_data, tmp_path):
    import shutil as sh

    import export
    from classify import val

    weights = tmp_path / "best.pt"
    sh.copy(trained / "weights" / "best.pt", weights)
    export.run(weights=weights, include=("onnx",), imgsz=(32, 32))
    pt = val.run(weights=weights, data=str(cls_data), imgsz=32, workers=0, project=str(tmp_path), name="pt")
    onnx = val.run(weights=tmp_path / "best.onnx", data=str(cls_data), imgsz=32, workers=0, project=str(tmp_path),
                   name="onnx")
    assert onnx[:2] == pt[:2] and onnx[2] == pytest.approx(pt[2], rel=1e-4)
