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
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from utils.callbacks import Callbacks
from utils.data.dataset_yaml import DatasetYAMLError
from utils.dist import check_batch_split, destroy_distributed, get_local_rank, get_world_size, is_main_process
from utils.logging import LOGGER, colorstr
from engine.train_options import (
    BUILTIN_PRESET,
    DEFAULT_CFG,
    DEFAULT_HYP,
    DEFAULT_PROJECT,
    UPSTREAM_DEFAULTS,
    TrainError,
    TrainOptions,
    explicit_overrides,
    prepare_new_run,
    restore_resume_options,
)

if TYPE_CHECKING:
    import torch

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
                   help="initial weights path ('' = from scratch; never downloaded: put the .pt file locally)")
    p.add_argument("--cfg", type=str, default=DEFAULTS.cfg,
                   help=f"model.yaml path; with no --weights and no --cfg, {DEFAULT_CFG} is trained from scratch")
    p.add_argument("--data", type=str, default=DEFAULTS.data,
                   help="dataset.yaml path (default: the built-in 'shapes' dataset, generated on first use)")
    p.add_argument("--hyp", type=str, default="", help=f"hyperparameters path ('' = {DEFAULT_HYP.name}; for the "
                   "built-in dataset its tuned data/hyps/hyp.shapes.yaml)")
    p.add_argument("--epochs", type=int, default=None, help=f"total training epochs (none = "
                   f"{UPSTREAM_DEFAULTS['epochs']}; {BUILTIN_PRESET['epochs']} for the built-in dataset)")
    p.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size,
                   help="total batch size for all GPUs, -1 for autobatch (CUDA only)")
    p.add_argument("--imgsz", "--img", "--img-size", type=int, default=DEFAULTS.imgsz,
                   help="train, val image size (pixels; upstream's default is 640)")
    _add_run_flags(p)
    return p


def _add_run_flags(p: argparse.ArgumentParser) -> None:
    """Add the flags after ``--imgsz`` (run control, data options, logging) in upstream's order."""
    p.add_argument("--rect", action="store_true", help="rectangular training")
    p.add_argument("--resume", nargs="?", const=True, default=False,
                   help="resume the most recent interrupted run, or the given last.pt")
    p.add_argument("--nosave", action="store_true", help="only save final checkpoint")
    p.add_argument("--noval", action="store_true", help="only validate final epoch")
    p.add_argument("--noautoanchor", action="store_true", help="disable AutoAnchor")
    p.add_argument("--noplots", action="store_true", help="save no plot files")
    p.add_argument("--evolve", type=int, nargs="?", const=300, help="evolve hyperparameters for x generations")
    p.add_argument("--evolve_population", type=str, default=DEFAULTS.evolve_population,
                   help="location for loading population (accepted; the v7.0-style evolution starts from --hyp)")
    p.add_argument("--resume_evolve", type=str, default=None,
                   help="resume evolve from last generation (accepted; use --evolve N --resume)")
    p.add_argument("--bucket", type=str, default="", help="gsutil bucket (accepted; nothing is uploaded)")
    p.add_argument("--cache", type=str, nargs="?", const="ram", help="image --cache ram/disk (val: val set only)")
    p.add_argument("--image-weights", action="store_true", help="use weighted image selection for training")
    p.add_argument("--device", default="", help="cuda device, i.e. 0 or 0,1,2,3 or cpu or mps")
    p.add_argument("--multi-scale", action="store_true", help="vary img-size +/- 50%%")
    p.add_argument("--single-cls", action="store_true", help="train multi-class data as single-class")
    p.add_argument("--optimizer", type=str, choices=["SGD", "Adam", "AdamW"], default="",
                   help=f"optimizer ('' = SGD; {BUILTIN_PRESET['optimizer']} for the built-in dataset)")
    p.add_argument("--sync-bn", action="store_true", help="use SyncBatchNorm, only available in DDP mode")
    p.add_argument("--workers", type=int, default=8, help="max dataloader workers (per RANK in DDP mode)")
    p.add_argument("--project", default=str(DEFAULT_PROJECT), help="save to project/name")
    p.add_argument("--name", default="exp", help="save to project/name ('cfg' = the model yaml's stem)")
    p.add_argument("--exist-ok", action="store_true", help="existing project/name ok, do not increment")
    p.add_argument("--quad", action="store_true", help="quad dataloader")
    p.add_argument("--cos-lr", action="store_true", help="cosine LR scheduler")
    p.add_argument("--label-smoothing", type=float, default=0.0, help="Label smoothing epsilon")
    p.add_argument("--patience", type=int, default=100, help="EarlyStopping patience (epochs without improvement)")
    p.add_argument("--freeze", nargs="+", type=int, default=[0], help="Freeze layers: backbone=10, first3=0 1 2")
    p.add_argument("--fp32", action="store_true", help="force plain fp32 NCHW training (no CPU bf16 autocast/"
                   "channels_last fast path, no CUDA AMP); also env YOLOV5_FP32=1")
    p.add_argument("--backbone-weights", type=str, default="",
                   help="copy only the backbone rows' tensors from this checkpoint/state dict (after --weights)")
    p.add_argument("--save-period", type=int, default=-1, help="Save checkpoint every x epochs (disabled if < 1)")
    p.add_argument("--seed", type=int, default=0, help="Global training seed")
    p.add_argument("--local_rank", type=int, default=-1, help="Automatic DDP Multi-GPU argument, do not modify")
    p.add_argument("--entity", default=None, help="Entity (W&B/Comet loggers)")
    p.add_argument("--upload_dataset", nargs="?", const=True, default=False, help='Upload data, "val" option')
    p.add_argument("--bbox_interval", type=int, default=-1, help="Set bounding-box image logging interval")
    p.add_argument("--artifact_alias", type=str, default="latest", help="Version of dataset artifact to use")


