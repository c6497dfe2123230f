"""Train a YOLOv5 detection model on a YOLO-format dataset (upstream train.py interface).

With no arguments it trains yolov5n from scratch at 320 px on the built-in ``shapes`` dataset (generated locally on
first use; nothing is downloaded) and finishes in a few minutes on a laptop CPU:

    $ python train.py
    $ python train.py --data coco128.yaml --weights yolov5s.pt --img 640     # fine-tune a local checkpoint
    $ python train.py --data my.yaml --cfg yolov5s.yaml --weights '' --epochs 100
    $ python train.py --resume                                               # continue the newest interrupted run

Outputs go to runs/train/exp{N}: weights/{best,last}.pt, results.csv/png, labels.jpg, train/val batch images,
confusion matrix and PR/F1/P/R curves, hyp.yaml and opt.yaml.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from engine.train_cli import build_parser as build_train_parser
from engine.train_options import TrainError, TrainOptions
from utils.callbacks import Callbacks
from utils.data.dataset_yaml import DatasetYAMLError
from utils.dist import is_main_process
from utils.logging import LOGGER, colorstr


def parse_opt(known: bool = False) -> argparse.Namespace:
    """Parse upstream's ``train.py`` flags from ``sys.argv``; ``known=True`` ignores unknown arguments."""
    parser = build_parser()
    return parser.parse_known_args()[0] if known else parser.parse_args()


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser with every upstream ``train.py`` flag (defaults: see the module docstring)."""
    return build_train_parser(TrainOptions(), __doc__)


_DEFAULT_CALLBACKS = Callbacks()


def main(opt: argparse.Namespace, callbacks: Callbacks = _DEFAULT_CALLBACKS) -> None:
    """Train (or evolve) with the options in ``opt``; ``opt`` is updated in place with the run's final options.

    Without ``callbacks`` each call gets a fresh ``Callbacks()`` (upstream reuses one default object, so actions
    registered by one run would pile up in the next).
    """
    from engine.train_run import run_training

    callbacks = Callbacks() if callbacks is _DEFAULT_CALLBACKS else callbacks
    options = TrainOptions.from_namespace(opt)
    if is_main_process():
        LOGGER.info(colorstr("train: ") + ", ".join(f"{k}={v}" for k, v in vars(opt).items()))
    vars(opt).update(run_training(options, callbacks).to_dict())


def run(**kwargs) -> argparse.Namespace:
    """Train from Python: ``import train; train.run(data='coco128.yaml', imgsz=320, weights='yolov5m.pt')``.

    Keyword names are the CLI flags with '_' for '-'; unknown names raise TypeError (with a suggestion).
    Returns the options namespace (``opt.save_dir`` is the run folder).
    """
    opt = build_parser().parse_args([])  # defaults only: the host program's own argv must not leak in
    TrainOptions.from_dict({**vars(opt), **kwargs})  # validates the keyword names
    for key, value in kwargs.items():
        setattr(opt, key, value)
    main(opt)
    return opt


if __name__ == "__main__":
    try:
        main(parse_opt())
    except KeyboardInterrupt:
        sys.exit(130)
    except (TrainError, FileNotFoundError, DatasetYAMLError) as error:
        LOGGER.error(f"{colorstr('red', 'train: error:')} {error}")
        sys.exit(1)
