"""DDP launch cost and throughput: one training epoch as 1 process vs N processes under torch.distributed.run.

    $ python benchmarks/bench_ddp.py                            # CPU, gloo, 2 processes, 32 images at 128 px
    $ python benchmarks/bench_ddp.py --device 0 --nproc 1 --images 256 --imgsz 320    # NCCL on one GPU (AMP)

Each configuration runs ``train.py`` in a fresh subprocess (so the wall time includes interpreter start-up, model
build, the epoch and the final validation) and prints the wall time and the first-epoch train losses from
``results.csv``. On a 2-core CPU the processes compete for the same cores, so DDP is not expected to be faster;
the figures show the launch overhead and that the losses agree. Prints the figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import yaml

from utils.data.builtin import generate_shapes_dataset
from utils.data.shapes import SHAPE_NAMES
from utils.plotting.results import read_csv_table


def make_data(folder: Path, images: int) -> str:
    """Write a shapes dataset with ``images`` train and ``images // 4`` val images; returns its YAML path."""
    root = generate_shapes_dataset(folder / "shapes", {"train": images, "val": max(images // 4, 2)})
    data = folder / "data.yaml"
    data.write_text(yaml.safe_dump({"path": str(root), "train": "images/train", "val": "images/val",
                                    "names": dict(enumerate(SHAPE_NAMES))}))
    return str(data)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_epoch(data: str, project: Path, nproc: int, args: argparse.Namespace) -> tuple[float, list[float]]:
    """Train one epoch with ``nproc`` processes (0 = plain ``python train.py``); returns (seconds, train losses)."""
    train = ["train.py", "--data", data, "--epochs", "1", "--imgsz", str(args.imgsz), "--batch-size", str(args.batch),
             "--workers", str(args.workers), "--device", args.device, "--noplots", "--noautoanchor", "--project",
             str(project), "--name", "exp", "--weights", "", "--cfg", "yolov5n.yaml"]
    launcher = ([] if nproc == 0 else
                ["-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port", str(free_port())])
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *launcher, *train], cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"train.py failed ({nproc} processes):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    header, values = read_csv_table(project / "exp" / "results.csv")
    return seconds, [float(values[0, header.index(f"train/{k}_loss")]) for k in ("box", "obj", "cls")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--imgsz", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8, help="total batch size")
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = make_data(Path(tmp), args.images)
        single = run_epoch(data, Path(tmp) / "single", 0, args)
        ddp = run_epoch(data, Path(tmp) / "ddp", args.nproc, args)
    print(f"{args.images} images at {args.imgsz} px, total batch {args.batch}, device {args.device}")
    for label, (seconds, losses) in (("1 process          ", single), (f"{args.nproc} processes (DDP)", ddp)):
        print(f"  {label}: {seconds:7.1f} s wall, train losses box/obj/cls = "
              + " / ".join(f"{x:.5f}" for x in losses))


if __name__ == "__main__":
    main()
