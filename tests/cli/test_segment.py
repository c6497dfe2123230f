"""End-to-end segmentation on the built-in shapes-seg generator (64 px, 8 train / 4 val images, CPU):
segment/train.py -> segment/val.py -> segment/predict.py -> export.py (TorchScript, ONNX) -> DetectMultiBackend and
torch.hub, plus the scripts' refusals (missing weights, --evolve, --quad)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import export
from models.backends import DetectMultiBackend
from models.yolo import SegmentationModel
from segment import predict as seg_predict
from segment import train as seg_train
from segment import val as seg_val
from utils.checkpoint import torch_safe_load
from utils.data.builtin import generate_shapes_dataset
from utils.data.shapes import SHAPE_NAMES
from utils.plotting.results import read_csv_table
from utils.segment.metrics import KEYS

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def seg_data(tmp_path_factory) -> str:
    base = tmp_path_factory.mktemp("segdata")
    root = generate_shapes_dataset(base / "tiny-seg", {"train": 8, "val": 4}, "shapes-seg")
    file = base / "tiny-seg.yaml"
    file.write_text(yaml.safe_dump({"path": str(root), "train": "images/train", "val": "images/val",
                                    "names": dict(enumerate(SHAPE_NAMES))}))
    return str(file)


@pytest.fixture(scope="module")
def seg_run(seg_data, tmp_path_factory) -> Path:
    """One epoch of segment/train.py through the real command line (plots, AutoAnchor, final validation)."""
    project = tmp_path_factory.mktemp("runs")
    cmd = [sys.executable, "segment/train.py", "--data", seg_data, "--epochs", "1", "--imgsz", "64", "--batch-size",
           "4", "--workers", "0", "--device", "cpu", "--project", str(project), "--name", "exp"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return project / "exp"


def test_train_writes_upstreams_segmentation_outputs(seg_run):
    header, values = read_csv_table(seg_run / "results.csv")
    assert header == ["epoch", *KEYS] and values.shape == (1, 20)
    assert np.isfinite(values).all() and values[0, 2] > 0  # train/seg_loss
    for name in ("results.png", "train_batch0.jpg", "val_batch0_labels.jpg", "val_batch0_pred.jpg",
                 "MaskPR_curve.png", "BoxPR_curve.png", "labels.jpg", "confusion_matrix.png", "opt.yaml"):
        assert (seg_run / name).is_file(), name
    ckpt = torch_safe_load(seg_run / "weights" / "best.pt")
    assert type(ckpt["model"]) is SegmentationModel and ckpt["optimizer"] is None  # stripped
    assert ckpt["model"].names == dict(enumerate(SHAPE_NAMES)) and ckpt["model"].model[-1].nm == 32
    opt = yaml.safe_load((seg_run / "opt.yaml").read_text())
    assert (opt["mask_ratio"], opt["no_overlap"]) == (4, False) and list(opt)[-3:] == ["mask_ratio", "no_overlap",
                                                                                        "save_dir"]


def test_val_returns_box_and_mask_metrics_and_rle_json(seg_run, seg_data, tmp_path):
    results, maps, speeds = seg_val.run(data=seg_data, weights=str(seg_run / "weights" / "best.pt"), imgsz=64,
                                        batch_size=4, workers=0, project=tmp_path, name="v", save_json=True,
                                        save_txt=True)
    assert len(results) == 12 and maps.shape == (8,) and len(speeds) == 3
    assert all(0.0 <= x <= 1.0 for x in results[:8])
    predictions = json.loads((tmp_path / "v" / "best_predictions.json").read_text())
    assert predictions and {"image_id", "category_id", "bbox", "score", "segmentation"} <= set(predictions[0])
    from pycocotools import mask as mask_utils

    rle = predictions[0]["segmentation"]
    image = next((Path(seg_data).parent / "tiny-seg" / "images" / "val").glob(f"{predictions[0]['image_id']}.jpg"))
    import cv2

    assert list(rle["size"]) == list(cv2.imread(str(image)).shape[:2])
    assert mask_utils.decode(rle).shape == tuple(rle["size"])


def test_predict_saves_masks_and_polygon_labels(seg_run, seg_data, tmp_path):
    source = Path(seg_data).parent / "tiny-seg" / "images" / "val"
    save_dir = seg_predict.run(weights=seg_run / "weights" / "best.pt", source=source, imgsz=(64, 64),
                               conf_thres=0.001, max_det=3, save_txt=True, save_conf=True, project=tmp_path,
                               name="p", retina_masks=True)
    assert len(list(save_dir.glob("*.jpg"))) == 4 and len(list((save_dir / "labels").glob("*.txt"))) == 4
    lines = [line.split() for f in (save_dir / "labels").glob("*.txt") for line in f.read_text().splitlines()]
    assert all(len(v) >= 8 and len(v) % 2 == 0 for v in lines)  # cls, >= 3 points, conf (a 1-epoch model's
    points = np.array([float(x) for v in lines for x in v[1:-1]])  # masks may be empty: then no line)
    assert ((points >= 0) & (points <= 1)).all()


def test_frame_result_draws_masks_and_writes_polygon_lines(tmp_path):
    from engine.predict_writers import BoxStyle, FrameResult, LabelWriter

    im0 = np.zeros((40, 50, 3), dtype=np.uint8)
    masks = torch.zeros(1, 40, 50, dtype=torch.bool)
    masks[0, 10:30, 5:25] = True
    det = torch.tensor([[5.0, 10, 25, 30, 0.9, 1]])
    result = FrameResult(path=str(tmp_path / "a.jpg"), im0=im0, det=det, names={1: "b"}, masks=masks)
    assert len(result.segments) == 1  # contour of pixels x 5..24, y 10..29, normalised by 50 x 40
    assert np.allclose(result.segments[0], [[0.1, 0.25], [0.1, 0.725], [0.48, 0.725], [0.48, 0.25]])
    drawn = result.annotated(BoxStyle(line_thickness=1, hide_labels=True))
    assert drawn[20, 15].any() and not drawn[35, 45].any() and not im0.any()  # mask coloured inside only
    (tmp_path / "labels").mkdir()
    LabelWriter(tmp_path, save_conf=True).write(result)
    assert (tmp_path / "labels" / "a.txt").read_text() == "1 0.1 0.25 0.1 0.725 0.48 0.725 0.48 0.25 0.9\n"


def test_export_runs_back_through_detect_multibackend_and_hub(seg_run, seg_data):
    best = seg_run / "weights" / "best.pt"
    files = export.run(weights=best, imgsz=(64, 64), include=("torchscript", "onnx"))
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    reference = DetectMultiBackend(best, fp32=True)
    assert reference.task == "segment"
    pred, proto = reference(x)[:2]
    for f in files:
        backend = DetectMultiBackend(f)
        assert backend.task == "segment" and backend.names == reference.names
        out = backend(x)
        assert len(out) == 2 and out[0].shape == pred.shape and out[1].shape == proto.shape == (1, 32, 16, 16)
        assert (out[0] - pred).abs().max() < 1e-2 and (out[1] - proto).abs().max() < 1e-3
    image = np.ascontiguousarray(np.random.default_rng(0).integers(0, 255, (80, 96, 3), dtype=np.uint8))
    for path in (best, Path(files[1])):
        model = torch.hub.load(str(ROOT), "custom", path=str(path), source="local", _verbose=False)
        model.conf, model.max_det = 0.0, 4
        batch = [image, image] if path.suffix == ".pt" else [image]  # the ONNX export has a fixed batch of 1
        results = model(batch, size=64)
        assert results.masks is not None and len(results.masks) == len(batch)
        assert results.masks[0].shape == (len(results.pred[0]), 80, 96) and results.masks[0].dtype == torch.bool
        assert results.render()[0].shape == (80, 96, 3)


def test_missing_weights_fail_at_once_saying_where(tmp_path):
    for script in ("segment/predict.py", "segment/val.py"):
        done = subprocess.run([sys.executable, script, "--weights", str(tmp_path / "yolov5s-seg.pt"), "--imgsz",
                               "64"], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert done.returncode == 1 and "Nothing is downloaded" in done.stdout + done.stderr, script
    assert not (tmp_path / "yolov5s-seg.pt").exists()


def test_train_refuses_evolve_and_quad_and_reports_missing_weights(seg_data, tmp_path):
    from engine.train_options import TrainError

    for bad in ({"evolve": 3}, {"quad": True}):
        with pytest.raises(TrainError, match="not supported"):
            seg_train.run(data=seg_data, epochs=1, imgsz=64, workers=0, project=str(tmp_path), **bad)
    with pytest.raises(FileNotFoundError, match="Nothing is downloaded"):
        seg_train.run(data=seg_data, weights="yolov5s-seg.pt", project=str(tmp_path))
    opt = seg_train.build_parser().parse_args([])
    assert (opt.mask_ratio, opt.no_overlap, Path(opt.project).name, Path(opt.data).name) == (
        4, False, "train-seg", "shapes-seg.yaml")


def test_predict_options_mirror_segment_predict_run():
    import dataclasses
    import inspect

    from engine.segment_options import SegPredictOptions

    params = inspect.signature(seg_predict.run.__wrapped__).parameters
    fields = {f.name: f.default for f in dataclasses.fields(SegPredictOptions)}
    assert set(params) <= set(fields) and all(fields[k] == p.default for k, p in params.items())
