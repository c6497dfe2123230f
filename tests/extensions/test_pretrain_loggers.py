"""The autoencoder pretrainer with train.py's loggers (TensorBoard, Comet offline) and a 2-process gloo DDP launch."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from extensions import pretrain
from extensions.autoencoder.export import load_pretrain_checkpoint
from extensions.autoencoder.plots import RESULTS_KEYS
from tests.dataset_support import write_shapes_yaml
from utils.callbacks import Callbacks
from utils.loggers import comet as comet_module
from utils.loggers.comet import read_experiment_key
from utils.loggers.tensorboard import tensorboard_available
from utils.plotting.results import read_csv_table

ROOT = Path(__file__).resolve().parents[2]
FAST = {"imgsz": 64, "batch_size": 4, "workers": 0, "device": "cpu", "noplots": True}
COMET_ENV = ("COMET_API_KEY", "COMET_MODE", "COMET_CONFIG", "COMET_OFFLINE_DIRECTORY", "COMET_PROJECT_NAME",
             "COMET_LOG_BATCH_METRICS", "COMET_UPLOAD_BATCH_METRICS", "RANK", "LOCAL_RANK", "WORLD_SIZE")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> str:
    return write_shapes_yaml(tmp_path_factory.mktemp("data"), {"train": 8, "val": 4}, {i: f"c{i}" for i in range(8)})


@pytest.fixture
def comet_offline(monkeypatch, tmp_path) -> Path:
    """``COMET_MODE=offline`` into a temporary folder, nothing else from the machine's Comet setup."""
    for name in COMET_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(comet_module, "CONFIG_FILES", (tmp_path / "absent.config",))
    monkeypatch.setenv("COMET_ERROR_TRACKING_ENABLE", "false")
    monkeypatch.setenv("COMET_MODE", "offline")
    monkeypatch.setenv("COMET_OFFLINE_DIRECTORY", str(tmp_path / "comet"))
    pytest.importorskip("comet_ml")
    return tmp_path / "comet"


def archive_messages(archive: Path) -> list[dict]:
    with zipfile.ZipFile(archive) as opened:
        return [json.loads(line) for line in opened.read("messages.json").decode().splitlines()]


def archive_epoch_metrics(archive: Path) -> dict[int, dict[str, float]]:
    """``{epoch: {name: value}}`` of the epoch-level metrics (names with a '/') in an offline archive."""
    metrics: dict[int, dict[str, float]] = {}
    for message in archive_messages(archive):
        if message["type"] == "metric_msg":
            metric = message["payload"]["metric"]
            if metric["epoch"] is not None and "/" in metric["metricName"]:
                metrics.setdefault(metric["epoch"], {})[metric["metricName"]] = float(metric["metricValue"])
    return metrics


def csv_rows(run: Path) -> dict[int, dict[str, float]]:
    header, values = read_csv_table(run / "results.csv")
    return {int(row[0]): dict(zip(header[1:], row[1:].tolist(), strict=True)) for row in values}


class InterruptSecondEpoch:
    """Ctrl-C at the start of the second epoch: last.pt of epoch 0 stays resumable."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, *args) -> None:
        self.calls += 1
        if self.calls == 2:
            raise KeyboardInterrupt


@pytest.mark.slow
def test_pretrain_logs_comet_and_tensorboard_and_resume_continues(comet_offline, tiny_cfg, tiny_data, tmp_path):
    callbacks = Callbacks()
    callbacks.register_action("on_train_epoch_start", name="interrupt", callback=InterruptSecondEpoch())
    project = tmp_path / "runs"
    with pytest.raises(KeyboardInterrupt):
        pretrain.run(cfg=tiny_cfg, data=tiny_data, epochs=2, project=str(project), callbacks=callbacks, **FAST)
    run = project / "exp"
    key = read_experiment_key(run)
    archives = sorted(comet_offline.glob("*.zip"))
    assert key and [a.name for a in archives] == [f"{key}.zip"]  # teardown ended the experiment after the error
    first = archive_epoch_metrics(archives[0])
    assert list(first) == [0] and sorted(first[0]) == sorted(RESULTS_KEYS)
    assert [first[0][k] for k in RESULTS_KEYS] == pytest.approx([csv_rows(run)[0][k] for k in RESULTS_KEYS],
                                                                rel=1e-4)
    others = {m["payload"]["key"]: m["payload"]["value"] for m in archive_messages(archives[0])
              if m["type"] == "log_other"}
    assert others["job_type"] == "Pretraining"
    if tensorboard_available():
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        events = list(run.glob("events.out.tfevents.*"))
        accumulator = EventAccumulator(str(events[0])).Reload()
        assert sorted(accumulator.Tags()["scalars"]) == sorted(RESULTS_KEYS)
        assert accumulator.Scalars("train/loss")[0].value == pytest.approx(csv_rows(run)[0]["train/loss"], rel=1e-4)

    pretrain.run(resume=str(run / "weights" / "last.pt"), project=str(project))
    assert read_experiment_key(run) == key
    continued = [a for a in comet_offline.glob("*.zip") if a not in archives]
    assert len(continued) == 1 and continued[0].name.startswith(f"{key}-")
    with zipfile.ZipFile(continued[0]) as opened:
        assert json.loads(opened.read("experiment.json"))["resume_strategy"] == "get"
    assert list(archive_epoch_metrics(continued[0])) == [1]
    models = [m["payload"] for m in archive_messages(continued[0]) if m["type"] == "file_upload"
              and m["payload"].get("upload_type") == "model-element"]
    assert models and all(m["metadata"]["epochs_trained"] == 2 for m in models)


def test_broken_comet_does_not_change_pretraining(comet_offline, tiny_cfg, tiny_data, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "comet_ml", None)  # configured (offline) but not importable
    opt = pretrain.run(cfg=tiny_cfg, data=tiny_data, epochs=1, project=str(tmp_path / "runs"), **FAST)
    assert list(csv_rows(Path(opt.save_dir))) == [0]
    assert not comet_offline.exists() and read_experiment_key(Path(opt.save_dir)) is None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_gloo_ddp_pretraining(tiny_cfg, tiny_data, tmp_path):
    project = tmp_path / "runs"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(free_port()), "-m", "extensions.pretrain", "--cfg", tiny_cfg, "--data", tiny_data, "--epochs", "2",
               "--imgsz", "64", "--batch-size", "4", "--workers", "0", "--device", "cpu", "--noplots", "--project",
               str(project)]
    env = {k: v for k, v in os.environ.items() if k not in COMET_ENV + ("MASTER_ADDR", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "DDP:" in done.stdout + done.stderr
    assert [p.name for p in project.iterdir()] == ["exp"]  # rank 1 made no run folder of its own
    run = project / "exp"
    assert list(csv_rows(run)) == [0, 1]  # one row per epoch: only rank 0 writes
    for name in ("last.pt", "best.pt"):
        ckpt = load_pretrain_checkpoint(run / "weights" / name)
        assert ckpt["optimizer"] is None and not any(k.startswith("module.") for k in ckpt["autoencoder"])
