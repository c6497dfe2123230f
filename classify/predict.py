"""Classify images, folders, videos, cameras and streams (upstream ``classify/predict.py`` interface).

    $ python classify/predict.py --weights runs/train-cls/exp/weights/best.pt --source data/images
    $ python classify/predict.py --weights best.pt --source video.mp4 --save-txt --img 64

Logs the top-5 classes with probabilities per image (``image 1/2 a.jpg: 224x224 star 0.91, ring 0.05, ...``) and
writes annotated images/videos to runs/predict-cls/exp{N} (``labels/*.txt`` with ``--save-txt``: ``prob name``
lines; ``predictions.csv`` with ``--save-csv``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from engine.classify_predictor import DEFAULT_PROJECT, classify_predict_options, predict_classes
from utils.logging import LOGGER, colorstr


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser with upstream's ``classify/predict.py`` flags (plus ``--save-csv``, ``--fp32``)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", nargs="+", type=str, default=str(ROOT / "yolov5s-cls.pt"), help="model path")
    p.add_argument("--source", type=str, default=str(ROOT / "data/images"),
                   help="file/dir/URL/glob/screen/0(webcam)")
    p.add_argument("--data", type=str, default=None, help="(optional) dataset YAML for class names")
    p.add_argument("--imgsz", "--img", "--img-size", nargs="+", type=int, default=[224], help="inference size h,w")
    p.add_argument("--device", default="", help="cuda device, i.e. 0 or 0,1,2,3 or cpu")
    p.add_argument("--view-img", action="store_true", help="show results")
    p.add_argument("--save-txt", action="store_true", help="save results to *.txt")
    p.add_argument("--save-csv", action="store_true", help="save results in CSV format")
    p.add_argument("--nosave", action="store_true", help="do not save images/videos")
    p.add_argument("--augment", action="store_true", help="accepted for compatibility (no classification TTA)")
    p.add_argument("--visualize", action="store_true", help="accepted for compatibility")
    p.add_argument("--update", action="store_true", help="accepted for compatibility")
    p.add_argument("--project", default=str(DEFAULT_PROJECT), help="save results to project/name")
    p.add_argument("--name", default="exp", help="save results to project/name")
    p.add_argument("--exist-ok", action="store_true", help="existing project/name ok, do not increment")
    p.add_argument("--half", action="store_true", help="use FP16 half-precision inference (CUDA)")
    p.add_argument("--dnn", action="store_true", help="use OpenCV DNN for ONNX inference")
    p.add_argument("--vid-stride", type=int, default=1, help="video frame-rate stride")
    p.add_argument("--fp32", action="store_true", help="plain fp32 NCHW instead of the CPU fast path")
    return p


def run(weights: Any = ROOT / "yolov5s-cls.pt", source: Any = ROOT / "data/images", data: Any = None,
        imgsz: Any = (224, 224), device: str = "", view_img: bool = False, save_txt: bool = False,
        save_csv: bool = False, nosave: bool = False, augment: bool = False, visualize: bool = False,
        update: bool = False, project: Any = DEFAULT_PROJECT, name: str = "exp", exist_ok: bool = False,
        half: bool = False, dnn: bool = False, vid_stride: int = 1, fp32: bool = False) -> Path:
    """Classify ``source`` with ``weights``; returns the run folder (upstream's keywords, plus ``save_csv``,
    ``fp32``)."""
    weights = weights[0] if isinstance(weights, (list, tuple)) else weights
    imgsz = list(imgsz) * 2 if isinstance(imgsz, (list, tuple)) and len(imgsz) == 1 else imgsz
    options = classify_predict_options(weights=weights, source=source, data=data, imgsz=imgsz, device=device,
                                       view_img=view_img, save_txt=save_txt, save_csv=save_csv, nosave=nosave,
                                       project=project, name=name, exist_ok=exist_ok, half=half, dnn=dnn,
                                       vid_stride=vid_stride, fp32=fp32)
    return predict_classes(options)


def parse_opt() -> argparse.Namespace:
    """Parse the flags from ``sys.argv``."""
    return build_parser().parse_args()


def main(opt: argparse.Namespace) -> Path:
    """Classify with the options in ``opt``."""
    LOGGER.info(colorstr("classify/predict: ") + ", ".join(f"{k}={v}" for k, v in vars(opt).items()))
    return run(**vars(opt))


if __name__ == "__main__":
    try:
        main(parse_opt())
    except KeyboardInterrupt:
        sys.exit(130)
    except (FileNotFoundError, ValueError) as error:
        LOGGER.error(f"{colorstr('red', 'classify/predict: error:')} {error}")
        sys.exit(1)
