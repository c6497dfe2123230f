"""Run a YOLOv5 model on images, videos, directories, globs, ``.txt`` lists, cameras and streams.

Usage:
    python detect.py --weights yolov5s.pt --source data/images        # a folder (or img.jpg, vid.mp4, 'dir/*.jpg')
    python detect.py --weights yolov5s.onnx --source video.mp4 --save-txt --save-conf
    python detect.py --weights yolov5s.torchscript --source 0          # camera 0 (clear error if there is none)

Outputs go to ``runs/detect/exp{N}``: annotated images (same file names), videos as ``.mp4``, ``labels/*.txt``
(``class x y w h [conf]``, normalised), ``predictions.csv`` and ``crops/<class>/``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from engine.predictor import PredictOptions, predict
from utils.logging import LOGGER
from utils.torch_utils import smart_inference_mode


@smart_inference_mode()
def run(weights: Any = ROOT / "yolov5s.pt", source: Any = ROOT / "data/images", data: Any = ROOT / "data/coco128.yaml",
        imgsz: Any = (640, 640), conf_thres: float = 0.25, iou_thres: float = 0.45, max_det: int = 1000,
        device: str = "", view_img: bool = False, save_txt: bool = False, save_format: int = 0,
        save_csv: bool = False, save_conf: bool = False, save_crop: bool = False, nosave: bool = False,
        classes: list[int] | None = None, agnostic_nms: bool = False, augment: bool = False,
        visualize: bool = False, update: bool = False, project: Any = ROOT / "runs/detect", name: str = "exp",
        exist_ok: bool = False, line_thickness: int = 3, hide_labels: bool = False, hide_conf: bool = False,
        half: bool = False, dnn: bool = False, vid_stride: int = 1, fp32: bool = False) -> Path:
    """Detect objects in ``source`` with ``weights`` and save the results; returns the run directory.

    The arguments are those of :class:`engine.predictor.PredictOptions`; the work is :func:`engine.predictor.predict`.
    """
    return predict(PredictOptions(**locals()))


def add_predict_arguments(parser: argparse.ArgumentParser) -> None:
    """Add detect.py's flags (source, model, NMS, outputs, precision) to ``parser``; track.py shares them."""
    add = parser.add_argument
    add("--weights", nargs="+", type=str, default=ROOT / "yolov5s.pt",
        help="model file: .pt, .torchscript or .onnx (several .pt files run as one ensemble)")
    add("--source", type=str, default=ROOT / "data/images",
        help="what to look at: an image or video file, a folder, a glob, a .txt list, a camera index, a stream URL "
             "or 'screen'")
    add("--data", type=str, default=ROOT / "data/coco128.yaml",
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
    add("--project", default=ROOT / "runs/detect", help="parent folder of the run folder")
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


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse detect.py's command line (``argv``, default ``sys.argv[1:]``); a single ``--imgsz`` value is square."""
    parser = argparse.ArgumentParser(description="Find objects in images, videos, folders, cameras or streams and "
                                                 "save what was found")
    add_predict_arguments(parser)
    opt = parser.parse_args(argv)
    opt.imgsz *= 2 if len(opt.imgsz) == 1 else 1
    return opt


def main(opt: argparse.Namespace, run_fn: Callable[..., Any] | None = None, script: str = "detect.py") -> None:
    """Run detect.py (or ``run_fn``, e.g. track.py's) with parsed options; a bad input ends the process with status 1
    and a one-line error naming ``script``."""
    try:
        (run_fn or run)(**vars(opt))
    except (FileNotFoundError, ValueError, ConnectionError, TimeoutError, ImportError) as e:
        LOGGER.error(f"{script}: error: {e}")
        sys.exit(1)


if __name__ == "__main__":
    main(parse_opt())
