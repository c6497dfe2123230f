"""The ``train.py`` command line (shared by ``segment/train.py``): every upstream flag with its default and help.

``build_parser(defaults)`` takes the options object whose values are the defaults (``TrainOptions()`` for
detection, ``SegmentTrainOptions()`` for segmentation, which adds ``--mask-ratio`` and ``--no-overlap``).
"""

from __future__ import annotations

import argparse

from engine.train_options import BUILTIN_PRESET, DEFAULT_HYP, UPSTREAM_DEFAULTS, TrainOptions

DEFAULTS = TrainOptions()


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show defaults and keep the module docstring's examples as written."""


def build_parser(defaults: TrainOptions = DEFAULTS, description: str = "") -> argparse.ArgumentParser:
    """Return the argument parser with every upstream ``train.py`` flag, defaults from ``defaults`` (and, for
    segmentation options, ``--mask-ratio`` and ``--no-overlap``)."""
    p = argparse.ArgumentParser(description=description, formatter_class=_HelpFormatter)
    p.add_argument("--weights", type=str, default=defaults.weights,
                   help="checkpoint to start from ('' trains from random weights; the file must exist locally, "
                   "nothing is downloaded)")
    p.add_argument("--cfg", type=str, default=defaults.cfg, help="architecture YAML; when neither --weights nor "
                   f"--cfg is given, {defaults.default_cfg} is built")
    p.add_argument("--data", type=str, default=defaults.data,
                   help="dataset YAML with the image folders and class names (default: a built-in dataset, "
                   "generated on first use)")
    p.add_argument("--hyp", type=str, default="", help=f"hyperparameter YAML ('' picks {DEFAULT_HYP.name}, or "
                   "data/hyps/hyp.<name>.yaml for a built-in dataset)")
    p.add_argument("--epochs", type=int, default=None, help=f"number of passes over the training set (unset: "
                   f"{UPSTREAM_DEFAULTS['epochs']}, or {BUILTIN_PRESET['epochs']} for the built-in dataset)")
    p.add_argument("--batch-size", type=int, default=defaults.batch_size,
                   help="images per step summed over all processes; -1 lets AutoBatch pick one (CUDA only)")
    p.add_argument("--imgsz", "--img", "--img-size", type=int, default=defaults.imgsz,
                   help="square input size in pixels for training and validation (upstream uses 640)")
    _add_run_flags(p, defaults)
    if hasattr(defaults, "mask_ratio"):
        p.add_argument("--mask-ratio", type=int, default=defaults.mask_ratio,
                       help="ground-truth masks at 1/this of the image size (4: the prototype resolution)")
        p.add_argument("--no-overlap", action="store_true",
                       help="one mask per instance instead of one index mask per image (more memory)")
    return p


def _add_run_flags(p: argparse.ArgumentParser, defaults: TrainOptions = DEFAULTS) -> None:
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
    p.add_argument("--evolve_population", type=str, default=defaults.evolve_population,
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
    p.add_argument("--project", default=str(defaults.project), help="parent folder of the run folder")
    p.add_argument("--name", default="exp",
                   help="run folder name inside --project ('cfg': the architecture YAML's name)")
    p.add_argument("--exist-ok", action="store_true",
                   help="reuse an existing run folder instead of numbering a new one")
    p.add_argument("--quad", action="store_true", help="load batches as 2x2 image groups (larger effective size)")
    p.add_argument("--cos-lr", action="store_true",
                   help="decay the learning rate along a cosine instead of a straight line")
    p.add_argument("--label-smoothing", type=float, default=0.0, help="soften class targets by this epsilon")
    p.add_argument("--patience", type=int, default=100, help="stop after this many epochs without a better fitness")
    p.add_argument("--freeze", nargs="+", type=int, default=None,
                   help="layers kept fixed: one N fixes layers 0..N-1 (10: the backbone), several values fix those "
                   "indices (unset: 0, nothing; 10 for the built-in dataset's preset backbone)")
    p.add_argument("--fp32", action="store_true", help="train in plain fp32 with NCHW tensors (no CPU bf16 or "
                   "channels_last, no CUDA AMP); the environment variable YOLOV5_FP32=1 does the same")
    p.add_argument("--backbone-weights", type=str, default="",
                   help="file whose backbone tensors replace the model's (applied after --weights); default on the "
                   "built-in shapes dataset without --weights/--cfg: data/pretrained/yolov5n-shapes-cls.pt; "
                   "'none' for no transfer")
    p.add_argument("--save-period", type=int, default=-1,
                   help="also keep epoch{N}.pt every this many epochs (off below 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random generator the run uses")
    p.add_argument("--local_rank", type=int, default=-1, help="set by the DDP launcher; leave it alone")
    p.add_argument("--entity", default=None, help="account or team name for experiment loggers")
    p.add_argument("--upload_dataset", nargs="?", const=True, default=False,
                   help="log the dataset to the experiment logger ('val': the validation split only)")
    p.add_argument("--bbox_interval", type=int, default=-1, help="epochs between logged prediction images (-1: off)")
    p.add_argument("--artifact_alias", type=str, default="latest", help="dataset artifact version to log against")


