"""Run a YOLOv5 segmentation model on images, videos, folders, globs, ``.txt`` lists, cameras and streams.

Usage:
    python segment/predict.py --weights yolov5s-seg.pt --source data/images       # a local checkpoint
    python segment/predict.py --weights best.onnx --source video.mp4 --save-txt --retina-masks
    python segment/predict.py --weights best.pt --source 0                        # camera 0

Outputs go to ``runs/predict-seg/exp{N}``: images and ``.mp4`` videos with masks and boxes drawn,
``labels/*.txt`` with one polygon per instance (``class x1 y1 x2 y2 ... [conf]``, normalised), ``crops/<class>/``.
Nothing is downloaded: ``--weights`` must be a local file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from engine.predict_cli import build_predict_parser, parse_predict_args
from engine.predictor import predict
from engine.segment_options import DEFAULT_SEG_DATA, SegPredictOptions
from utils.logging import LOGGER
from utils.torch_utils import smart_inference_mode


@smart_inference_mode()
def run(weights: Any = ROOT / "yolov5s-seg.pt", source: Any = ROOT / "data/images", data: Any = DEFAULT_SEG_DATA,
        imgsz: Any = (640, 640), conf_thres: float = 0.25, iou_thres: float = 0.45, max_det: int = 1000,
        device: str = "", view_img: bool = False, save_txt: bool = False, save_format: int = 0,
        save_csv: bool = False, save_conf: bool = False, save_crop: bool = False, nosave: bool = False,
        classes: list[int] | None = None, agnostic_nms: bool = False, augment: bool = False,
        visualize: bool = False, update: bool = False, project: Any = ROOT / "runs/predict-seg", name: str = "exp",
        exist_ok: bool = False, line_thickness: int = 3, hide_labels: bool = False, hide_conf: bool = False,
        half: bool = False, dnn: bool = False, vid_stride: int = 1, retina_masks: bool = False,
        fp32: bool = False) -> Path:
    """Segment instances in ``source`` with ``weights`` and save the results; returns the run directory.

    The arguments are upstream's ``segment/predict.run`` keywords plus detect.py's ``save_format``/``save_csv`` and
    ``fp32`` (see
    :class:`engine.segment_options.SegPredictOptions`); the work is :func:`engine.predictor.predict` (the predictor
    adds masks for a segmentation model).
    """
    return predict(SegPredictOptions(**locals()))


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse segment/predict.py's command line (``argv``, default ``sys.argv[1:]``); one ``--imgsz`` is square."""
    parser = build_predict_parser(SegPredictOptions(), "Find and outline object instances in images, videos, "
                                                       "folders, cameras or streams and save what was found")
    return parse_predict_args(parser, argv)


def main(opt: argparse.Namespace) -> None:
    """Run segment/predict.py with parsed options; a bad input ends the process with status 1 and a one-line error."""
    try:
        run(**vars(opt))
    except (FileNotFoundError, ValueError, ConnectionError, TimeoutError, ImportError) as e:
        LOGGER.error(f"segment/predict.py: error: {e}")
        sys.exit(1)


if __name__ == "__main__":
    main(parse_opt())
