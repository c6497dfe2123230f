"""classify/train.py under ``python -m torch.distributed.run`` on CPU (gloo), 2 processes, tiny images: rank 0
alone writes one run folder and upstream-format checkpoints; the batch must split over the processes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from tests.cli.test_ddp import free_port, run_command
from utils.checkpoint import torch_safe_load
from utils.data.builtin_cls import generate_shapes_cls_dataset

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_two_process_gloo_classification(tmp_path):
    data = generate_shapes_cls_dataset(tmp_path / "data", {"train": 16, "val": 8})
    project = tmp_path / "runs"
    done = run_command([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                        str(free_port()), "classify/train.py", "--model", "yolov5n.yaml", "--data", str(data),
                        "--epochs", "1", "--imgsz", "32", "--batch-size", "8", "--workers", "0", "--device", "cpu",
                        "--noplots", "--project", str(project), "--name", "exp"])
    assert [p.name for p in project.iterdir()] == ["exp"]
    ckpt = torch_safe_load(project / "exp" / "weights" / "best.pt")
    assert type(ckpt["model"]).__name__ == "ClassificationModel" and ckpt["optimizer"] is None
    assert not isinstance(ckpt["model"], torch.nn.parallel.DistributedDataParallel)
    assert len((project / "exp" / "results.csv").read_text().splitlines()) == 2
    assert "2 processes, backend gloo, batch 4 per process" in done.stdout + done.stderr


def test_batch_must_split_over_processes(tmp_path, monkeypatch):
    from classify import train
    from engine.classify_setup import ClassifyError

    data = generate_shapes_cls_dataset(tmp_path / "data", {"train": 8, "val": 8})
    for name, value in (("LOCAL_RANK", "0"), ("RANK", "0"), ("WORLD_SIZE", "2")):
        monkeypatch.setenv(name, value)
    with pytest.raises(ClassifyError, match="multiple of WORLD_SIZE"):
        train.run(data=str(data), batch_size=3, imgsz=32, workers=0, device="cpu", project=str(tmp_path / "r"))