DDP_INCOMPATIBLE = "is not compatible with YOLOv5 Multi-GPU DDP training"


def _check_distributed(options: TrainOptions) -> None:
    """Upstream's checks for a DDP launch (``LOCAL_RANK`` set), run before any process group or run folder exists.

    Raises:
        TrainError: ``--image-weights``, ``--evolve``, AutoBatch (``--batch-size -1``) or a total batch size that is
            not a multiple of ``WORLD_SIZE``.
    """
    if get_local_rank() == -1:
        return
    if options.image_weights:
        raise TrainError(f"--image-weights {DDP_INCOMPATIBLE}")
    if options.evolve:
        raise TrainError(f"--evolve {DDP_INCOMPATIBLE}")
    if options.batch_size == -1:
        raise TrainError(f"AutoBatch with --batch-size -1 {DDP_INCOMPATIBLE}, please pass a valid --batch-size")
    try:
        check_batch_split(options.batch_size)
    except ValueError as error:
        raise TrainError(str(error)) from None


def _start_distributed(device: torch.device, options: TrainOptions) -> torch.device:
    """Join the process group (NCCL on CUDA, Gloo on CPU); returns this rank's device. Rank 0 chooses save_dir."""
    from utils.dist import broadcast_from_main, init_distributed

    try:
        device = init_distributed(device)
    except RuntimeError as error:
        raise TrainError(str(error)) from None
    options.save_dir = broadcast_from_main(options.save_dir)  # every rank writes (if at all) into rank 0's folder
    if is_main_process():
        import torch.distributed as torch_dist

        LOGGER.info(f"{colorstr('DDP:')} {get_world_size()} processes, backend {torch_dist.get_backend()}, "
                    f"rank 0 on {device}, batch {options.batch_size // get_world_size()} per process")
    return device


_DEFAULT_CALLBACKS = Callbacks()


def main(opt: argparse.Namespace, callbacks: Callbacks = _DEFAULT_CALLBACKS) -> None:
    """Train (or evolve) with the options in ``opt``; ``opt`` is updated in place with the run's final options.

    Without ``callbacks`` each call gets a fresh ``Callbacks()`` (upstream reuses one default object, so actions
    registered by one run would pile up in the next).
    """
    callbacks = Callbacks() if callbacks is _DEFAULT_CALLBACKS else callbacks
    options = TrainOptions.from_namespace(opt)
    if is_main_process():
        LOGGER.info(colorstr("train: ") + ", ".join(f"{k}={v}" for k, v in vars(opt).items()))
    if options.resume and not options.evolve:
        options = restore_resume_options(options, overrides=explicit_overrides(options))
    else:
        options = prepare_new_run(options)
    _check_distributed(options)
    from utils.torch_utils import select_device

    try:
        device = select_device(options.device, batch_size=options.batch_size)
    except ValueError as error:  # e.g. --device 0 without CUDA: a user error, reported without a traceback
        raise TrainError(str(error)) from None
    distributed, level = get_local_rank() != -1, LOGGER.level
    if not is_main_process():
        LOGGER.setLevel(logging.WARNING)  # other ranks only report problems; rank 0 logs the run
    try:
        if distributed:
            device = _start_distributed(device, options)
        options = _train_or_evolve(options, device, callbacks)
    finally:
        LOGGER.setLevel(level)
        if distributed:
            destroy_distributed()
    vars(opt).update(options.to_dict())


def _train_or_evolve(options: TrainOptions, device: torch.device, callbacks: Callbacks) -> TrainOptions:
    """Run the evolution or one training; returns the final options."""
    if options.evolve:
        from engine.evolve import evolve

        evolve(options, device, callbacks)
        return options
    from engine.trainer import Trainer

    trainer = Trainer(options, device, callbacks)
    try:
        trainer.train()
    finally:
        options = trainer.opt
    return options


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
