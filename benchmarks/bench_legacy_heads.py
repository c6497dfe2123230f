"""Experiment: YOLOv1, YOLOv3 and YOLOv5 heads on the same YOLOv5n backbone (plus YOLOv3-tiny), trained at equal
epochs with ``train.run`` on the built-in ``shapes`` dataset, then validated with ``val.run``.

Reports per model: parameters, mAP50 and mAP50-95 (YOLOv5's 101-point COCO-style AP), VOC AP50 (PASCAL VOC
all-point AP at IoU 0.5, ``val.run(voc_ap=True)``), inference img/s (batch 1, fused, CPU, NMS excluded) and the
training wall time. Every model uses the same hyperparameters (data/hyps/hyp.scratch-low.yaml), seed, image size,
batch size and epochs; AutoAnchor is left on for the anchor-based heads and off for YOLOv1 (no anchors).

    $ python benchmarks/bench_legacy_heads.py                                    # all models, 30 epochs, 320 px
    $ python benchmarks/bench_legacy_heads.py --epochs 5 --imgsz 128 --train-images 64 --val-images 32  # smoke run

``--train-images/--val-images`` train on the first N images of each split (written to a temporary list file), for
small budgets. Outputs go to ``--project`` (a temporary folder by default); the table is printed at the end.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch

from utils.files import check_yaml, yaml_load, yaml_save
from utils.logging import LOGGER


@dataclass(frozen=True)
class ModelSpec:
    """One benchmark row: a model YAML, top-level overrides and row-argument overrides for its head."""

    cfg: str
    overrides: dict = field(default_factory=dict)
    head_args: Any = None
    autoanchor: bool = True


MODELS = {
    "yolov1": ModelSpec("yolov1-csp.yaml", autoanchor=False),
    "yolov3": ModelSpec("yolov3-csp-legacy.yaml"),
    "yolov3-darknet-loss": ModelSpec("yolov3-csp-legacy.yaml",
                                     head_args=["nc", "anchors", {"decode": "darknet", "loss": "darknet"}]),
    "yolov3-tiny": ModelSpec("yolov3-tiny-legacy.yaml", overrides={"width_multiple": 0.25}),
    "yolov5n": ModelSpec("yolov5n.yaml"),
}


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--data", default="shapes.yaml", help="dataset YAML (default: the built-in shapes set)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--train-images", type=int, default=0, help="use the first N train images (0 = all)")
    parser.add_argument("--val-images", type=int, default=0, help="use the first N val images (0 = all)")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    parser.add_argument("--speed-runs", type=int, default=20, help="timed batch-1 forward passes per model")
    parser.add_argument("--project", default="", help="run folder (default: a new temporary folder)")
    return parser.parse_args(argv)


def write_model_yaml(name: str, spec: ModelSpec, folder: Path) -> Path:
    """Write the YAML of one benchmark model (the shipped YAML plus this row's overrides) and return its path."""
    cfg = yaml_load(check_yaml(spec.cfg))
    cfg.update(spec.overrides)
    if spec.head_args is not None:
        cfg["head"][-1][3] = spec.head_args
    file = folder / f"{name}.yaml"
    yaml_save(file, cfg)
    return file


def write_subset_data(data: str, train_images: int, val_images: int, folder: Path) -> str:
    """Return a dataset YAML path whose splits are the first N images of ``data``'s (``data`` itself if N = 0)."""
    if not (train_images or val_images):
        return data
    from utils.data.dataset_yaml import check_dataset
    from utils.data.loaders import IMG_FORMATS

    info = check_dataset(data)
    subset = {"path": str(info["path"]), "names": info["names"]}
    for split, count in (("train", train_images), ("val", val_images)):
        folder_or_list = Path(info[split])
        files = sorted(p for p in folder_or_list.rglob("*") if p.suffix[1:].lower() in IMG_FORMATS)
        files = files[:count] if count else files
        list_file = folder / f"{split}.txt"
        list_file.write_text("".join(f"{p}\n" for p in files))
        subset[split] = str(list_file)
    file = folder / "data.yaml"
    yaml_save(file, subset)
    return str(file)


def train_one(name: str, cfg: Path, data: str, opt: argparse.Namespace, project: Path) -> tuple[Path, float]:
    """Train one model with ``train.run``; return (best.pt path, wall seconds)."""
    import train

    start = time.time()
    run = train.run(cfg=str(cfg), data=data, weights="", epochs=opt.epochs, imgsz=opt.imgsz,
                    batch_size=opt.batch_size, workers=opt.workers, noplots=True, project=str(project), name=name,
                    exist_ok=True, seed=0, noautoanchor=not MODELS[name].autoanchor)
    return Path(run.save_dir) / "weights" / "best.pt", time.time() - start


def evaluate(weights: Path, data: str, opt: argparse.Namespace) -> dict[str, float]:
    """Return mAP50, mAP50-95 (101-point) and VOC AP50 (all-point) of a checkpoint on the val split."""
    import val

    common = {"data": data, "weights": str(weights), "imgsz": opt.imgsz, "batch_size": opt.batch_size,
              "workers": opt.workers, "half": False, "plots": False, "project": str(weights.parents[1]),
              "exist_ok": True}
    coco = val.run(name="val", **common)[0]
    voc = val.run(name="val-voc", voc_ap=True, **common)[0]
    return {"mAP50": coco[2], "mAP50-95": coco[3], "VOC AP50": voc[2]}


def speed(weights: Path, imgsz: int, runs: int) -> tuple[int, float]:
    """Return (parameters, images per second) of the fused checkpoint at batch 1 (NMS excluded)."""
    from models.loading import load_model

    params = sum(p.numel() for p in load_model(weights, fuse=False).parameters())
    model = load_model(weights, fuse=True)
    image = torch.rand(1, 3, imgsz, imgsz)
    with torch.inference_mode():
        for _ in range(3):
            model(image)
        start = time.perf_counter()
        for _ in range(runs):
            model(image)
    return params, runs / (time.perf_counter() - start)


def format_table(rows: list[dict[str, Any]]) -> str:
    """Return the results as a Markdown table."""
    columns = ["model", "params", "mAP50", "mAP50-95", "VOC AP50", "img/s", "train s"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [row["model"], f"{row['params']:,}", f"{row['mAP50']:.4f}", f"{row['mAP50-95']:.4f}",
                 f"{row['VOC AP50']:.4f}", f"{row['img/s']:.1f}", f"{row['train s']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(opt: argparse.Namespace) -> list[dict[str, Any]]:
    if opt.threads:
        torch.set_num_threads(opt.threads)
    project = Path(opt.project) if opt.project else Path(tempfile.mkdtemp(prefix="bench_legacy_heads_"))
    project.mkdir(parents=True, exist_ok=True)
    data = write_subset_data(opt.data, opt.train_images, opt.val_images, project)
    rows = []
    for name in opt.models:
        cfg = write_model_yaml(name, MODELS[name], project)
        best, train_seconds = train_one(name, cfg, data, opt, project)
        params, images_per_second = speed(best, opt.imgsz, opt.speed_runs)
        rows.append({"model": name, "params": params, **evaluate(best, data, opt), "img/s": images_per_second,
                     "train s": train_seconds})
        LOGGER.info(f"\n{format_table(rows)}\n")
    print(f"\nlegacy heads: {opt.epochs} epochs, {opt.imgsz} px, batch {opt.batch_size}, data {opt.data} "
          f"(train images {opt.train_images or 'all'}, val images {opt.val_images or 'all'}), "
          f"{torch.get_num_threads()} CPU threads\n{format_table(rows)}")
    return rows


if __name__ == "__main__":
    main(parse_opt())
