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

from engine.train_options import (
    BUILTIN_PRESET,
    DEFAULT_CFG,
    DEFAULT_HYP,
    DEFAULT_PROJECT,
    UPSTREAM_DEFAULTS,
    TrainError,
    TrainOptions,
)
from utils.callbacks import Callbacks
from utils.data.dataset_yaml import DatasetYAMLError
from utils.dist import is_main_process
from utils.logging import LOGGER, colorstr

DEFAULTS = TrainOptions()


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show defaults and keep the module docstring's examples as written."""


def parse_opt(known: bool = False) -> argparse.Namespace:
    """Parse upstream's ``train.py`` flags from ``sys.argv``; ``known=True`` ignores unknown arguments."""
    parser = build_parser()
    return parser.parse_known_args()[0] if known else parser.parse_args()


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser with every upstream ``train.py`` flag (defaults: see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=_HelpFormatter)
    p.add_argument("--weights", type=str, default=DEFAULTS.weights,
                   help="checkpoint to start from ('' trains from random weights; the file must exist locally, "
                   "nothing is downloaded)")
    p.add_argument("--cfg", type=str, default=DEFAULTS.cfg,
                   help=f"architecture YAML; when neither --weights nor --cfg is given, {DEFAULT_CFG} is built")
    p.add_argument("--data", type=str, default=DEFAULTS.data,
                   help="dataset YAML with the image folders and class names (default: the built-in 'shapes' set, "
                   "generated on first use)")
    p.add_argument("--hyp", type=str, default="", help=f"hyperparameter YAML ('' picks {DEFAULT_HYP.name}, or "
                   "data/hyps/hyp.shapes.yaml for the built-in dataset)")
    p.add_argument("--epochs", type=int, default=None, help=f"number of passes over the training set (unset: "
                   f"{UPSTREAM_DEFAULTS['epochs']}, or {BUILTIN_PRESET['epochs']} for the built-in dataset)")
    p.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size,
                   help="images per step summed over all processes; -1 lets AutoBatch pick one (CUDA only)")
    p.add_argument("--imgsz", "--img", "--img-size", type=int, default=DEFAULTS.imgsz,
                   help="square input size in pixels for training and validation (upstream uses 640)")
    _add_run_flags(p)
    return p


def _add_run_flags(p: argparse.ArgumentParser) -> None:
    """Add the flags after ``--imgsz`` (run control, data options, logging) in upstream's order."""
    p.add_argument("--rect", action="store_true", help="batch images of similar aspect ratio with minimal padding")
    p.add_argument("--resume", nargs="?", const=True, default=False,
                   help="continue the newest interrupted run, or the run of the last.pt given")
    p.add_argument("--nosave", action="store_true", help="write a checkpoint only after the last epoch")
    p.add_argument("--noval", action="store_true", help="skip validation until the last epoch")
    p.add_argument("--noautoanchor", action="store_true",
                   help="keep the model's anchors instead of checking and refitting them to the labels")
    p.add_argument("--noplots", action="store_true", help="write no images or plots")
    p.add_argument("--evolve", type=int, nargs="?", const=300,
                   help="search hyperparameters by mutation for this many runs")
    p.add_argument("--evolve_population", type=str, default=DEFAULTS.evolve_population,
                   help="folder of a saved population (accepted for compatibility; the search starts from --hyp)")
    p.add_argument("--resume_evolve", type=str, default=None,
                   help="continue a search from its last generation (accepted for compatibility; use --evolve N "
                   "--resume)")
    p.add_argument("--bucket", type=str, default="",
                   help="cloud bucket name (accepted for compatibility; nothing is uploaded)")
    p.add_argument("--cache", type=str, nargs="?", const="ram",
                   help="keep decoded images in 'ram' or on 'disk' ('val': the validation set only)")
    p.add_argument("--image-weights", action="store_true",
                   help="sample training images more often when their classes score poorly")
    p.add_argument("--device", default="",
                   help="where to train: a CUDA index such as 0, a list such as 0,1, or cpu / mps")
    p.add_argument("--multi-scale", action="store_true",
                   help="rescale each batch to a random size between half and one and a half times --imgsz")
    p.add_argument("--single-cls", action="store_true", help="merge all classes into one")
    p.add_argument("--optimizer", type=str, choices=["SGD", "Adam", "AdamW"], default="",
                   help=f"optimizer (unset: SGD, or {BUILTIN_PRESET['optimizer']} for the built-in dataset)")
    p.add_argument("--sync-bn", action="store_true",
                   help="share batch-norm statistics across processes (multi-GPU DDP only)")
    p.add_argument("--workers", type=int, default=8,
                   help="largest number of data-loading processes (per process under DDP)")
    p.add_argument("--project", default=str(DEFAULT_PROJECT), help="parent folder of the run folder")
    p.add_argument("--name", default="exp",
                   help="run folder name inside --project ('cfg': the architecture YAML's name)")
    p.add_argument("--exist-ok", action="store_true",
                   help="reuse an existing run folder instead of numbering a new one")
    p.add_argument("--quad", action="store_true", help="load batches as 2x2 image groups (larger effective size)")
    p.add_argument("--cos-lr", action="store_true",
                   help="decay the learning rate along a cosine instead of a straight line")
    p.add_argument("--label-smoothing", type=float, default=0.0, help="soften class targets by this epsilon")
    p.add_argument("--patience", type=int, default=100, help="stop after this many epochs without a better fitness")
    p.add_argument("--freeze", nargs="+", type=int, default=[0],
                   help="layers kept fixed: one N fixes layers 0..N-1 (10: the backbone), several values fix those "
                   "indices")
    p.add_argument("--fp32", action="store_true", help="train in plain fp32 with NCHW tensors (no CPU bf16 or "
                   "channels_last, no CUDA AMP); the environment variable YOLOV5_FP32=1 does the same")
    p.add_argument("--backbone-weights", type=str, default="",
                   help="file whose backbone tensors replace the model's (applied after --weights)")
    p.add_argument("--save-period", type=int, default=-1,
                   help="also keep epoch{N}.pt every this many epochs (off below 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random generator the run uses")
    p.add_argument("--local_rank", type=int, default=-1, help="set by the DDP launcher; leave it alone")
    p.add_argument("--entity", default=None, help="account or team name for experiment loggers")
    p.add_argument("--upload_dataset", nargs="?", const=True, default=False,
                   help="log the dataset to the experiment logger ('val': the validation split only)")
    p.add_argument("--bbox_interval", type=int, default=-1, help="epochs between logged prediction images (-1: off)")
    p.add_argument("--artifact_alias", type=str, default="latest", help="dataset artifact version to log against")


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
