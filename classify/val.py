"""Validate a classification checkpoint on an ImageNet-style dataset (upstream ``classify/val.py`` interface).

    $ python classify/val.py --weights runs/train-cls/exp/weights/best.pt --data data/shapes-cls.yaml --img 64
    $ python classify/val.py --weights yolov5s-cls.pt --data path/to/imagenet --img 224 --verbose

Prints upstream's table (``Class Images top1_acc top5_acc``; per class with ``--verbose``) and returns
``(top1, top5, loss)``. The checkpoint is read with the safe loader; its class names must match the class folders.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from engine.classify_setup import DEFAULT_DATA, ClassifyError
from utils.data.classify import ClassificationDataError
from utils.logging import LOGGER, colorstr

DEFAULT_PROJECT = ROOT / "runs" / "val-cls"


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser with upstream's ``classify/val.py`` flags (plus ``--fp32``)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=str, default=DEFAULT_DATA, help="dataset folder, YAML or name (val/ or test/ split)")
    p.add_argument("--weights", nargs="+", type=str, default=str(ROOT / "yolov5s-cls.pt"), help="model.pt path")
    p.add_argument("--batch-size", type=int, default=128, help="batch size")
    p.add_argument("--imgsz", "--img", "--img-size", type=int, default=224, help="inference size (pixels)")
    p.add_argument("--device", default="", help="cuda device, i.e. 0 or 0,1,2,3 or cpu")
    p.add_argument("--workers", type=int, default=8, help="max dataloader workers")
    p.add_argument("--verbose", nargs="?", const=True, default=True, help="per-class accuracy")
    p.add_argument("--project", default=str(DEFAULT_PROJECT), help="save to project/name")
    p.add_argument("--name", default="exp", help="save to project/name")
    p.add_argument("--exist-ok", action="store_true", help="existing project/name ok, do not increment")
    p.add_argument("--half", action="store_true", help="use FP16 half-precision inference (CUDA)")
    p.add_argument("--dnn", action="store_true", help="accepted for compatibility (.pt files only here)")
    p.add_argument("--fp32", action="store_true", help="plain fp32 NCHW instead of the CPU fast path")
    return p


def run(data: Any = DEFAULT_DATA, weights: Any = ROOT / "yolov5s-cls.pt", batch_size: int = 128, imgsz: int = 224,
        device: str = "", workers: int = 8, verbose: bool = False, project: Any = DEFAULT_PROJECT, name: str = "exp",
        exist_ok: bool = False, half: bool = False, dnn: bool = False, fp32: bool = False) -> tuple[float, ...]:
    """Validate ``weights`` on ``data``; returns upstream's ``(top1, top5, loss)`` (accuracies as fractions)."""
    from engine.classify_run import validate_weights

    weights = weights[0] if isinstance(weights, (list, tuple)) else weights
    metrics = validate_weights(data, weights, batch_size, imgsz, device, workers, bool(verbose), project, name,
                               exist_ok, half, fp32)
    return metrics.as_tuple()


def parse_opt() -> argparse.Namespace:
    """Parse the flags from ``sys.argv``."""
    return build_parser().parse_args()


def main(opt: argparse.Namespace) -> tuple[float, ...]:
    """Validate with the options in ``opt``."""
    LOGGER.info(colorstr("classify/val: ") + ", ".join(f"{k}={v}" for k, v in vars(opt).items()))
    return run(**vars(opt))


if __name__ == "__main__":
    try:
        main(parse_opt())
    except KeyboardInterrupt:
        sys.exit(130)
    except (ClassifyError, ClassificationDataError, FileNotFoundError, ValueError) as error:
        LOGGER.error(f"{colorstr('red', 'classify/val: error:')} {error}")
        sys.exit(1)
