"""Validate a trained YOLOv5 detection model on a detection dataset (upstream-compatible CLI).

Usage:
    python val.py --weights yolov5s.pt --data coco128.yaml --img 640
    python val.py --weights best.pt --data data.yaml --task test --verbose --save-json
    python val.py --weights a.pt b.pt --task study      # mAP and speed over image sizes 256..1536
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

FILE = Path(__file__).resolve()
ROOT = FILE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from engine import val_study
from engine.val_cli import build_val_parser
from engine.val_options import DEFAULT_PROJECT, ValOptions
from engine.val_study import STUDY_SIZES
from engine.validator import Validator, build_val_loader, model_stride
from utils.callbacks import Callbacks
from utils.data.dataset_yaml import check_dataset
from utils.files import check_yaml
from utils.logging import LOGGER, colorstr
from utils.metrics import process_batch  # noqa: F401  (upstream exposes val.process_batch)

Results = tuple[tuple, np.ndarray, tuple[float, float, float]]


def run(data: Any = ROOT / "data/coco128.yaml", weights: Any = None, batch_size: int = 32, imgsz: int = 640,
        conf_thres: float = 0.001, iou_thres: float = 0.6, max_det: int = 300, task: str = "val", device: str = "",
        workers: int = 8, single_cls: bool = False, augment: bool = False, verbose: bool = False,
        save_txt: bool = False, save_hybrid: bool = False, save_conf: bool = False, save_json: bool = False,
        project: Any = DEFAULT_PROJECT, name: str = "exp", exist_ok: bool = False, half: bool = True,
        dnn: bool = False, model: Any = None, dataloader: Any = None, save_dir: Path = Path(""),
        plots: bool = True, callbacks: Callbacks | None = None, compute_loss: Any = None,
        voc_ap: bool = False, fp32: bool = False) -> Results:
    """Validate and return ``((P, R, mAP50, mAP50-95, box, obj, cls losses), maps (nc,), (pre, inf, nms) ms/img)``.

    Upstream's keywords and defaults, plus ``voc_ap`` (VOC all-point AP instead of 101-point COCO AP) and ``fp32``
    (plain fp32 NCHW instead of the CPU bf16/channels_last fast path, see :mod:`utils.precision`). Without
    ``model``, ``weights`` are loaded and results go to a new ``project/name``; with it, ``model`` (left unchanged)
    is validated on ``dataloader`` (a rect loader over ``data`` when None) and results go to ``save_dir``.
    """
    options = ValOptions(batch_size=batch_size, imgsz=imgsz, conf_thres=conf_thres, iou_thres=iou_thres,
                         max_det=max_det, task=task, device=device, workers=workers, single_cls=single_cls,
                         augment=augment, verbose=verbose, save_txt=save_txt, save_hybrid=save_hybrid,
                         save_conf=save_conf, save_json=save_json, project=project, name=name, exist_ok=exist_ok,
                         half=half, dnn=dnn, plots=plots, voc_ap=voc_ap, fp32=fp32)
    if model is None:
        return Validator.from_weights(weights, options, data=data, callbacks=callbacks)()
    if dataloader is None:
        data = data if isinstance(data, dict) and "nc" in data else check_dataset(data)
        dataloader = build_val_loader(data, options, model_stride(model))
    return Validator(model, dataloader, options, data=data, save_dir=save_dir, callbacks=callbacks,
                     compute_loss=compute_loss)()


def parse_opt(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse val.py's command line (upstream's flags plus ``--voc-ap`` and ``--fp32``)."""
    parser = build_val_parser("Measure a detection model's precision, recall and mAP on a dataset split",
                              data=ROOT / "data/coco128.yaml", weights=ROOT / "yolov5s.pt", project=ROOT / "runs/val")
    opt = parser.parse_args(argv)
    opt.data = check_yaml(opt.data)
    opt.save_json |= str(opt.data).endswith("coco.yaml")
    opt.save_txt |= opt.save_hybrid
    LOGGER.info(f"{colorstr('val: ')}" + ", ".join(f"{k}={v}" for k, v in vars(opt).items()))
    return opt


def main(opt: argparse.Namespace) -> None:
    """Dispatch ``--task``: train/val/test validate once; speed times each model; study sweeps image sizes."""
    if opt.task in ("train", "val", "test"):
        if opt.conf_thres > 0.001:
            LOGGER.info(f"WARNING ⚠️ confidence threshold {opt.conf_thres} > 0.001 produces invalid results")
        if opt.save_hybrid:
            LOGGER.info("WARNING ⚠️ --save-hybrid will return high mAP from hybrid labels, not from predictions alone")
        run(**vars(opt))
        return
    import torch

    weights = opt.weights if isinstance(opt.weights, list) else [opt.weights]
    opt.half = torch.cuda.is_available() and opt.device != "cpu"
    if opt.task == "speed":
        opt.conf_thres, opt.iou_thres, opt.save_json = 0.25, 0.45, False
        for opt.weights in weights:
            run(**vars(opt), plots=False)
    elif opt.task == "study":
        run_study(opt, weights)
    else:
        raise ValueError(f"--task {opt.task} not in ('train', 'val', 'test', 'speed', 'study')")


def run_study(opt: argparse.Namespace, weights: Sequence[Any], sizes: Sequence[int] = STUDY_SIZES) -> Path:
    """``--task study``: validate each of ``weights`` at every image size (see :func:`engine.val_study.run_study`)."""
    return val_study.run_study(vars(opt), weights, validate=run, sizes=sizes)


if __name__ == "__main__":
    main(parse_opt())
