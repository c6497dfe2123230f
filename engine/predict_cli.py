"""The command line of ``detect.py`` and ``segment/predict.py``: upstream's flags, defaults from the options object.

``build_predict_parser(defaults)`` takes a :class:`engine.predictor.PredictOptions` (or the segmentation subclass,
which adds ``--retina-masks``); a single ``--imgsz`` value means a square input (:func:`parse_predict_args`).
"""

from __future__ import annotations

import argparse

from engine.predictor import PredictOptions


def build_predict_parser(defaults: PredictOptions, description: str) -> argparse.ArgumentParser:
    """Return the parser with every prediction flag; ``defaults`` gives the default values."""
    parser = argparse.ArgumentParser(description=description)
    add = parser.add_argument
    add("--weights", nargs="+", type=str, default=defaults.weights,
        help="model file: .pt, .torchscript or .onnx (several .pt files run as one ensemble); it must exist "
             "locally, nothing is downloaded")
    add("--source", type=str, default=defaults.source,
        help="what to look at: an image or video file, a folder, a glob, a .txt list, a camera index, a stream URL "
             "or 'screen'")
    add("--data", type=str, default=defaults.data,
        help="dataset YAML whose class names are used when the model has none")
    add("--imgsz", "--img", "--img-size", nargs="+", type=int, default=[640],
        help="network input height and width in pixels (one value: square)")
    add("--conf-thres", type=float, default=0.25, help="drop detections scoring at or below this")
    add("--iou-thres", type=float, default=0.45, help="overlap (IoU) above which NMS removes the weaker box")
    add("--max-det", type=int, default=1000, help="keep at most this many detections in each image")
    add("--device", default="", help="where to run: 'cpu', a CUDA index such as 0, or a list like 0,1")
    add("--view-img", action="store_true", help="open a window with the annotated frames")
    add("--save-txt", action="store_true", help="write the boxes of each image to labels/<name>.txt")
    add("--save-format", type=int, default=0,
        help="box layout in the label files: 0 centre x, y, width, height; 1 corners x1, y1, x2, y2 (both 0-1)")
    add("--save-csv", action="store_true", help="append one row per detection to predictions.csv")
    add("--save-conf", action="store_true", help="end each --save-txt line with the detection's score")
    add("--save-crop", action="store_true", help="cut each detected box out into crops/<class>/")
    add("--nosave", action="store_true", help="write no annotated images or videos")
    add("--classes", nargs="+", type=int, help="keep only these class ids, e.g. --classes 0 2")
    add("--agnostic-nms", action="store_true", help="let boxes of different classes suppress each other")
    add("--augment", action="store_true", help="test-time augmentation (flipped and rescaled passes; .pt only)")
    add("--visualize", action="store_true", help="save feature-map pictures of every stage (.pt only)")
    add("--update", action="store_true", help="put copies of the .pt weights without optimizer state in the run folder")
    add("--project", default=defaults.project, help="parent folder of the run folder")
    add("--name", default="exp", help="run folder name inside --project (numbered when it exists)")
    add("--exist-ok", action="store_true", help="reuse an existing run folder instead of numbering a new one")
    add("--line-thickness", default=3, type=int, help="box outline width in pixels")
    add("--hide-labels", default=False, action="store_true", help="draw boxes without the class name tab")
    add("--hide-conf", default=False, action="store_true", help="leave the score out of the class name tab")
    add("--half", action="store_true", help="half-precision (FP16) inference, CUDA only")
    add("--dnn", action="store_true", help="run .onnx files with OpenCV's DNN module instead of onnxruntime")
    add("--vid-stride", type=int, default=1, help="process every n-th video frame")
    add("--fp32", action="store_true",
        help="plain fp32 NCHW inference, skipping the CPU bf16/channels_last fast path (or set YOLOV5_FP32=1)")
    if hasattr(defaults, "retina_masks"):
        add("--retina-masks", action="store_true", help="segmentation: compute the masks at the original image size")
    return parser


def parse_predict_args(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """Parse ``argv`` (default ``sys.argv[1:]``); one ``--imgsz`` value becomes a square [n, n]."""
    opt = parser.parse_args(argv)
    opt.imgsz *= 2 if len(opt.imgsz) == 1 else 1
    return opt
