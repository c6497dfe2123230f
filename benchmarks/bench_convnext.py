"""Experiment: small ConvNeXt-YOLO vs YOLOv5n/s on the built-in dataset at equal epochs and image size.

Every model is trained from scratch with ``train.run`` (same data, hyperparameters, epochs, image size, batch size
and seed), then the table is printed:

- params (M) and GFLOPs at ``--imgsz`` and at 640 (upstream convention: thop MACs x 2);
- step img/s: forward + backward + SGD step on a random batch (model only, no data loading);
- train s and e2e img/s: wall time of ``train.run`` (includes data loading and the final validation) and
  ``epochs * train images / wall``;
- mAP50 and mAP50-95 of the final epoch (``results.csv``).

Usage::

    python benchmarks/bench_convnext.py                                   # convnext_yolov5n vs yolov5n, 320 px
    python benchmarks/bench_convnext.py --epochs 1 --imgsz 128            # smoke budget
    python benchmarks/bench_convnext.py --profile-only convnext_yolov5s.yaml yolov5s.yaml   # no training

ConvNeXt rows use ``pretrained: false`` (YOLOV5_TIMM_PRETRAINED=0 unless set), so the comparison is from scratch
for every model. Pass ``--backbone-weights FILE`` to start the ConvNeXt backbones from a timm state dict instead.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch

from utils.files import yaml_load
from utils.logging import LOGGER

DEFAULT_MODELS = ("convnext_yolov5n.yaml", "yolov5n.yaml")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="*", default=list(DEFAULT_MODELS), help="model YAMLs to compare")
    parser.add_argument("--data", default="shapes.yaml", help="dataset YAML (default: the built-in dataset)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3, help="timed steps for step img/s")
    parser.add_argument("--project", default=str(ROOT / "runs" / "bench_convnext"))
    parser.add_argument("--profile-only", action="store_true", help="params/GFLOPs/step img/s only, no training")
    parser.add_argument("--backbone-weights", default="", help="timm state dict for the ConvNeXt backbone rows")
    return parser.parse_args(argv)


def dataset_info(data: str) -> tuple[int, int]:
    """Return (number of classes, number of training images) of a dataset YAML (generated if built-in)."""
    from utils.data.dataset_yaml import check_dataset

    info = check_dataset(data)
    train = info["train"] if isinstance(info["train"], list) else [info["train"]]
    n_images = sum(_count_images(Path(p)) for p in train)
    return int(info["nc"]), n_images


def _count_images(path: Path) -> int:
    if path.is_dir():
        return sum(1 for f in path.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
    if path.suffix == ".txt" and path.is_file():
        return sum(1 for line in path.read_text().splitlines() if line.strip())
    return 0


def profile_model(cfg: str, nc: int, imgsz: int, batch_size: int, steps: int) -> dict:
    """Return params (M), GFLOPs at ``imgsz`` and training-step throughput (img/s) of a freshly built model."""
    from models.yolo import Model
    from utils.loss import ComputeLoss
    from utils.torch_utils import model_flops

    torch.manual_seed(0)
    model = Model(cfg, nc=nc).train()
    model.hyp = yaml_load(ROOT / "data" / "hyps" / "hyp.scratch-low.yaml")
    loss_fn = ComputeLoss(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    images = torch.rand(batch_size, 3, imgsz, imgsz)
    targets = torch.tensor([[i, i % nc, 0.5, 0.5, 0.3, 0.3] for i in range(batch_size)], dtype=torch.float32)
    timings = []
    for step in range(steps + 1):  # the first step is warm-up
        start = time.perf_counter()
        loss, _ = loss_fn(model(images), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step:
            timings.append(time.perf_counter() - start)
    return {"params": sum(p.numel() for p in model.parameters()) / 1e6, "gflops": model_flops(model, imgsz),
            "gflops640": model_flops(model, 640),
            "step_ips": batch_size * len(timings) / sum(timings) if timings else float("nan")}


def final_metrics(save_dir: Path) -> tuple[float, float]:
    """Return (mAP50, mAP50-95) of the last row of ``save_dir/results.csv``."""
    with open(save_dir / "results.csv", newline="") as f:
        rows = [{k.strip(): v.strip() for k, v in row.items()} for row in csv.DictReader(f)]
    return float(rows[-1]["metrics/mAP_0.5"]), float(rows[-1]["metrics/mAP_0.5:0.95"])


def train_model(cfg: str, args: argparse.Namespace, n_images: int) -> dict:
    """Train ``cfg`` from scratch with ``train.run``; return wall time, end-to-end img/s and final mAPs."""
    import train

    name = Path(cfg).stem
    start = time.perf_counter()
    opt = train.run(cfg=cfg, weights="", data=args.data, epochs=args.epochs, imgsz=args.imgsz,
                    batch_size=args.batch_size, workers=args.workers, project=args.project, name=name, exist_ok=True,
                    noplots=True, noval=True, seed=0, **_backbone_kwargs(cfg, args))
    wall = time.perf_counter() - start
    map50, map50_95 = final_metrics(Path(opt.save_dir))
    return {"train_s": wall, "e2e_ips": args.epochs * n_images / wall, "map50": map50, "map": map50_95}


def _backbone_kwargs(cfg: str, args: argparse.Namespace) -> dict:
    return {"backbone_weights": args.backbone_weights} if args.backbone_weights and "convnext" in cfg else {}


def format_table(rows: list[dict], args: argparse.Namespace) -> str:
    """Return a Markdown table of the collected figures."""
    header = (f"| model | params (M) | GFLOPs@{args.imgsz} | GFLOPs@640 | step img/s | train s | e2e img/s | mAP50 | "
              "mAP50-95 |\n|---|---|---|---|---|---|---|---|---|")
    lines = [header]
    for r in rows:
        gflops = " | ".join(f"{r[k]:.2f}" if r.get(k) is not None else "n/a" for k in ("gflops", "gflops640"))
        trained = (f"{r['train_s']:.0f} | {r['e2e_ips']:.2f} | {r['map50']:.4f} | {r['map']:.4f}" if "map" in r
                   else "- | - | - | -")
        lines.append(f"| {r['model']} | {r['params']:.2f} | {gflops} | {r['step_ips']:.2f} | {trained} |")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> list[dict]:
    os.environ.setdefault("YOLOV5_TIMM_PRETRAINED", "0")  # entry script: from-scratch comparison by default
    nc, n_images = dataset_info(args.data)
    rows = []
    for cfg in args.models:
        row = {"model": Path(cfg).stem, **profile_model(cfg, nc, args.imgsz, args.batch_size, args.steps)}
        if not args.profile_only:
            row.update(train_model(cfg, args, n_images))
        rows.append(row)
        LOGGER.info(f"bench_convnext: {row}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\n{args.data}: {n_images} train images, {nc} classes; epochs={args.epochs}, imgsz={args.imgsz}, "
          f"batch={args.batch_size}; torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs, load average {load:.1f}")
    print(format_table(rows, args))
    return rows


if __name__ == "__main__":
    main(parse_args())
