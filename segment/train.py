"""Train a YOLOv5 instance-segmentation model on a YOLO polygon dataset (upstream ``segment/train.py`` interface).

With no arguments it trains yolov5n-seg from scratch at 320 px on the built-in ``shapes-seg`` dataset (generated
locally on first use; nothing is downloaded):

    $ python segment/train.py
    $ python segment/train.py --data coco128-seg.yaml --weights yolov5s-seg.pt --img 640   # a local checkpoint
    $ python segment/train.py --data my-seg.yaml --cfg yolov5s-seg.yaml --weights '' --mask-ratio 4 --no-overlap
    $ python segment/train.py --resume                                 # continue the newest interrupted run

Every detection flag of ``train.py`` applies, plus ``--mask-ratio`` and ``--no-overlap``. Outputs go to
runs/train-seg/exp{N}: weights/{best,last}.pt, results.csv (box and mask columns), results.png, labels.jpg,
train/val batch images with masks, the confusion matrix, Box/Mask PR curves, hyp.yaml and opt.yaml.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from engine.segment_options import SegmentTrainOptions
from engine.train_cli import build_parser as build_train_parser
from engine.train_options import TrainError
from utils.callbacks import Callbacks
from utils.data.dataset_yaml import DatasetYAMLError
from utils.dist import is_main_process
from utils.logging import LOGGER, colorstr


def parse_opt(known: bool = False) -> argparse.Namespace:
    """Parse upstream's ``segment/train.py`` flags from ``sys.argv``; ``known=True`` ignores unknown arguments."""
    parser = build_parser()
    return parser.parse_known_args()[0] if known else parser.parse_args()


def build_parser() -> argparse.ArgumentParser:
    """Every ``train.py`` flag with the segmentation defaults, plus ``--mask-ratio`` and ``--no-overlap``."""
    return build_train_parser(SegmentTrainOptions(), __doc__)


def main(opt: argparse.Namespace, callbacks: Callbacks | None = None) -> None:
    """Train with the options in ``opt``; ``opt`` is updated in place with the run's final options."""
    from engine.segment_trainer import SegmentTrainer
    from engine.train_run import run_training

    options = SegmentTrainOptions.from_namespace(opt)
    if is_main_process():
        LOGGER.info(colorstr("segment/train: ") + ", ".join(f"{k}={v}" for k, v in vars(opt).items()))
    vars(opt).update(run_training(options, callbacks or Callbacks(), SegmentTrainer).to_dict())


def run(**kwargs) -> argparse.Namespace:
    """Train from Python: ``segment.train.run(data='coco128-seg.yaml', imgsz=320, weights='yolov5s-seg.pt')``.

    Keyword names are the CLI flags with '_' for '-'; unknown names raise TypeError (with a suggestion).
    Returns the options namespace (``opt.save_dir`` is the run folder).
    """
    opt = build_parser().parse_args([])
    SegmentTrainOptions.from_dict({**vars(opt), **kwargs})  # validates the keyword names
    for key, value in kwargs.items():
        setattr(opt, key, value)
    main(opt)
    return opt


if __name__ == "__main__":
    try:
        main(parse_opt())
    except KeyboardInterrupt:
        sys.exit(130)
    except (TrainError, FileNotFoundError, DatasetYAMLError, ValueError) as error:
        LOGGER.error(f"{colorstr('red', 'segment/train: error:')} {error}")
        sys.exit(1)
