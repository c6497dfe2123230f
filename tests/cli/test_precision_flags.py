"""The fp32 switch on every entry point: train.py / val.py / detect.py ``--fp32``, torch.hub ``fp32=True`` and
``model.fp32``. Each entry point logs ``precision: <policy> (<reason>)``; the tests read those lines or the returned
model's ``precision`` attribute. ``cpu_has_native_bf16`` is monkeypatched so the default is the bf16 fast path on
any CPU (torch emulates bf16 where the hardware lacks it)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

import detect
import train
import val
from tests.inference_support import draw_scene
from utils import precision
from utils.data.builtin import generate_shapes_dataset
from utils.data.shapes import SHAPE_NAMES

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO.parent / "shared" / "fixtures" / "upstream" / "yolov5n-trained.pt"
FAST_LOG = "precision: bf16+channels_last (CPU has native bf16 (AMX/AVX512-BF16))"
FP32_LOG = "precision: fp32 (fp32 forced (--fp32 / YOLOV5_FP32))"
needs_fixture = pytest.mark.skipif(not FIXTURE.is_file(), reason=f"upstream fixture {FIXTURE} not found")


@pytest.fixture(autouse=True)
def native_bf16(monkeypatch):
    monkeypatch.delenv("YOLOV5_FP32", raising=False)
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return generate_shapes_dataset(tmp_path_factory.mktemp("data") / "tiny", {"train": 4, "val": 2})


@pytest.fixture(scope="module")
def train_yaml(shapes) -> str:
    data = {"path": str(shapes), "train": "images/train", "val": "images/val", "names": dict(enumerate(SHAPE_NAMES))}
    file = shapes.parent / "train.yaml"
    file.write_text(yaml.safe_dump(data))
    return str(file)


@pytest.fixture(scope="module")
def fixture_yaml(shapes) -> str:
    """The shapes images under the fixture model's 10 class names A..J (so val.py accepts the model)."""
    data = {"path": str(shapes), "train": "images/train", "val": "images/val", "names": list("ABCDEFGHIJ")}
    file = shapes.parent / "letters.yaml"
    file.write_text(yaml.safe_dump(data))
    return str(file)


def precision_lines(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("precision: ")]


def test_every_entry_script_has_the_fp32_flag(fixture_yaml):
    assert train.build_parser().parse_args(["--fp32"]).fp32 is True
    assert train.build_parser().parse_args([]).fp32 is False
    assert val.parse_opt(["--data", fixture_yaml, "--fp32"]).fp32 is True
    assert val.parse_opt(["--data", fixture_yaml]).fp32 is False
    assert detect.parse_opt(["--fp32"]).fp32 is True and detect.parse_opt([]).fp32 is False


def test_train_run_fp32_is_honoured(train_yaml, tmp_path, log_lines):
    opt = train.run(data=train_yaml, epochs=1, imgsz=64, batch_size=2, workers=0, device="cpu", noautoanchor=True,
                    noplots=True, nosave=True, project=str(tmp_path), name="exp", fp32=True)
    assert opt.fp32 is True and (Path(opt.save_dir) / "weights" / "last.pt").is_file()
    assert precision_lines(log_lines) == [FP32_LOG], "logged once; the validations reuse the trainer's choice"


@needs_fixture
@pytest.mark.parametrize("fp32", [False, True])
def test_val_run_logs_the_policy_it_used(fixture_yaml, tmp_path, log_lines, fp32):
    results, _, _ = val.run(data=fixture_yaml, weights=str(FIXTURE), batch_size=2, imgsz=64, device="cpu",
                            workers=0, plots=False, project=str(tmp_path), fp32=fp32)
    assert len(results) == 7
    assert precision_lines(log_lines) == [FP32_LOG if fp32 else FAST_LOG]


@needs_fixture
@pytest.mark.parametrize("fp32", [False, True])
def test_detect_run_logs_the_policy_it_used(tmp_path, log_lines, fp32):
    source = tmp_path / "images"
    source.mkdir()
    cv2.imwrite(str(source / "scene.jpg"), draw_scene(96, 128))
    save_dir = detect.run(weights=str(FIXTURE), source=str(source), imgsz=(64, 64), device="cpu", nosave=True,
                          project=str(tmp_path / "runs"), fp32=fp32)
    assert save_dir.is_dir()
    assert precision_lines(log_lines) == [FP32_LOG if fp32 else FAST_LOG]


@needs_fixture
def test_hub_fp32_argument_and_attribute(hubconf, log_lines):
    image = draw_scene(96, 128)[..., ::-1].copy()
    reference = hubconf.custom(path=FIXTURE, fp32=True, device="cpu", _verbose=False)
    assert reference.fp32 is True and reference.precision.name == "fp32"
    fast = hubconf.custom(path=FIXTURE, device="cpu", _verbose=False)
    assert fast.fp32 is False and fast.precision.name == "bf16+channels_last"
    first_conv = next(m for m in fast.model.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert first_conv.weight.is_contiguous(memory_format=torch.channels_last)
    fast.conf = reference.conf = 0.0005  # the 3-epoch fixture scores <= 0.0014: keep some boxes
    fast_boxes = fast(image, size=64).xyxy[0]
    assert fast_boxes.dtype == torch.float32 and len(fast_boxes)
    fast.fp32 = True
    assert fast.precision.name == "fp32" and first_conv.weight.is_contiguous()
    assert torch.equal(fast(image, size=64).xyxy[0], reference(image, size=64).xyxy[0])
    assert precision_lines(log_lines) == [FP32_LOG], "_verbose=False mutes loading; the later switch is logged"


def test_autoshape_on_a_plain_model_follows_fp32():
    from models.autoshape import AutoShape
    from tests.inference_support import calibrated_yolov5n

    model = AutoShape(calibrated_yolov5n(), verbose=False)
    assert model.precision.name == "bf16+channels_last"
    raw = model(torch.rand(1, 3, 64, 64))
    assert raw[0].dtype == torch.float32
    model.fp32 = True
    assert model.precision.name == "fp32"
    assert len(model(np.zeros((64, 64, 3), np.uint8)).pred) == 1
