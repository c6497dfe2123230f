"""Experiment: does autoencoder backbone pretraining help detection on the built-in dataset?

Arms, each followed by the same detection training (train.py: same cfg, data, hyp, epochs, image size, batch size
and seed):

- ``scratch``: random initialisation;
- ``ae_skips`` / ``ae_noskips``: backbone pretrained with ``extensions.pretrain`` (additive skips / bottleneck only)
  on the training images, then transferred;
- ``upstream``: backbone transferred from a trained detector, the upstream ``yolov5n-trained.pt`` fixture (10
  other classes; only its backbone rows are used), when the file exists and ``--cfg`` is yolov5n-shaped.

Detection runs call ``train.main`` with a fresh ``Callbacks`` each (the default instance of ``train.main`` is shared
between calls in one process, so earlier runs' loggers would keep writing). The backbone reaches the detector
through ``backbone_weights=`` when train.py has that option, else through the documented fallback
``--weights BACKBONE_ONLY_FILE --cfg CFG`` (a bare ``model.{i}.*`` state dict:
train.py copies exactly the backbone tensors). The script prints which one it used.

Printed per arm: pretraining wall time and best autoencoder val loss, detection wall time, final-epoch mAP50,
mAP50-95 and validation loss (box + obj + cls, a convergence signal while mAP is still near zero) from
``results.csv``, and the best mAP50-95 over the epochs. A markdown table is also written to ``PROJECT/results.md``.

Usage::

    python benchmarks/bench_pretrain.py --threads 1      # the README run: yolov5n, 160 px, AE 4 epochs, det 8 epochs
    python benchmarks/bench_pretrain.py --imgsz 256 --pretrain-epochs 10 --det-epochs 20
    python benchmarks/bench_pretrain.py --pretrain-epochs 12 --pretrain-lr 2e-3 --pretrain-imgsz 128   # longer AE
    python benchmarks/bench_pretrain.py --arms scratch ae_skips --det-epochs 3      # a subset of arms
    python benchmarks/bench_pretrain.py --arms --extra long=runs/pretrain/exp/weights/best.pt   # your own backbone
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch

from utils.files import yaml_save
from utils.logging import LOGGER

FIXTURE = ROOT.parent / "shared" / "fixtures" / "upstream" / "yolov5n-trained.pt"
ARMS = ("scratch", "ae_skips", "ae_noskips", "upstream")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cfg", default="yolov5n.yaml", help="detection model YAML (its backbone is pretrained)")
    p.add_argument("--data", default=str(ROOT / "data" / "shapes.yaml"), help="dataset YAML")
    p.add_argument("--imgsz", type=int, default=160, help="detection image size (and pretraining unless given)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--pretrain-epochs", type=int, default=4)
    p.add_argument("--pretrain-lr", type=float, default=1e-3, help="autoencoder Adam learning rate")
    p.add_argument("--pretrain-imgsz", type=int, default=0, help="autoencoder image size (0 = --imgsz)")
    p.add_argument("--det-epochs", type=int, default=8)
    p.add_argument("--train-images", type=int, default=0, help="first N train images (0 = all)")
    p.add_argument("--val-images", type=int, default=0, help="first N val images (0 = all)")
    p.add_argument("--arms", nargs="*", default=list(ARMS), choices=ARMS)
    p.add_argument("--extra", nargs="*", default=[], metavar="NAME=FILE",
                   help="more arms from existing backbone files or pretrainer checkpoints (e.g. longer pretraining)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch default)")
    p.add_argument("--fixture", default=str(FIXTURE), help="trained detector for the 'upstream' arm")
    p.add_argument("--project", default=str(ROOT / "runs" / "bench_pretrain"))
    return p.parse_args(argv)


def _first_images(split: str | list, count: int) -> list[str]:
    from utils.data.paths import list_image_files

    files = list_image_files(split)
    return files[:count] if count else files


def subset_dataset(data: str, train_images: int, val_images: int, folder: Path) -> str:
    """Write ``folder/data.yaml`` over the first N train/val images (list files), or return ``data`` unchanged."""
    from utils.data.dataset_yaml import check_dataset

    info = check_dataset(data)
    if not train_images and not val_images:
        return data
    folder.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", train_images), ("val", val_images)):
        (folder / f"{split}.txt").write_text("\n".join(_first_images(info[split], count)) + "\n")
    out = folder / "data.yaml"
    yaml_save(out, {"path": str(folder), "train": "train.txt", "val": "val.txt", "names": info["names"]})
    return str(out)


def pretrain_backbone(args: argparse.Namespace, data: str, skips: bool, name: str) -> tuple[Path, float, float]:
    """Pretrain the autoencoder; returns (backbone-only file, wall seconds, best val loss)."""
    from extensions import pretrain

    t0 = time.time()
    opt = pretrain.run(cfg=args.cfg, data=data, epochs=args.pretrain_epochs, imgsz=args.pretrain_imgsz or args.imgsz,
                       lr=args.pretrain_lr, batch_size=args.batch_size, skips=skips, workers=args.workers,
                       project=args.project, name=name, exist_ok=True, save_backbone=True, device="cpu")
    return Path(opt.save_dir) / "weights" / "backbone.pt", time.time() - t0, opt.best_loss


def upstream_backbone(args: argparse.Namespace) -> Path | None:
    """Export the fixture detector's backbone rows as a backbone-only file; None when unusable."""
    from extensions.autoencoder.export import export_backbone

    if not Path(args.fixture).is_file():
        LOGGER.warning(f"upstream arm skipped: {args.fixture} not found")
        return None
    return export_backbone(args.fixture, Path(args.project) / "upstream_backbone.pt")


