"""Tests for the val.py CLI: upstream flags and defaults, run() signature, task dispatch, study outputs."""

from __future__ import annotations

import inspect
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import val
from utils.metrics import process_batch

ROOT = Path(val.__file__).resolve().parent
UPSTREAM_RUN_PARAMS = ["data", "weights", "batch_size", "imgsz", "conf_thres", "iou_thres", "max_det", "task",
                       "device", "workers", "single_cls", "augment", "verbose", "save_txt", "save_hybrid",
                       "save_conf", "save_json", "project", "name", "exist_ok", "half", "dnn", "model", "dataloader",
                       "save_dir", "plots", "callbacks", "compute_loss"]


@pytest.fixture()
def data_yaml(tmp_path) -> Path:
    (tmp_path / "images").mkdir()
    file = tmp_path / "tiny.yaml"
    file.write_text(yaml.safe_dump({"path": str(tmp_path), "train": "images", "val": "images", "names": ["a"]}))
    return file


def test_run_signature_is_upstreams_plus_voc_ap_and_fp32():
    params = inspect.signature(val.run).parameters
    assert list(params)[:len(UPSTREAM_RUN_PARAMS)] == UPSTREAM_RUN_PARAMS
    assert list(params)[len(UPSTREAM_RUN_PARAMS):] == ["voc_ap", "fp32"]
    assert params["fp32"].default is False
    defaults = {k: p.default for k, p in params.items()}
    assert (defaults["batch_size"], defaults["imgsz"], defaults["conf_thres"], defaults["iou_thres"],
            defaults["max_det"], defaults["task"], defaults["half"]) == (32, 640, 0.001, 0.6, 300, "val", True)


def test_process_batch_is_reexported():
    assert val.process_batch is process_batch
    detections = torch.tensor([[0.0, 0, 10, 10, 0.9, 0]])
    labels = torch.tensor([[0.0, 0, 0, 10, 10]])
    assert val.process_batch(detections, labels, torch.linspace(0.5, 0.95, 10)).all()


def test_parse_opt_defaults_and_aliases(data_yaml):
    opt = val.parse_opt(["--data", str(data_yaml)])
    assert (opt.batch_size, opt.imgsz, opt.conf_thres, opt.iou_thres, opt.max_det, opt.task) == \
        (32, 640, 0.001, 0.6, 300, "val")
    assert opt.half is False and opt.save_json is False and opt.voc_ap is False
    assert Path(str(opt.project)) == ROOT / "runs/val" and opt.name == "exp"
    for alias in ("--img", "--img-size", "--imgsz"):
        assert val.parse_opt(["--data", str(data_yaml), alias, "320"]).imgsz == 320
    opt = val.parse_opt(["--data", str(data_yaml), "--weights", "a.pt", "b.pt", "--save-hybrid", "--single-cls",
                         "--voc-ap"])
    assert opt.weights == ["a.pt", "b.pt"] and opt.save_txt and opt.single_cls and opt.voc_ap


def test_parse_opt_forces_save_json_for_coco(tmp_path):
    coco = tmp_path / "coco.yaml"
    coco.write_text("path: .\ntrain: x\nval: x\nnames: [a]\n")
    assert val.parse_opt(["--data", str(coco)]).save_json is True


def test_main_speed_task_overrides_thresholds(monkeypatch, data_yaml):
    calls = []
    monkeypatch.setattr(val, "run", lambda **kw: calls.append(kw) or ((0,) * 7, np.zeros(1), (0, 0, 0)))
    val.main(val.parse_opt(["--data", str(data_yaml), "--task", "speed", "--weights", "a.pt", "b.pt",
                            "--device", "cpu"]))
    assert [c["weights"] for c in calls] == ["a.pt", "b.pt"]
    assert all(c["conf_thres"] == 0.25 and c["iou_thres"] == 0.45 and not c["save_json"] and c["plots"] is False
               and c["half"] is False for c in calls)


def test_main_val_task_calls_run_once(monkeypatch, data_yaml):
    calls = []
    monkeypatch.setattr(val, "run", lambda **kw: calls.append(kw))
    val.main(val.parse_opt(["--data", str(data_yaml), "--conf-thres", "0.25"]))
    assert len(calls) == 1 and calls[0]["conf_thres"] == 0.25
    with pytest.raises(ValueError, match="--task bogus"):
        val.main(val.parse_opt(["--data", str(data_yaml), "--task", "bogus"]))


def test_study_writes_txt_zip_and_png(monkeypatch, data_yaml, tmp_path):
    def fake_run(**kw):
        size = kw["imgsz"]
        return (0.5, 0.4, size / 1000, size / 2000, 0.0, 0.0, 0.0), np.zeros(1), (1.0, size / 10, 2.0)

    monkeypatch.setattr(val, "run", fake_run)
    opt = val.parse_opt(["--data", str(data_yaml), "--task", "study", "--weights", "w1.pt",
                         "--project", str(tmp_path), "--name", "s"])
    out_dir = val.run_study(opt, opt.weights, sizes=(64, 128))
    txt = out_dir / "study_tiny_w1.txt"
    rows = np.loadtxt(txt, ndmin=2)
    np.testing.assert_allclose(rows[:, [2, 3, 8]], [[0.064, 0.032, 6.4], [0.128, 0.064, 12.8]])
    assert rows.shape == (2, 10)
    assert zipfile.ZipFile(out_dir / "study.zip").namelist() == ["study_tiny_w1.txt"]
    assert (out_dir / "study.png").stat().st_size > 0


@pytest.mark.slow
def test_cli_end_to_end(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "tests" / "engine"))
    from test_validator import make_dataset

    from models.yolo import DetectionModel
    from utils.checkpoint import make_checkpoint, save_checkpoint

    data = make_dataset(tmp_path / "data")
    torch.manual_seed(0)
    model = DetectionModel("yolov5n.yaml", nc=2)
    save_checkpoint(make_checkpoint(model), tmp_path / "w.pt")
    cmd = [sys.executable, str(ROOT / "val.py"), "--data", str(data), "--weights", str(tmp_path / "w.pt"),
           "--img", "64", "--batch-size", "4", "--workers", "0", "--project", str(tmp_path / "runs"),
           "--verbose", "--save-txt", "--save-conf"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout + result.stderr
    assert "Class     Images  Instances          P          R      mAP50   mAP50-95" in out
    assert "                   all          6         12" in out
    assert "Results saved to" in out
    save_dir = tmp_path / "runs" / "exp"
    assert (save_dir / "confusion_matrix.png").is_file() and (save_dir / "labels").is_dir()
