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
    parser = argparse.ArgumentParser(description="Measure a detection model's precision, recall and mAP on a "
                                                 "dataset split")
    parser.add_argument("--data", type=str, default=ROOT / "data/coco128.yaml",
                        help="data YAML naming the splits and classes")
    parser.add_argument("--weights", nargs="+", type=str, default=ROOT / "yolov5s.pt",
                        help="one or more weight files (.pt, .torchscript, .onnx)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per validation batch")
    parser.add_argument("--imgsz", "--img", "--img-size", type=int, default=640,
                        help="long side of the network input, in pixels")
    parser.add_argument("--conf-thres", type=float, default=0.001,
                        help="drop detections scoring below this before NMS")
    parser.add_argument("--iou-thres", type=float, default=0.6, help="overlap above which NMS suppresses a box")
    parser.add_argument("--max-det", type=int, default=300, help="keep at most this many detections per image")
    parser.add_argument("--task", default="val",
                        help="split to score (train, val, test), or speed / study for timing sweeps")
    parser.add_argument("--device", default="", help="where to run: a CUDA index such as 0 or 0,1, or cpu")
    parser.add_argument("--workers", type=int, default=8, help="upper bound on dataloader worker processes")
    parser.add_argument("--single-cls", action="store_true", help="score every class as one class")
    parser.add_argument("--augment", action="store_true", help="test-time augmentation (flips and rescales)")
    parser.add_argument("--verbose", action="store_true", help="print one results row per class")
    parser.add_argument("--save-txt", action="store_true", help="write each image's detections as a label file")
    parser.add_argument("--save-hybrid", action="store_true",
                        help="write label files that merge ground truth into the detections")
    parser.add_argument("--save-conf", action="store_true", help="append the confidence to each --save-txt row")
    parser.add_argument("--save-json", action="store_true", help="write the detections as COCO results JSON")
    parser.add_argument("--project", default=ROOT / "runs/val", help="parent folder of the run folder")
    parser.add_argument("--name", default="exp", help="run folder name inside --project")
    parser.add_argument("--exist-ok", action="store_true", help="reuse an existing run folder instead of a new one")
    parser.add_argument("--half", action="store_true", help="fp16 weights and inputs (honoured on CUDA only)")
    parser.add_argument("--dnn", action="store_true", help="run .onnx files through OpenCV's DNN module")
    parser.add_argument("--voc-ap", action="store_true",
                        help="mAP50 column as PASCAL VOC all-point AP rather than 101-point AP")
    parser.add_argument("--fp32", action="store_true", help="plain fp32 NCHW inference without the CPU bf16 / "
                        "channels_last path (same as env YOLOV5_FP32=1)")
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
