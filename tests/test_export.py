"""export.py: TorchScript and ONNX exports match PyTorch, carry metadata, and run through DetectMultiBackend."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime
import pytest
import torch

import detect
import export
from models.backends import DetectMultiBackend
from models.experimental import attempt_load
from tests.inference_support import NAMES, calibrated_yolov5n, draw_scene, write_checkpoint

REPO = Path(__file__).resolve().parents[1]
UPSTREAM = REPO.parent / "shared" / "fixtures" / "upstream"
ATOL = 1e-3  # pixels / probabilities
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")


@pytest.fixture(scope="module")
def upstream(tmp_path_factory) -> dict[str, Path]:
    """The trained upstream fixture (copied: exports are written next to the weights) exported at 64x64."""
    weights = Path(shutil.copy(UPSTREAM / "yolov5n-trained.pt", tmp_path_factory.mktemp("upstream") / "up.pt"))
    files = export.run(weights=weights, imgsz=(64, 64), include=("torchscript", "onnx"))
    return {"pt": weights, "torchscript": Path(files[0]), "onnx": Path(files[1])}


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, Path]:
    """A calibrated random model with confident, content-dependent detections, exported at 64x64."""
    folder = tmp_path_factory.mktemp("export")
    weights = write_checkpoint(folder / "tiny.pt", calibrated_yolov5n())
    files = export.run(weights=weights, imgsz=(64, 64), include=("torchscript", "onnx"))
    return {"pt": weights, "torchscript": Path(files[0]), "onnx": Path(files[1])}


def pytorch_reference(weights: Path, x: torch.Tensor) -> torch.Tensor:
    model = attempt_load(weights, fuse=True)
    with torch.inference_mode():
        return model(x)[0]


def ort_run(file: Path, x: torch.Tensor) -> torch.Tensor:
    session = onnxruntime.InferenceSession(str(file), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(["output0"], {"images": x.numpy()})[0])


def test_exports_match_pytorch(upstream):
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    reference = pytorch_reference(upstream["pt"], x)
    assert reference.shape == (1, 252, 15)
    with torch.inference_mode():
        scripted = torch.jit.load(str(upstream["torchscript"]))(x)[0]
    torch.testing.assert_close(scripted, reference, atol=ATOL, rtol=0)
    torch.testing.assert_close(ort_run(upstream["onnx"], x), reference, atol=ATOL, rtol=0)


def test_metadata_and_onnx_io_names(exported, upstream):
    extra = {"config.txt": ""}
    torch.jit.load(str(exported["torchscript"]), _extra_files=extra)
    config = json.loads(extra["config.txt"])
    assert config == {"shape": [1, 3, 64, 64], "stride": 32, "names": {str(k): v for k, v in NAMES.items()}}
    model = onnx.load(str(exported["onnx"]))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta == {"stride": "32", "names": str(NAMES)}
    assert [i.name for i in model.graph.input] == ["images"] and [o.name for o in model.graph.output] == ["output0"]
    assert model.opset_import[0].version == 12  # run() default, as upstream (the CLI default is 17)
    meta = {p.key: p.value for p in onnx.load(str(upstream["onnx"])).metadata_props}
    assert meta["names"] == str({i: c for i, c in enumerate("ABCDEFGHIJ")})


def test_backends_read_metadata_and_agree(upstream):
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    outputs = {}
    for kind in ("pt", "torchscript", "onnx"):
        model = DetectMultiBackend(upstream[kind], fp32=True)  # exports are fp32: compare the .pt in fp32 too
        assert (model.pt, model.jit, model.onnx) == (kind == "pt", kind == "torchscript", kind == "onnx")
        assert model.stride == 32 and model.names == {i: c for i, c in enumerate("ABCDEFGHIJ")} and not model.fp16
        with torch.inference_mode():
            y = model(x)
        outputs[kind] = y[0] if isinstance(y, (list, tuple)) else y
    for kind in ("torchscript", "onnx"):
        torch.testing.assert_close(outputs[kind], outputs["pt"], atol=ATOL, rtol=0)


def test_detect_on_onnx_and_torchscript_gives_the_pt_boxes(exported, tmp_path):
    source = tmp_path / "square.png"
    cv2.imwrite(str(source), draw_scene(64, 64))
    labels = {}
    for kind in ("pt", "onnx", "torchscript"):
        save_dir = detect.run(weights=exported[kind], source=source, imgsz=64, conf_thres=0.3, save_txt=True,
                              save_conf=True, project=tmp_path, name=kind, fp32=True)  # exports are fp32
        labels[kind] = np.loadtxt(save_dir / "labels" / "square.txt", ndmin=2)
    assert len(labels["pt"]) > 0
    for kind in ("onnx", "torchscript"):
        assert labels[kind].shape == labels["pt"].shape
        np.testing.assert_array_equal(labels[kind][:, 0], labels["pt"][:, 0])
        np.testing.assert_allclose(labels[kind][:, 1:], labels["pt"][:, 1:], atol=2e-2 / 64)  # <= 1 px rounding


def test_dynamic_onnx_runs_other_shapes_and_matches_upstream(upstream, tmp_path):
    weights = Path(shutil.copy(upstream["pt"], tmp_path / "dyn.pt"))
    (file,) = export.run(weights=weights, imgsz=(64, 64), include=("onnx",), dynamic=True, opset=17)
    for shape in ((1, 3, 64, 64), (2, 3, 96, 64)):
        x = torch.rand(*shape, generator=torch.Generator().manual_seed(5))
        torch.testing.assert_close(ort_run(Path(file), x), pytorch_reference(weights, x), atol=ATOL, rtol=0)
    parity = torch.load(UPSTREAM / "yolov5n-trained.parity.pt", weights_only=True)  # upstream's own outputs
    torch.testing.assert_close(ort_run(Path(file), parity["input"]), parity["infer_fused"], atol=ATOL, rtol=0)


def test_bad_requests_fail_clearly(exported, tmp_path):
    with pytest.raises(ValueError, match="not available in this project"):
        export.run(weights=exported["pt"], include=("tflite",))
    with pytest.raises(ValueError, match="invalid"):
        export.run(weights=exported["pt"], include=("nonsense",))
    with pytest.raises(ValueError, match="GPU"):
        export.run(weights=exported["pt"], include=("onnx",), half=True, device="cpu")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        export.run(weights=tmp_path / "missing.pt", include=("onnx",))
    assert list(export.export_formats().columns) == ["Format", "Argument", "Suffix", "CPU", "GPU"]
    assert export.parse_opt(argv=[]).opset == 17 and export.parse_opt(argv=[]).include == ["torchscript"]


def test_verify_export_reports_the_difference(upstream):
    model = attempt_load(upstream["pt"], fuse=True)
    model.model[-1].export = True
    with torch.inference_mode():
        diff = export.verify_export(upstream["onnx"], model, torch.zeros(1, 3, 64, 64))
    assert 0 <= diff < ATOL


def test_export_options_mirror_run_arguments_and_defaults():
    import dataclasses
    import inspect

    from engine.exporter import ExportOptions

    params = inspect.signature(export.run).parameters
    fields = {f.name: f.default for f in dataclasses.fields(ExportOptions)}
    assert list(fields) == list(params)
    assert fields == {name: p.default for name, p in params.items()}
    assert set(vars(export.parse_opt(argv=[]))) == set(params)
