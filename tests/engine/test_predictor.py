"""The shared prediction loop: custom writers, results in original-image pixels, every source kind, early stop."""

from __future__ import annotations

from contextlib import closing
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from engine.predict_writers import FrameResult, LabelWriter
from engine.predictor import PredictOptions, Predictor
from models.backends import DetectMultiBackend
from tests.inference_support import NAMES, calibrated_yolov5n, draw_scene, write_checkpoint, write_video
from utils.boxes import scale_boxes
from utils.nms import non_max_suppression

OPTIONS = PredictOptions(imgsz=64, conf_thres=0.3, max_det=8)


class RecordingWriter:
    """What a tracker plugs in: sees every result in order, is closed exactly once."""

    def __init__(self) -> None:
        self.results: list[FrameResult] = []
        self.closed = 0

    def write(self, result: FrameResult) -> None:
        assert not self.closed
        self.results.append(result)

    def close(self) -> None:
        self.closed += 1


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> DetectMultiBackend:
    return DetectMultiBackend(write_checkpoint(tmp_path_factory.mktemp("weights") / "tiny.pt", calibrated_yolov5n()))


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    cv2.imwrite(str(folder / "a_wide.png"), draw_scene(48, 96))
    cv2.imwrite(str(folder / "b_tall.png"), draw_scene(120, 56, shift=4))
    return folder


def direct_detections(model: DetectMultiBackend, file: Path) -> torch.Tensor:
    """Letterbox by hand (64 px long side, stride padding), run model + NMS, map boxes back: the reference."""
    im0 = cv2.imread(str(file))
    h0, w0 = im0.shape[:2]
    r = 64 / max(h0, w0)
    h, w = round(h0 * r), round(w0 * r)
    ph, pw = (-h) % 32, (-w) % 32
    im = cv2.resize(im0, (w, h), interpolation=cv2.INTER_LINEAR)
    im = cv2.copyMakeBorder(im, ph // 2, ph - ph // 2, pw // 2, pw - pw // 2, cv2.BORDER_CONSTANT, value=(114,) * 3)
    x = torch.from_numpy(im[..., ::-1].transpose(2, 0, 1).copy()).float()[None] / 255
    with torch.inference_mode():
        det = non_max_suppression(model(x), OPTIONS.conf_thres, OPTIONS.iou_thres, max_det=OPTIONS.max_det)[0]
        det[:, :4] = scale_boxes(x.shape[2:], det[:, :4], im0.shape).round()
    return det


def test_custom_writer_gets_every_frame_with_boxes_in_original_pixels(model, image_dir):
    writer = RecordingWriter()
    predictor = Predictor(model, OPTIONS, writers=[writer])
    yielded = list(predictor.stream(image_dir))
    assert writer.closed == 1 and writer.results == yielded and predictor.seen == 2
    assert [Path(r.path).name for r in yielded] == ["a_wide.png", "b_tall.png"]
    for result in yielded:
        h0, w0 = result.im0.shape[:2]
        assert result.input_shape != (h0, w0) and result.names == NAMES and result.mode == "image"
        det = result.det
        assert len(det) > 0 and det.shape[1] == 6 and torch.equal(det[:, :4], det[:, :4].round())
        assert float(det[:, :4].min()) >= 0 and float(det[:, [0, 2]].max()) <= w0 and float(det[:, [1, 3]].max()) <= h0
        torch.testing.assert_close(det, direct_detections(model, Path(result.path)), atol=1e-4, rtol=0)


def test_list_glob_and_video_sources_and_stems(model, image_dir, tmp_path):
    files = [image_dir / "b_tall.png", image_dir / "a_wide.png"]
    predictor = Predictor(model, OPTIONS)
    assert [Path(r.path).name for r in predictor.stream(files)] == ["a_wide.png", "b_tall.png"]
    assert [Path(r.path).name for r in predictor.stream(str(image_dir / "b_*.png"))] == ["b_tall.png"]
    video = write_video(tmp_path / "clip.mp4", frames=4)
    frames = list(Predictor(model, PredictOptions(imgsz=64, vid_stride=2)).stream(video))
    assert [(r.mode, r.frame, r.stem) for r in frames] == [("video", 1, "clip_1"), ("video", 2, "clip_2")]
    assert all(r.im0.shape == (64, 80, 3) for r in frames)


def test_stopping_early_closes_the_writers(model, image_dir):
    writer = RecordingWriter()
    with closing(Predictor(model, OPTIONS, writers=[writer]).stream(image_dir)) as results:
        first = next(results)
        assert writer.results == [first] and not writer.closed
    assert writer.closed == 1


def test_label_writer_normalises_and_appends(tmp_path):
    det = torch.tensor([[10.0, 20.0, 30.0, 60.0, 0.9, 2.0], [0.0, 0.0, 50.0, 40.0, 0.5, 0.0]])
    result = FrameResult(path="x/scene.jpg", im0=np.zeros((40, 100, 3), np.uint8), det=det, names=NAMES)
    (tmp_path / "labels").mkdir()
    LabelWriter(tmp_path, save_conf=True).write(result)
    LabelWriter(tmp_path, save_conf=False, save_format=1).write(result)
    assert (tmp_path / "labels" / "scene.txt").read_text().splitlines() == [
        "0 0.25 0.5 0.5 1 0.5", "2 0.2 1 0.2 1 0.9", "0 0 0 0.5 1", "2 0.1 0.5 0.3 1.5"]
