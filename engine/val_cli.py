"""The command line of ``val.py`` and ``segment/val.py``: upstream's validation flags with each script's defaults."""

from __future__ import annotations

import argparse
from typing import Any


def build_val_parser(description: str, data: Any, weights: Any, project: Any, voc_ap: bool = True,
                     task_help: str = "split to score (train, val, test), or speed / study for timing sweeps"
                     ) -> argparse.ArgumentParser:
    """Return the validation parser; ``data``/``weights``/``project`` are the defaults, ``voc_ap`` adds
    ``--voc-ap``, ``task_help`` is the ``--task`` help."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data", type=str, default=data,
                        help="data YAML naming the splits and classes")
    parser.add_argument("--weights", nargs="+", type=str, default=weights,
                        help="one or more weight files (.pt, .torchscript, .onnx)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per validation batch")
    parser.add_argument("--imgsz", "--img", "--img-size", type=int, default=640,
                        help="long side of the network input, in pixels")
    parser.add_argument("--conf-thres", type=float, default=0.001,
                        help="drop detections scoring below this before NMS")
    parser.add_argument("--iou-thres", type=float, default=0.6, help="overlap above which NMS suppresses a box")
    parser.add_argument("--max-det", type=int, default=300, help="keep at most this many detections per image")
    parser.add_argument("--task", default="val", help=task_help)
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
    parser.add_argument("--project", default=project, help="parent folder of the run folder")
    parser.add_argument("--name", default="exp", help="run folder name inside --project")
    parser.add_argument("--exist-ok", action="store_true", help="reuse an existing run folder instead of a new one")
    parser.add_argument("--half", action="store_true", help="fp16 weights and inputs (honoured on CUDA only)")
    parser.add_argument("--dnn", action="store_true", help="run .onnx files through OpenCV's DNN module")
    if voc_ap:
        parser.add_argument("--voc-ap", action="store_true",
                            help="mAP50 column as PASCAL VOC all-point AP rather than 101-point AP")
    parser.add_argument("--fp32", action="store_true", help="plain fp32 NCHW inference without the CPU bf16 / "
                        "channels_last path (same as env YOLOV5_FP32=1)")
    return parser
