"""AutoShape input handling and the Detections API (random-init yolov5n, tiny images)."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from models.autoshape import XYWH_COLUMNS, XYXY_COLUMNS, AutoShape, Detections
from models.backends import DetectMultiBackend
from tests.inference_support import NAMES, calibrated_yolov5n, draw_scene, write_checkpoint
from utils.logging import LOGGER

SIZE = 64


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("weights") / "tiny.pt", calibrated_yolov5n())


@pytest.fixture(scope="module")
def autoshape(checkpoint) -> AutoShape:
    model = AutoShape(DetectMultiBackend(checkpoint), verbose=False)
    model.conf, model.max_det = 0.001, 30
    return model


@pytest.fixture(scope="module")
def image_file(tmp_path_factory) -> Path:
    """A 72x96 RGB drawing saved losslessly (PNG), so file and array inputs hold the same pixels."""
    file = tmp_path_factory.mktemp("images") / "scene.png"
    Image.fromarray(draw_scene(72, 96)[..., ::-1]).save(file)
    return file


def _rgb(file: Path) -> np.ndarray:
    return np.asarray(Image.open(file).convert("RGB"))


def test_every_input_type_gives_identical_detections(autoshape, image_file):
    rgb = _rgb(image_file)
    rgba = np.concatenate([rgb, np.full((*rgb.shape[:2], 1), 255, np.uint8)], 2)
    reference = autoshape(str(image_file), size=SIZE)
    assert len(reference.pred[0]) > 0
    inputs = {
        "Path": image_file,
        "PIL": Image.open(image_file),
        "PIL RGBA": Image.fromarray(rgba),
        "numpy HWC RGB": rgb,
        "numpy CHW": np.ascontiguousarray(rgb.transpose(2, 0, 1)),
        "numpy RGBA": rgba,
        "cv2 BGR flipped to RGB": cv2.imread(str(image_file))[..., ::-1],
    }
    for kind, im in inputs.items():
        result = autoshape(im, size=SIZE)
        assert torch.equal(result.pred[0], reference.pred[0]), kind
    batch = autoshape([str(image_file), rgb, Image.open(image_file)], size=SIZE)
    assert batch.n == 3
    for pred in batch.pred:  # batched convolutions round differently per batch slot: compare within tolerance
        torch.testing.assert_close(pred, reference.pred[0], atol=1e-3, rtol=1e-4)


def test_grayscale_equals_its_three_channel_copy(autoshape):
    gray = np.tile(np.linspace(0, 255, 80, dtype=np.uint8), (64, 1))
    gray[20:40, 10:30] = 255
    three = np.repeat(gray[..., None], 3, 2)
    assert torch.equal(autoshape(gray, size=64).pred[0], autoshape(three, size=64).pred[0])
    assert torch.equal(autoshape(Image.fromarray(gray), size=64).pred[0], autoshape(three, size=64).pred[0])


def test_tensor_input_returns_raw_model_output(autoshape):
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    raw = autoshape(x)
    assert isinstance(raw, torch.Tensor) and raw.shape == (2, 3 * (8 * 8 + 4 * 4 + 2 * 2), 8)
    with torch.inference_mode():
        assert torch.equal(raw, autoshape.model(x))


def test_boxes_in_original_pixels_and_all_formats(autoshape, image_file):
    r = autoshape(str(image_file), size=SIZE)
    h, w = 72, 96
    xyxy = r.xyxy[0]
    assert r.pred is r.xyxy and xyxy.shape[1] == 6
    assert float(xyxy[:, [0, 2]].max()) <= w and float(xyxy[:, [1, 3]].max()) <= h and float(xyxy[:, :4].min()) >= 0
    gain = torch.tensor([w, h, w, h, 1, 1])
    torch.testing.assert_close(r.xyxyn[0] * gain, xyxy)
    torch.testing.assert_close(r.xywhn[0] * gain, r.xywh[0])
    torch.testing.assert_close(r.xywh[0][:, 2], xyxy[:, 2] - xyxy[:, 0])
    torch.testing.assert_close(r.xywh[0][:, 0], (xyxy[:, 0] + xyxy[:, 2]) / 2)
    torch.testing.assert_close(r.xywh[0][:, 4:], xyxy[:, 4:])
    assert r.files == ["scene.jpg"] and r.names == NAMES and r.n == len(r) == 1
    assert r.s == (1, 3, 64, 64) and len(r.t) == 3 and len(r.times) == 3


def test_pandas_columns_and_values(autoshape, image_file):
    r = autoshape(str(image_file), size=SIZE)
    df = r.pandas()
    assert list(df.xyxy[0].columns) == list(XYXY_COLUMNS) == [
        "xmin", "ymin", "xmax", "ymax", "confidence", "class", "name"]
    assert list(df.xywhn[0].columns) == list(XYWH_COLUMNS) == [
        "xcenter", "ycenter", "width", "height", "confidence", "class", "name"]
    assert list(df.xyxyn[0].columns) == list(XYXY_COLUMNS) and list(df.xywh[0].columns) == list(XYWH_COLUMNS)
    frame = df.xyxy[0]
    np.testing.assert_allclose(frame[["xmin", "ymin", "xmax", "ymax", "confidence"]].to_numpy(),
                               r.xyxy[0][:, :5].numpy(), rtol=1e-6)
    assert frame["class"].tolist() == r.xyxy[0][:, 5].int().tolist()
    assert frame["name"].tolist() == [NAMES[int(c)] for c in r.xyxy[0][:, 5]]
    assert isinstance(r.xyxy[0], torch.Tensor)  # pandas() returns a copy


def test_str_repr_tolist_and_print(autoshape, image_file):
    r = autoshape([str(image_file), np.zeros((40, 50, 3), np.uint8)], size=64)
    text = str(r)
    lines = text.splitlines()
    assert lines[0].startswith("image 1/2: 72x96 ") and lines[1].startswith("image 2/2: 40x50 ")
    assert lines[2].startswith("Speed: ") and lines[2].endswith("per image at shape (2, 3, 64, 64)")
    assert repr(r).startswith("YOLOv5 <class 'models.autoshape.Detections'> instance\n") and repr(r).endswith(text)
    singles = r.tolist()
    assert len(singles) == 2 and all(isinstance(d, Detections) and d.n == 1 for d in singles)
    assert torch.equal(singles[1].pred[0], r.pred[1]) and singles[1].files == ["image1.jpg"]


def test_settable_thresholds(autoshape, image_file):
    base = autoshape(str(image_file), size=SIZE).pred[0]
    try:
        autoshape.classes = [1]
        assert set(autoshape(str(image_file), size=SIZE).pred[0][:, 5].tolist()) == {1.0}
        autoshape.classes, autoshape.max_det = None, 3
        assert torch.equal(autoshape(str(image_file), size=SIZE).pred[0], base[:3])
        autoshape.max_det, autoshape.conf = 30, 0.999
        r = autoshape(str(image_file), size=SIZE)
        assert len(r.pred[0]) == 0 and "(no detections)" in str(r)
        autoshape.conf, autoshape.agnostic = 0.001, True
        assert len(autoshape(str(image_file), size=SIZE).pred[0]) <= len(base)
    finally:
        autoshape.classes, autoshape.max_det, autoshape.conf, autoshape.agnostic = None, 30, 0.001, False


def test_save_crop_render(autoshape, image_file, tmp_path):
    r = autoshape(str(image_file), size=SIZE)
    original = r.ims[0].copy()
    save_dir = r.save(save_dir=tmp_path / "exp")
    assert save_dir == tmp_path / "exp" and cv2.imread(str(save_dir / "scene.jpg")).shape == (72, 96, 3)
    assert r.save(save_dir=tmp_path / "exp") == tmp_path / "exp2"
    crops = r.crop(save=True, save_dir=tmp_path / "crops")
    assert len(crops) == len(r.pred[0])
    assert set(crops[0]) == {"box", "conf", "cls", "label", "im"}
    saved = list((tmp_path / "crops" / "crops").rglob("*.jpg"))
    assert len(saved) == len(crops)
    assert {p.parent.name for p in saved} == {NAMES[int(c)] for c in r.pred[0][:, 5]}
    ims = r.render()
    assert ims is r.ims and ims[0].shape == original.shape and not np.array_equal(ims[0], original)


def test_show_is_headless_safe(autoshape, image_file, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    LOGGER.addHandler(handler)
    try:
        autoshape(str(image_file), size=64).show()
    finally:
        LOGGER.removeHandler(handler)
    assert any("no display" in r.getMessage() for r in records)


def test_bad_inputs_give_clear_errors(autoshape, tmp_path):
    with pytest.raises(ValueError, match="not allowed"):
        autoshape("https://example.com/bus.jpg")
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        autoshape(str(tmp_path / "missing.jpg"))
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(ValueError, match="corrupt.jpg"):
        autoshape(str(corrupt))
    with pytest.raises(TypeError, match="Unsupported AutoShape input"):
        autoshape(12345)


def test_autoshape_on_plain_detection_model(checkpoint, image_file):
    """Wrapping the nn.Module directly (no DetectMultiBackend) gives the same detections."""
    dmb = DetectMultiBackend(checkpoint)
    direct = AutoShape(dmb.model, verbose=False)
    wrapped = AutoShape(dmb, verbose=False)
    for m in (direct, wrapped):
        m.conf, m.max_det = 0.001, 30
    assert torch.equal(direct(str(image_file), size=SIZE).pred[0], wrapped(str(image_file), size=SIZE).pred[0])
