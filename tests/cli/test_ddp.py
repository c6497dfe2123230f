"""DDP through ``python -m torch.distributed.run`` on CPU (gloo), 2 processes, tiny images.

Both runs start from the same initial weights with augmentation off, so the only differences between the 2-process
run and the single-process run with the same total batch are the data order, per-rank batch-norm statistics and
per-rank seeds.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from utils.checkpoint import make_checkpoint, save_checkpoint, torch_safe_load
from utils.plots_results import read_csv_table

ROOT = Path(__file__).resolve().parents[2]
TOTAL_BATCH = 4
LOSS_RTOL = 0.10  # first-epoch train losses (box, obj, cls): 2 x gloo vs 1 process agree within 10 % (relative)
NO_AUGMENT = {"hsv_h": 0.0, "hsv_s": 0.0, "hsv_v": 0.0, "translate": 0.0, "scale": 0.0, "fliplr": 0.0, "mosaic": 0.0}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def setup_files(tmp_path_factory) -> dict[str, str]:
    """Tiny dataset (8 train / 4 val, 64 px), a no-augmentation hyp file and shared initial weights."""
    from models.yolo import Model
    from utils.default_dataset import generate_shapes_dataset
    from utils.shape_drawing import SHAPE_NAMES

    base = tmp_path_factory.mktemp("ddp")
    root = generate_shapes_dataset(base / "tiny", {"train": 8, "val": 4})
    data = base / "tiny.yaml"
    data.write_text(yaml.safe_dump({"path": str(root), "train": "images/train", "val": "images/val",
                                    "names": dict(enumerate(SHAPE_NAMES))}))
    hyp = yaml.safe_load((ROOT / "data" / "hyps" / "hyp.scratch-low.yaml").read_text())
    hyp_file = base / "hyp.yaml"
    hyp_file.write_text(yaml.safe_dump({**hyp, **NO_AUGMENT}))
    torch.manual_seed(0)
    model = Model(str(ROOT / "models" / "yolov5n.yaml"), nc=len(SHAPE_NAMES))
    weights = base / "init.pt"
    save_checkpoint(make_checkpoint(model, None, epoch=-1), weights)
    return {"data": str(data), "hyp": str(hyp_file), "weights": str(weights)}


def train_args(files: dict[str, str], project: Path) -> list[str]:
    return ["train.py", "--data", files["data"], "--hyp", files["hyp"], "--weights", files["weights"], "--epochs", "1",
            "--imgsz", "64", "--batch-size", str(TOTAL_BATCH), "--workers", "0", "--device", "cpu", "--noautoanchor",
            "--noplots", "--project", str(project), "--name", "exp"]


def run_command(command: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR",
                                                             "MASTER_PORT", "COMET_MODE", "COMET_API_KEY")}
    env["OMP_NUM_THREADS"] = "1"
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return done


def first_epoch_losses(run: Path) -> list[float]:
    header, values = read_csv_table(run / "results.csv")
    assert values.shape[0] == 1
    return [float(values[0, header.index(k)]) for k in ("train/box_loss", "train/obj_loss", "train/cls_loss")]


@pytest.mark.slow
def test_two_process_gloo_ddp_matches_single_process(setup_files, tmp_path):
    ddp_project, single_project = tmp_path / "ddp", tmp_path / "single"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                str(free_port())]
    done = run_command(launcher + train_args(setup_files, ddp_project))
    run_command([sys.executable] + train_args(setup_files, single_project))

    assert [p.name for p in ddp_project.iterdir()] == ["exp"]  # rank 1 created no second run folder
    run = ddp_project / "exp"
    assert sorted(p.name for p in (run / "weights").iterdir()) == ["best.pt", "last.pt"]
    for name in ("last.pt", "best.pt"):
        ckpt = torch_safe_load(run / "weights" / name)
        assert ckpt["epoch"] == -1 and ckpt["optimizer"] is None  # stripped once, by rank 0
        assert not isinstance(ckpt["model"], torch.nn.parallel.DistributedDataParallel)
    assert "DDP" in done.stdout + done.stderr and "gloo" in done.stdout + done.stderr
    ddp_loss, single_loss = first_epoch_losses(run), first_epoch_losses(single_project / "exp")
    assert ddp_loss == pytest.approx(single_loss, rel=LOSS_RTOL), (ddp_loss, single_loss)


@pytest.mark.xfail(reason="upstream DDP option checks are not wired into train.py yet (issue 9)", strict=True)
def test_ddp_refuses_incompatible_options(setup_files, tmp_path, monkeypatch):
    import train
    from utils.train_options import TrainError

    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    base = dict(data=setup_files["data"], weights=setup_files["weights"], imgsz=64, workers=0, device="cpu",
                project=str(tmp_path), epochs=1)
    for options, message in (({"batch_size": 3}, "multiple of WORLD_SIZE"), ({"batch_size": -1}, "AutoBatch"),
                             ({"batch_size": 4, "image_weights": True}, "--image-weights"),
                             ({"batch_size": 4, "evolve": 2}, "--evolve")):
        with pytest.raises(TrainError, match=message):
            train.run(**base, **options)
    assert not any(tmp_path.iterdir())  # refused before any run folder was made
