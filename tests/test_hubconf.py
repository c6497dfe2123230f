"""torch.hub entry points: local loading from any directory, no downloads, clean sys.path, weights lookup."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from models.autoshape import AutoShape
from models.yolo import DetectionModel
from tests.inference_support import NAMES, calibrated_yolov5n, draw_scene, write_checkpoint
from utils.checkpoint import torch_safe_load
from utils.logging import LOGGER

REPO = Path(__file__).resolve().parents[1]
UPSTREAM_FIXTURE = REPO.parent / "shared" / "fixtures" / "upstream" / "yolov5n-trained.pt"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("weights") / "yolov5n.pt", calibrated_yolov5n())


CALLER_SCRIPT = r"""
import json, sys
import numpy as np
import torch
import utils as caller_utils  # the caller's own top-level 'utils' package (same name as ours)
before = list(sys.path)
image = np.load(sys.argv[3])
out = {}
for key, path in (("ours", sys.argv[1]), ("upstream", sys.argv[2])):
    model = torch.hub.load(sys.argv[4], "custom", path=path, source="local", _verbose=False)
    model.conf = 0.001
    result = model(image, size=64)
    out[key] = {"type": type(model).__name__, "names": {str(k): v for k, v in model.names.items()},
                "pred": result.pred[0][:5].tolist(), "n": len(result.pred[0])}
out["sys_path_unchanged"] = sys.path == before
out["caller_utils_restored"] = sys.modules["utils"] is caller_utils and caller_utils.MARKER == "caller"
print("RESULT " + json.dumps(out))
"""


def test_custom_loads_from_another_directory_without_touching_sys_path(checkpoint, tmp_path):
    assert UPSTREAM_FIXTURE.is_file(), f"missing parity fixture {UPSTREAM_FIXTURE}"
    (tmp_path / "utils").mkdir()
    (tmp_path / "utils" / "__init__.py").write_text("MARKER = 'caller'\n")
    image = draw_scene(64, 64)[..., ::-1].copy()
    np.save(tmp_path / "image.npy", image)
    (tmp_path / "caller.py").write_text(CALLER_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "caller.py", str(checkpoint), str(UPSTREAM_FIXTURE), "image.npy",
                           str(REPO)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("RESULT ", 1)[1])
    assert out["sys_path_unchanged"] and out["caller_utils_restored"]
    assert out["ours"]["type"] == out["upstream"]["type"] == "AutoShape"
    assert out["ours"]["names"] == {str(k): v for k, v in NAMES.items()}
    assert out["upstream"]["names"] == {str(i): name for i, name in enumerate("ABCDEFGHIJ")}
    model = AutoShape(_dmb(checkpoint), verbose=False)
    model.conf = 0.001
    expected = model(image, size=64).pred[0]
    assert out["ours"]["n"] == len(expected) > 0
    np.testing.assert_allclose(np.array(out["ours"]["pred"]), expected[:5].numpy(), atol=1e-4)
    assert out["upstream"]["n"] > 0


def _dmb(path: Path):
    from models.backends import DetectMultiBackend

    return DetectMultiBackend(path)


def test_missing_pretrained_weights_fail_at_once_saying_where(hubconf, tmp_path, monkeypatch):
    if (REPO / "yolov5x6.pt").exists():
        pytest.skip("a real yolov5x6.pt is present in the repository")
    monkeypatch.setenv("YOLOV5_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    before = list(sys.path)
    t0 = time.perf_counter()
    with pytest.raises(RuntimeError) as info:
        hubconf.yolov5x6()
    assert time.perf_counter() - t0 < 30
    message = str(info.value)
    assert "yolov5x6.pt" in message and "never downloads" in message and str(REPO) in message
    assert f"YOLOV5_WEIGHTS_DIR={tmp_path}" in message
    assert sys.path == before
    with pytest.raises(RuntimeError, match="nope.pt not found"):
        hubconf.custom(path=str(tmp_path / "nope.pt"))


def test_pretrained_from_weights_dir_env(hubconf, checkpoint, monkeypatch):
    monkeypatch.setenv("YOLOV5_WEIGHTS_DIR", str(checkpoint.parent))
    level = LOGGER.level
    model = hubconf.yolov5n(_verbose=False)
    assert LOGGER.level == level
    assert isinstance(model, AutoShape) and model.names == NAMES
    raw = hubconf.yolov5n(autoshape=False, _verbose=False)
    assert not isinstance(raw, AutoShape) and raw.pt and raw.names == NAMES


def test_class_override_transfers_matching_weights(hubconf, checkpoint, monkeypatch):
    monkeypatch.setenv("YOLOV5_WEIGHTS_DIR", str(checkpoint.parent))
    model = hubconf.yolov5n(classes=3, _verbose=False)
    assert isinstance(model, DetectionModel) and model.names == NAMES
    stored = torch_safe_load(checkpoint)["model"].float().state_dict()
    state = model.state_dict()
    transferred = [k for k in state if "anchors" not in k]
    assert all(torch.equal(state[k], stored[k]) for k in transferred)
    other = hubconf.yolov5n(classes=5, _verbose=False)  # head shapes differ: only the body transfers
    assert other.model[-1].nc == 5 and list(other.names) == ["0", "1", "2", "3", "4"]
    assert torch.equal(other.state_dict()["model.0.conv.weight"], stored["model.0.conv.weight"])


def test_untrained_model_from_yaml(hubconf):
    model = hubconf.yolov5n(pretrained=False, channels=3, classes=7, autoshape=True, _verbose=False)
    assert isinstance(model, DetectionModel) and model.model[-1].nc == 7