def detection_run(args: argparse.Namespace, data: str, backbone: Path | None, name: str) -> dict:
    """Train the detector (scratch when ``backbone`` is None); returns timings and metrics from results.csv."""
    import train
    from engine.train_options import TrainOptions
    from utils.callbacks import Callbacks

    kwargs = dict(cfg=args.cfg, data=data, epochs=args.det_epochs, imgsz=args.imgsz, batch_size=args.batch_size,
                  workers=args.workers, project=args.project, name=f"det_{name}", exist_ok=True, noplots=True,
                  seed=0, device="cpu", weights="")
    key = "-"
    if backbone is not None:
        key = "backbone_weights" if "backbone_weights" in TrainOptions.field_names() else "weights"
        kwargs[key] = str(backbone)
        LOGGER.info(f"{name}: backbone passed to train.run as {key}={backbone}")
    opt = train.build_parser().parse_args([])
    TrainOptions.from_dict({**vars(opt), **kwargs})  # validates the names, as train.run does
    vars(opt).update(kwargs)
    t0 = time.time()
    train.main(opt, Callbacks())  # fresh callbacks: train.main's default instance is shared between runs
    return {"det_s": time.time() - t0, **summarize_detection(Path(opt.save_dir)), "via": key}


def summarize_detection(save_dir: Path) -> dict:
    """Final-epoch mAP50, mAP50-95 and val loss (box + obj + cls), and the best mAP50-95, from results.csv."""
    from utils.plotting.results import read_csv_table

    header, values = read_csv_table(save_dir / "results.csv")
    column = {name: values[:, header.index(name)] for name in header}
    val_loss = column["val/box_loss"] + column["val/obj_loss"] + column["val/cls_loss"]
    return {"map50": float(column["metrics/mAP_0.5"][-1]), "map": float(column["metrics/mAP_0.5:0.95"][-1]),
            "best_map": float(column["metrics/mAP_0.5:0.95"].max()), "val_loss": float(val_loss[-1])}


def report(rows: dict, args: argparse.Namespace, project: Path) -> str:
    lines = [f"cfg {args.cfg}, {args.imgsz} px, batch {args.batch_size}, pretrain {args.pretrain_epochs} epochs at "
             f"{args.pretrain_imgsz or args.imgsz} px lr {args.pretrain_lr}, detection {args.det_epochs} epochs, "
             f"train images {args.train_images or 'all'}, val images "
             f"{args.val_images or 'all'}, torch threads {torch.get_num_threads()}",
             "", "| arm | pretrain s | AE best val loss | detection s | mAP50 | mAP50-95 | best mAP50-95 | "
                 "det val loss | via |",
             "|---|---|---|---|---|---|---|---|---|"]
    for arm, r in rows.items():
        lines.append(f"| {arm} | {r.get('pre_s', 0):.0f} | {r.get('ae_loss', float('nan')):.4f} | {r['det_s']:.0f} | "
                     f"{r['map50']:.4f} | {r['map']:.4f} | {r['best_map']:.4f} | {r['val_loss']:.4f} | "
                     f"{r['via']} |")
    text = "\n".join(lines)
    (project / "results.md").write_text(text + "\n")
    return text


def main(args: argparse.Namespace) -> None:
    from extensions.autoencoder.export import export_backbone

    if args.threads:
        torch.set_num_threads(args.threads)
    project = Path(args.project)
    data = subset_dataset(args.data, args.train_images, args.val_images, project / "data")
    rows: dict = {}
    for arm in args.arms:
        backbone, extra = None, {}
        if arm in ("ae_skips", "ae_noskips"):
            backbone, pre_s, ae_loss = pretrain_backbone(args, data, arm == "ae_skips", f"pre_{arm}")
            extra = {"pre_s": pre_s, "ae_loss": ae_loss}
        elif arm == "upstream":
            backbone = upstream_backbone(args)
            if backbone is None:
                continue
        rows[arm] = {**detection_run(args, data, backbone, arm), **extra}
        LOGGER.info(f"{arm}: {rows[arm]}")
    for item in args.extra:
        name, _, file = item.partition("=")
        backbone = export_backbone(file, project / f"{name}_backbone.pt")
        rows[name] = detection_run(args, data, backbone, name)
    print(report(rows, args, project))


if __name__ == "__main__":
    main(parse_args())
