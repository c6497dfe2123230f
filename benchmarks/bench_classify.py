"""Classification training speed: ``classify/train.py`` here against upstream's, side by side, same model and data.

Both sides train the same classifier: a yolov5s (``--model``) detection checkpoint with random weights, cut at
layer 10 into ``Classify`` (upstream's behaviour for a detection ``.pt``), on the same ImageNet-style folders (the
built-in ``shapes-cls`` generator, ``--images`` training and 16 validation images) at ``--imgsz`` with the same
batch size and workers. Upstream (``--upstream``, the unmodified ``yolov5==7.0.14`` package) runs as a black box
through :mod:`benchmarks.upstream_runner`.

Throughput is black-box too: each side runs once with ``E1`` and once with ``E2`` epochs (``--epochs E1 E2``) and
images/s = ``images * (E2 - E1) / (wall(E2) - wall(E1))``, so start-up, dataset checks, the final validation and
plots cancel out; the per-epoch validation of 16 images stays in (both sides do it). Runs alternate
(ours, upstream, ours, upstream ...) so machine load affects both; ``--rounds`` repeats and the median is shown.

Usage::

    python benchmarks/bench_classify.py --upstream /work/upstream                       # yolov5s @ 224, 128 images
    python benchmarks/bench_classify.py --upstream /work/upstream --images 256 --rounds 3 --workers 2
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch

from benchmarks.upstream_runner import upstream_command, write_shim


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--upstream", type=Path, required=True, help="folder with the upstream yolov5 package")
    p.add_argument("--model", default="yolov5s", help="detection architecture (models/<name>.yaml)")
    p.add_argument("--imgsz", type=int, default=224, help="training image size")
    p.add_argument("--images", type=int, default=128, help="training images (the built-in generator)")
    p.add_argument("--batch-size", type=int, default=16, help="batch size of both sides")
    p.add_argument("--workers", type=int, default=2, help="dataloader workers of both sides")
    p.add_argument("--epochs", nargs=2, type=int, default=[1, 3], metavar=("E1", "E2"), help="the two run lengths")
    p.add_argument("--rounds", type=int, default=1, help="repetitions (median reported)")
    p.add_argument("--folder", type=Path, default=None, help="work folder (default: a temporary one)")
    return p.parse_args()


def prepare(folder: Path, args: argparse.Namespace) -> tuple[Path, Path]:
    """Write the dataset and the random-weight detection checkpoint; returns their paths."""
    from models.yolo import DetectionModel
    from utils.data.builtin_cls import generate_shapes_cls_dataset

    data = folder / "data"
    if not data.is_dir():
        generate_shapes_cls_dataset(data, {"train": args.images, "val": 16})
    weights = folder / f"{args.model}-random.pt"
    torch.manual_seed(0)
    model = DetectionModel(ROOT / "models" / f"{args.model}.yaml", nc=80)
    torch.save({"epoch": -1, "best_fitness": None, "model": model.half(), "ema": None, "updates": None,
                "optimizer": None, "opt": {}, "date": ""}, weights)
    return data, weights


def train_args(weights: Path, data: Path, epochs: int, project: Path, name: str, args: argparse.Namespace) -> list:
    return ["--model", str(weights), "--data", str(data), "--epochs", str(epochs), "--img", str(args.imgsz),
            "--batch-size", str(args.batch_size), "--workers", str(args.workers), "--project", str(project),
            "--name", name, "--exist-ok"]


def timed(command: list[str], env: dict | None, log: Path) -> float:
    """Run ``command`` (output to ``log``); returns its wall seconds.

    Raises:
        RuntimeError: the command failed (the log file is named).
    """
    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as out:
        code = subprocess.call(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=log.parent)
    if code:
        raise RuntimeError(f"{' '.join(command[:3])} ... failed (exit {code}); see {log}")
    return time.perf_counter() - start


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.folder or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        data, weights = prepare(folder, args)
        shim = write_shim(folder / "upstream-shim")
        walls: dict[tuple[str, int], list[float]] = {}
        for r in range(args.rounds):
            for epochs in args.epochs:
                for side in ("ours", "upstream"):
                    extra = train_args(weights, data, epochs, folder / "runs", f"{side}_e{epochs}_r{r}", args)
                    if side == "ours":
                        command, env = [sys.executable, str(ROOT / "classify" / "train.py"), *extra], None
                    else:
                        command, env = upstream_command(args.upstream, shim, "classify/train.py", extra)
                    seconds = timed(command, env, folder / f"{side}_e{epochs}_r{r}.log")
                    walls.setdefault((side, epochs), []).append(seconds)
                    print(f"round {r}: {side:8s} {epochs} epoch(s): {seconds:7.1f} s", flush=True)
        report(walls, args)


def report(walls: dict, args: argparse.Namespace) -> None:
    """Print images/s per side (median over rounds) and the ratio."""
    e1, e2 = args.epochs
    rates = {}
    print(f"\n{args.model}-cls (detection .pt cut at layer 10) @ {args.imgsz} px, batch {args.batch_size}, "
          f"{args.workers} workers, {args.images} training images\n")
    print("| side | wall E1 (s) | wall E2 (s) | train images/s |\n|---|---|---|---|")
    for side in ("ours", "upstream"):
        per_round = [args.images * (e2 - e1) / max(b - a, 1e-9)
                     for a, b in zip(walls[side, e1], walls[side, e2], strict=True)]
        rates[side] = statistics.median(per_round)
        print(f"| {side} | {statistics.median(walls[side, e1]):.1f} | {statistics.median(walls[side, e2]):.1f} | "
              f"{rates[side]:.2f} |")
    print(f"\nours / upstream = {rates['ours'] / rates['upstream']:.2f}x (target >= 1.00)")


if __name__ == "__main__":
    main()
