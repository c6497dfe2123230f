"""Validate a YOLOv5 instance-segmentation model: box and mask P, R, mAP50, mAP50-95 (upstream ``segment/val.py``).

Usage:
    python segment/val.py --weights yolov5s-seg.pt --data coco128-seg.yaml --img 640
    python segment/val.py --weights runs/train-seg/exp/weights/best.pt --data data/shapes-seg.yaml --img 320
    python segment/val.py --weights best.onnx --data my-seg.yaml --save-json     # COCO RLE masks + pycocotools

Nothing is downloaded: ``--weights`` must be a local file (default ``yolov5s-seg.pt`` in the repository root) and the
default ``--data`` is the built-in ``shapes-seg`` dataset (generated on first use).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from engine.segment_options import DEFAULT_SEG_DATA, DEFAULT_SEG_VAL_PROJECT, SegValOptions
from engine.segment_validator import SegmentValidator, build_segment_val_loader
from engine.val_cli import build_val_parser
from engine.validator import model_stride
from utils.callbacks import Callbacks
from utils.data.dataset_yaml import check_dataset
from utils.files import check_yaml
from utils.logging import LOGGER, colorstr

Results = tuple[tuple, np.ndarray, tuple[float, float, float]]


def run(data: Any = DEFAULT_SEG_DATA, weights: Any = None, batch_size: int = 32, imgsz: int = 640,
        conf_thres: float = 0.001, iou_thres: float = 0.6, max_det: int = 300, task: str = "val", device: str = "",
        workers: int = 8, single_cls: bool = False, augment: bool = False, verbose: bool = False,
        save_txt: bool = False, save_hybrid: bool = False, save_conf: bool = False, save_json: bool = False,
        project: Any = DEFAULT_SEG_VAL_PROJECT, name: str = "exp", exist_ok: bool = False, half: bool = True,
        dnn: bool = False, model: Any = None, dataloader: Any = None, save_dir: Path = Path(""),
        plots: bool = True, overlap: bool = False, mask_downsample_ratio: int = 1, compute_loss: Any = None,
        callbacks: Callbacks | None = None, fp32: bool = False) -> Results:
    """Validate and return ``((box P, R, mAP50, mAP50-95, mask P, R, mAP50, mAP50-95, box, seg, obj, cls losses),
    maps (nc,), (pre, inf, nms) ms/img)``.

    Upstream's keywords and defaults (``overlap``/``mask_downsample_ratio``: the ground-truth mask format of
    ``dataloader``), plus ``fp32``. Without ``model``, ``weights`` are loaded and results go to a new
    ``project/name``; with it, ``model`` (left unchanged) is validated on ``dataloader`` and results go to
    ``save_dir``.
    """
    options = SegValOptions(batch_size=batch_size, imgsz=imgsz, conf_thres=conf_thres, iou_thres=iou_thres,
                            max_det=max_det, task=task, device=device, workers=workers, single_cls=single_cls,
                            augment=augment, verbose=verbose, save_txt=save_txt, save_hybrid=save_hybrid,
                            save_conf=save_conf, save_json=save_json, project=project, name=name, exist_ok=exist_ok,
                            half=half, dnn=dnn, plots=plots, fp32=fp32, overlap=overlap,
                            mask_downsample_ratio=mask_downsample_ratio)
    if model is None:
        return SegmentValidator.from_weights(weights, options, data=data, callbacks=callbacks)()
    if dataloader is None:
        data = data if isinstance(data, dict) and "nc" in data else check_dataset(data)
        dataloader = build_segment_val_loader(data, options, model_stride(model))
    return SegmentValidator(model, dataloader, options, data=data, save_dir=save_dir, callbacks=callbacks,
                            compute_loss=compute_loss)()


def parse_opt(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse segment/val.py's command line (upstream's flags plus ``--fp32``)."""
    parser = build_val_parser("Measure a segmentation model's box and mask precision, recall and mAP on a dataset "
                              "split", data=DEFAULT_SEG_DATA, weights=ROOT / "yolov5s-seg.pt",
                              project=DEFAULT_SEG_VAL_PROJECT, voc_ap=False,
                              task_help="split to score (train, val, test), or speed for timing")
    opt = parser.parse_args(argv)
    opt.data = check_yaml(opt.data)
    opt.save_txt |= opt.save_hybrid
    LOGGER.info(f"{colorstr('segment/val: ')}" + ", ".join(f"{k}={v}" for k, v in vars(opt).items()))
    return opt


def main(opt: argparse.Namespace) -> None:
    """Dispatch ``--task``: train/val/test validate once; speed times each model at conf 0.25, IoU 0.45."""
    if opt.task in ("train", "val", "test"):
        if opt.conf_thres > 0.001:
            LOGGER.info(f"WARNING ⚠️ confidence threshold {opt.conf_thres} > 0.001 produces invalid results")
        run(**vars(opt))
        return
    if opt.task != "speed":
        raise ValueError(f"--task {opt.task} not in ('train', 'val', 'test', 'speed')")
    weights = opt.weights if isinstance(opt.weights, list) else [opt.weights]
    opt.conf_thres, opt.iou_thres, opt.save_json = 0.25, 0.45, False
    for opt.weights in weights:
        run(**vars(opt), plots=False)


if __name__ == "__main__":
    try:
        main(parse_opt())
    except (FileNotFoundError, ValueError) as error:
        LOGGER.error(f"{colorstr('red', 'segment/val: error:')} {error}")
        sys.exit(1)
