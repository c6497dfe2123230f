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

from engine.predict_cli import build_predict_parser, parse_predict_args
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


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse detect.py's command line (``argv``, default ``sys.argv[1:]``); a single ``--imgsz`` value is square."""
    parser = build_predict_parser(PredictOptions(), "Find objects in images, videos, folders, cameras or streams "
                                                    "and save what was found")
    return parse_predict_args(parser, argv)


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
