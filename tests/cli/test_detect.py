"""detect.py end to end on tiny images and a generated video (calibrated random yolov5n, CPU)."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import detect
from models.backends import DetectMultiBackend
from tests.inference_support import NAMES, calibrated_yolov5n, draw_scene, write_checkpoint, write_video
from utils.boxes import scale_boxes, xywh2xyxy
from utils.data.sources import LoadImages
from utils.nms import non_max_suppression

IMGSZ = 64
COMMON = dict(imgsz=IMGSZ, conf_thres=0.3, max_det=8, device="cpu")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("weights") / "tiny.pt", calibrated_yolov5n())


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    cv2.imwrite(str(folder / "wide.png"), draw_scene(48, 80))
    cv2.imwrite(str(folder / "tall.jpg"), draw_scene(80, 56, shift=4))
    return folder


def expected_detections(weights: Path, source: Path) -> dict[str, torch.Tensor]:
    """Detections per image computed directly (model + NMS + rounding to original pixels), keyed by file name."""
    model = DetectMultiBackend(weights)
    out = {}
    with torch.inference_mode():
        for path, im, im0, _, _ in LoadImages(source, img_size=IMGSZ, stride=model.stride, auto=model.pt):
            x = torch.from_numpy(im).float()[None] / 255
            det = non_max_suppression(model(x), COMMON["conf_thres"], 0.45, max_det=COMMON["max_det"])[0]
            det[:, :4] = scale_boxes(x.shape[2:], det[:, :4], im0.shape).round()
            out[Path(path).name] = det
    return out


def parse_labels(file: Path, width: int, height: int) -> torch.Tensor:
    """Read ``cls x y w h conf`` lines back to (n, 6) ``[x1, y1, x2, y2, conf, cls]`` pixel rows."""
    rows = torch.tensor([[float(v) for v in line.split()] for line in file.read_text().splitlines()])
    boxes = xywh2xyxy(rows[:, 1:5]) * torch.tensor([width, height, width, height])
    return torch.cat((boxes, rows[:, 5:6], rows[:, 0:1]), 1)


def test_image_folder_outputs_and_labels_parse_back(checkpoint, image_dir, tmp_path):
    save_dir = detect.run(weights=checkpoint, source=image_dir, project=tmp_path, name="exp", save_txt=True,
                          save_conf=True, save_csv=True, save_crop=True, **COMMON)
    assert save_dir == tmp_path / "exp"
    expected = expected_detections(checkpoint, image_dir)
    assert sum(len(d) for d in expected.values()) > 0
    for name, det in expected.items():
        im0 = cv2.imread(str(image_dir / name))
        assert cv2.imread(str(save_dir / name)).shape == im0.shape
        label_file = save_dir / "labels" / f"{Path(name).stem}.txt"
        assert label_file.exists() == (len(det) > 0)
        if len(det):
            parsed = parse_labels(label_file, im0.shape[1], im0.shape[0])
            order = torch.arange(len(det) - 1, -1, -1)  # labels are written in reverse-confidence order
            torch.testing.assert_close(parsed[:, :4], det[order, :4], atol=2e-3, rtol=0)
            torch.testing.assert_close(parsed[:, 4:], det[order, 4:], atol=1e-5, rtol=0)
    with open(save_dir / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["Image Name", "Prediction", "Confidence"]
    assert len(rows) == sum(len(d) for d in expected.values())
    assert {r["Prediction"] for r in rows} <= set(NAMES.values())
    crops = list((save_dir / "crops").rglob("*.jpg"))
    assert len(crops) == len(rows) and {c.parent.name for c in crops} == {r["Prediction"] for r in rows}
    second = detect.run(weights=checkpoint, source=image_dir, project=tmp_path, name="exp", nosave=True, **COMMON)
    assert second == tmp_path / "exp2" and not list(second.glob("*.png")) and not list(second.glob("*.jpg"))


def test_video_in_mp4_out_with_frame_labels(checkpoint, tmp_path):
    video = write_video(tmp_path / "clip.mp4", frames=6)
    save_dir = detect.run(weights=checkpoint, source=video, project=tmp_path, name="vid", save_txt=True,
                          vid_stride=2, **COMMON)
    cap = cv2.VideoCapture(str(save_dir / "clip.mp4"))
    assert cap.isOpened() and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    assert (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))) == (80, 64)
    labels = sorted(p.name for p in (save_dir / "labels").glob("*.txt"))
    assert labels and set(labels) <= {"clip_1.txt", "clip_2.txt", "clip_3.txt"}
    assert not list(save_dir.glob(".*partial*"))


def test_txt_list_source_saves_labels_not_images(checkpoint, image_dir, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text(f"{image_dir / 'wide.png'}\n")
    save_dir = detect.run(weights=checkpoint, source=listing, project=tmp_path, name="txt", save_txt=True,
                          **COMMON)
    assert not (save_dir / "wide.png").exists() and (save_dir / "labels").is_dir()


def test_view_img_is_headless_safe_and_hidden_labels(checkpoint, image_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    shown = detect.run(weights=checkpoint, source=image_dir / "wide.png", project=tmp_path, name="a", view_img=True,
                       **COMMON)
    hidden = detect.run(weights=checkpoint, source=image_dir / "wide.png", project=tmp_path, name="b",
                        hide_labels=True, line_thickness=1, **COMMON)
    original = cv2.imread(str(image_dir / "wide.png"))
    labelled, plain = cv2.imread(str(shown / "wide.png")), cv2.imread(str(hidden / "wide.png"))
    assert not np.array_equal(labelled, original) and not np.array_equal(labelled, plain)


def test_missing_weights_and_corrupt_images_give_clear_errors(checkpoint, image_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        detect.run(weights=tmp_path / "missing.pt", source=image_dir, project=tmp_path, **COMMON)
    corrupt = tmp_path / "broken.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(ValueError, match="broken.jpg"):
        detect.run(weights=checkpoint, source=corrupt, project=tmp_path, **COMMON)
    with pytest.raises(ValueError, match="not allowed"):
        detect.run(weights=checkpoint, source="https://example.com/a.jpg", project=tmp_path, **COMMON)
    with pytest.raises(SystemExit) as info:
        detect.main(detect.parse_opt(["--weights", str(tmp_path / "missing.pt"), "--source", str(image_dir),
                                      "--project", str(tmp_path / "cli")]))
    assert info.value.code == 1
    assert not (tmp_path / "cli").exists()  # a failed start leaves no empty run folder


def test_parse_opt_defaults_match_upstream():
    opt = detect.parse_opt([])
    assert opt.imgsz == [640, 640] and opt.conf_thres == 0.25 and opt.iou_thres == 0.45 and opt.max_det == 1000
    assert opt.line_thickness == 3 and opt.vid_stride == 1 and opt.save_format == 0 and not opt.visualize
    assert detect.parse_opt(["--img", "320", "256"]).imgsz == [320, 256]
    assert set(vars(opt)) == set(detect.run.__wrapped__.__code__.co_varnames[:detect.run.__wrapped__.__code__
                                                                              .co_argcount])


@pytest.mark.slow
def test_visualize_writes_feature_maps(checkpoint, image_dir, tmp_path):
    save_dir = detect.run(weights=checkpoint, source=image_dir / "wide.png", project=tmp_path, visualize=True,
                          nosave=True, **COMMON)
    maps = sorted((save_dir / "wide").glob("stage*_features.png"))
    assert (save_dir / "wide" / "stage0_Conv_features.png") in maps and len(maps) >= 20


def test_predict_options_mirror_run_arguments_and_defaults():
    import dataclasses
    import inspect

    from engine.predictor import PredictOptions

    params = inspect.signature(detect.run.__wrapped__).parameters
    fields = {f.name: f.default for f in dataclasses.fields(PredictOptions)}
    assert list(fields) == list(params)
    assert fields == {name: p.default for name, p in params.items()}
