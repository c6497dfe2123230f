"""Train an image classifier on an ImageNet-style folder dataset (upstream ``classify/train.py`` interface).

With no arguments it trains a classifier made of the yolov5n backbone plus a ``Classify`` head from scratch on the
built-in ``shapes-cls`` dataset (generated locally on first use; nothing is downloaded):

    $ python classify/train.py
    $ python classify/train.py --model yolov5s.yaml --data path/to/imagenette160 --img 224 --epochs 30
    $ python classify/train.py --model convnext_yolov5n.yaml       # ConvNeXt-Atto (timm) backbone + Classify
    $ python classify/train.py --model yolov1.yaml --cutoff 24     # the YOLOv1 paper's 20-conv Darknet
    $ python classify/train.py --model yolov5s.pt                  # a local detection checkpoint, cut at layer 10
    $ python classify/train.py --model resnet18 --pretrained False # a torchvision model (random init)
    $ python -m torch.distributed.run --nproc_per_node 2 classify/train.py --device 0,1

Outputs go to runs/train-cls/exp{N}: weights/{best,last}.pt (upstream's classification checkpoint format),
results.csv/png, train_images.jpg, test_images.jpg and opt.yaml. Then detection can start from the backbone:
``python train.py --cfg yolov5s.yaml --backbone-weights runs/train-cls/exp/weights/best.pt``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from engine.classify_setup import (
    BUILTIN_PRESET,
    DEFAULT_DATA,
    DEFAULT_MODEL,
    DEFAULT_PROJECT,
    OPTIMIZERS,
    UPSTREAM_DEFAULTS,
    ClassifyError,
    ClassifyOptions,
)
from utils.callbacks import Callbacks
from utils.data.classify import ClassificationDataError
from utils.logging import LOGGER, colorstr


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show defaults and keep the module docstring's examples as written."""


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser with upstream's ``classify/train.py`` flags (plus ``--fp32``, ``--noplots``)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=_HelpFormatter)
    p.add_argument("--model", type=str, default=DEFAULT_MODEL,
                   help="detection YAML (backbone + Classify), .pt checkpoint or torchvision model name")
    p.add_argument("--data", type=str, default=DEFAULT_DATA,
                   help="dataset folder with train/ and val/ (or test/), a dataset YAML, or a name under "
                   "DATASETS_DIR (default: the built-in shapes-cls set, generated on first use)")
    p.add_argument("--epochs", type=int, default=None, help=f"passes over the training set (unset: "
                   f"{UPSTREAM_DEFAULTS['epochs']}, built-in dataset: {BUILTIN_PRESET['epochs']})")
    p.add_argument("--batch-size", type=int, default=None, help=f"images per step, summed over all processes (unset: "
                   f"{UPSTREAM_DEFAULTS['batch_size']}, built-in dataset: {BUILTIN_PRESET['batch_size']})")
    p.add_argument("--imgsz", "--img", "--img-size", type=int, default=None, help=f"train and val image size in "
                   f"pixels (unset: {UPSTREAM_DEFAULTS['imgsz']}, built-in dataset: {BUILTIN_PRESET['imgsz']})")
    p.add_argument("--nosave", action="store_true", help="only save the final checkpoint")
    p.add_argument("--cache", type=str, nargs="?", const="ram", help="keep decoded images in 'ram' or on 'disk'")
    p.add_argument("--device", default="", help="cuda device, i.e. 0 or 0,1,2,3 or cpu")
    p.add_argument("--workers", type=int, default=8, help="largest number of data-loading processes (per process)")
    p.add_argument("--project", default=str(DEFAULT_PROJECT), help="parent folder of the run folder")
    p.add_argument("--name", default="exp", help="run folder name inside --project")
    p.add_argument("--exist-ok", action="store_true", help="reuse an existing run folder instead of a new number")
    p.add_argument("--pretrained", nargs="?", const=True, default=True,
                   help="start from pretrained weights: True/False, or a local torchvision weights file (never "
                   "downloaded; False re-initialises a .pt model)")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="Adam", help="optimizer")
    p.add_argument("--lr0", type=float, default=0.001, help="initial learning rate (decays linearly to 1%%)")
    p.add_argument("--decay", type=float, default=5e-5, help="weight decay")
    p.add_argument("--label-smoothing", type=float, default=0.1, help="label smoothing epsilon")
    p.add_argument("--cutoff", type=int, default=None, help="layers kept before the Classify head (YAML: default "
                   "the backbone: length; detection .pt: default 10, the last replaced by Classify)")
    p.add_argument("--dropout", type=float, default=None, help="dropout probability of the head")
    p.add_argument("--verbose", action="store_true", help="per-class accuracy of the final model")
    p.add_argument("--seed", type=int, default=0, help="global training seed")
    p.add_argument("--local_rank", type=int, default=-1, help="set by the DDP launcher; leave it alone")
    p.add_argument("--fp32", action="store_true", help="plain fp32 NCHW (no CPU bf16 / channels_last, no CUDA AMP)")
    p.add_argument("--noplots", action="store_true", help="write no images or plots")
    return p


def parse_opt(known: bool = False) -> argparse.Namespace:
    """Parse the flags from ``sys.argv``; ``known=True`` ignores unknown arguments."""
    parser = build_parser()
    return parser.parse_known_args()[0] if known else parser.parse_args()


def main(opt: argparse.Namespace, callbacks: Callbacks | None = None) -> argparse.Namespace:
    """Train with the options in ``opt``; returns the run's final options (``save_dir`` is the run folder)."""
    from engine.classify_run import run_classify_training

    LOGGER.info(colorstr("classify/train: ") + ", ".join(f"{k}={v}" for k, v in vars(opt).items()))
    final = run_classify_training(ClassifyOptions.from_dict(vars(opt)), callbacks)
    vars(opt).update(final.to_dict())
    return opt


def run(**kwargs) -> argparse.Namespace:
    """Train from Python: ``classify.train.run(model='yolov5s.yaml', data='path/to/data', epochs=5)``.

    Keyword names are the CLI flags with '_' for '-'; unknown names raise TypeError. Returns the options.
    """
    callbacks = kwargs.pop("callbacks", None)
    opt = build_parser().parse_args([])
    ClassifyOptions.from_dict({**vars(opt), **kwargs})  # validates the keyword names
    vars(opt).update(kwargs)
    return main(opt, callbacks)


if __name__ == "__main__":
    try:
        main(parse_opt())
    except KeyboardInterrupt:
        sys.exit(130)
    except (ClassifyError, ClassificationDataError, FileNotFoundError) as error:
        LOGGER.error(f"{colorstr('red', 'classify/train: error:')} {error}")
        sys.exit(1)
