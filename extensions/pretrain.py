"""Self-supervised backbone pretraining with a CSP-Darknet autoencoder, for ``train.py --backbone-weights``.

The encoder is the ``backbone:`` section of ``--cfg`` (same layer names and shapes as the detector's), the decoder
a transpose-CSP network; the loss is a pixel-wise squared error weighted towards labelled boxes (``--mask-p``).
Unlabeled image folders work (uniform weights).

    $ python -m extensions.pretrain                                          # yolov5n, built-in shapes data
    $ python -m extensions.pretrain --cfg yolov5s.yaml --data coco128.yaml --epochs 50 --img 320
    $ python -m extensions.pretrain --data path/to/images/ --no-skips        # unlabeled folder, no skip sums
    $ python -m extensions.pretrain --weights yolov5s.pt                     # start from a detector's backbone
    $ python -m extensions.pretrain --resume                                 # continue the newest interrupted run
    $ python train.py --cfg yolov5s.yaml --backbone-weights runs/pretrain/exp/weights/best.pt

Outputs go to runs/pretrain/exp{N}: weights/{last,best}.pt (and backbone.pt with --save-backbone),
results.csv/png, recon_epoch{N}.png (input | reconstruction | mask), opt.yaml.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if __name__ == "__main__" and str(ROOT) not in sys.path:  # `python extensions/pretrain.py` from any folder
    sys.path.insert(0, str(ROOT))

from extensions.autoencoder.defaults import P_PRETRAINED, P_SCRATCH, PRETEXTS
from utils.callbacks import Callbacks
from utils.files import increment_path, yaml_load, yaml_save
from utils.logging import LOGGER, colorstr

DEFAULT_CFG = "yolov5n.yaml"  # as train.py
DEFAULT_PROJECT = ROOT / "runs" / "pretrain"
DEFAULT_DATA = str(ROOT / "data" / "shapes.yaml")
RESUME_OVERRIDABLE = ("epochs", "device", "workers")


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the pretraining CLI (defaults: see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--cfg", type=str, default="",
                   help=f"detection model.yaml whose backbone is pretrained (default: the --weights checkpoint's "
                        f"architecture, else {DEFAULT_CFG})")
    p.add_argument("--data", type=str, default=DEFAULT_DATA,
                   help="dataset YAML, an image folder or a .txt list of images")
    p.add_argument("--weights", type=str, default="", help="start the encoder from this detector/backbone file")
    p.add_argument("--epochs", type=int, default=30, help="number of passes over the training images")
    p.add_argument("--batch-size", type=int, default=16, help="images per step, summed over all processes")
    p.add_argument("--imgsz", "--img", "--img-size", type=int, default=320, help="square input size in pixels")
    p.add_argument("--optimizer", type=str, choices=["SGD", "Adam", "AdamW"], default="Adam",
                   help="optimizer of the autoencoder")
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate of the first epoch")
    p.add_argument("--lrf", type=float, default=0.1,
                   help="learning rate of the last epoch as a fraction of --lr (cosine decay)")
    p.add_argument("--weight-decay", type=float, default=0.0, help="weight decay applied to conv weights")
    p.add_argument("--mask-p", type=float, default=None,
                   help=f"box prior p: weight 1/p in boxes, 1/(1-p) outside (default {P_SCRATCH}, "
                        f"{P_PRETRAINED} with --weights)")
    p.add_argument("--skips", action=argparse.BooleanOptionalAction, default=True,
                   help="additive encoder->decoder skip connections (--no-skips: bottleneck only)")
    p.add_argument("--pretext", type=str, choices=PRETEXTS, default="none",
                   help="none: reconstruct the image; blur: from an input with boxes blurred; boxes: boxes only")
    p.add_argument("--ema", action="store_true", help="keep an EMA of the weights and export it")
    p.add_argument("--cache", type=str, nargs="?", const="ram", help="keep decoded images in 'ram' or on 'disk'")
    p.add_argument("--device", default="", help="where to train: a CUDA index such as 0, or cpu")
    p.add_argument("--workers", type=int, default=8, help="largest number of data-loading processes")
    p.add_argument("--project", default=str(DEFAULT_PROJECT), help="parent folder of the run folder")
    p.add_argument("--name", default="exp", help="run folder name inside --project")
    p.add_argument("--exist-ok", action="store_true",
                   help="reuse an existing run folder instead of numbering a new one")
    p.add_argument("--resume", nargs="?", const=True, default=False,
                   help="continue the newest interrupted run, or the run of the last.pt given")
    p.add_argument("--fp32", action="store_true", help="train in plain fp32 (no bf16/fp16 autocast, no channels_last)")
    p.add_argument("--save-backbone", action="store_true", help="also write weights/backbone.pt (model.{i}.* only)")
    p.add_argument("--noplots", action="store_true", help="save no reconstruction grids or plots")
    p.add_argument("--seed", type=int, default=0, help="seed of every random generator the run uses")
    return p


def _plain(value: Any) -> Any:
    return str(value) if isinstance(value, Path) else value


def resolve_cfg(opt: argparse.Namespace) -> Any:
    """``--cfg`` if given, else the ``--weights`` checkpoint's model YAML dict, else :data:`DEFAULT_CFG`."""
    if opt.cfg:
        return opt.cfg
    if opt.weights:
        from extensions.autoencoder.export import weights_model_yaml

        found = weights_model_yaml(opt.weights)
        if found is not None:
            LOGGER.info(f"--cfg not given: using the architecture stored in {opt.weights}")
            return found
    return DEFAULT_CFG


def prepare_new_run(opt: argparse.Namespace) -> argparse.Namespace:
    """Resolve ``cfg`` and ``mask_p`` defaults, choose ``save_dir`` (``project/name`` incremented), write opt.yaml."""
    opt.cfg = resolve_cfg(opt)
    if opt.mask_p is None:
        opt.mask_p = P_PRETRAINED if opt.weights else P_SCRATCH
    opt.save_dir = str(increment_path(Path(opt.project) / opt.name, exist_ok=opt.exist_ok, mkdir=True))
    (Path(opt.save_dir) / "weights").mkdir(parents=True, exist_ok=True)
    yaml_save(Path(opt.save_dir) / "opt.yaml", {k: _plain(v) for k, v in vars(opt).items()})
    return opt


def _latest_last(project: Path) -> str:
    from engine.train_options import get_latest_run

    found = get_latest_run(project) if project.is_dir() else ""
    if not found:
        raise FileNotFoundError(f"--resume: no last*.pt under {project}; pass it: --resume path/to/weights/last.pt")
    return found


def restore_resume_options(opt: argparse.Namespace, explicit: dict) -> argparse.Namespace:
    """Return the interrupted run's options (from its ``opt.yaml``) with ``resume`` = its ``last.pt``.

    Only :data:`RESUME_OVERRIDABLE` options given explicitly (``explicit``) replace the saved ones.
    """
    last = Path(opt.resume if isinstance(opt.resume, str) else _latest_last(Path(opt.project)))
    if not last.is_file():
        raise FileNotFoundError(f"--resume {last}: checkpoint not found")
    opt_yaml = last.parent.parent / "opt.yaml"
    if opt_yaml.is_file():
        saved = yaml_load(opt_yaml)
    else:
        from extensions.autoencoder.export import load_pretrain_checkpoint

        saved = dict(load_pretrain_checkpoint(last)["opt"])
    restored = argparse.Namespace(**{**vars(build_parser().parse_args([])), **saved})
    for key in RESUME_OVERRIDABLE:
        if key in explicit:
            setattr(restored, key, explicit[key])
    restored.resume, restored.save_dir = str(last), str(last.parent.parent)
    return restored


def main(opt: argparse.Namespace, callbacks: Callbacks | None = None) -> argparse.Namespace:
    """Pretrain with the options in ``opt``; returns the run's final options (``save_dir`` is the run folder)."""
    from engine.pretrainer import PretrainTrainer
    from utils.dist import broadcast_from_main, destroy_distributed, get_local_rank, is_main_process

    distributed = get_local_rank() != -1
    if is_main_process():
        LOGGER.info(colorstr("pretrain: ") + ", ".join(f"{k}={v}" for k, v in vars(opt).items()))
    if distributed:
        _start_distributed(opt)
    try:
        if is_main_process():  # rank 0 chooses (and creates) the run folder; DDP ranks receive its options
            opt = _resolve_run(opt)
        opt = broadcast_from_main(opt)
        trainer = PretrainTrainer(opt, callbacks)
        result = trainer.train()
    finally:
        if distributed:
            destroy_distributed()
    opt.best, opt.last, opt.best_loss = str(result["best"]), str(result["last"]), result["best_loss"]
    return opt


def _resolve_run(opt: argparse.Namespace) -> argparse.Namespace:
    if opt.resume:
        defaults = vars(build_parser().parse_args([]))
        explicit = {k: v for k, v in vars(opt).items() if k in defaults and v != defaults[k]}
        return restore_resume_options(opt, explicit)
    return prepare_new_run(opt)


def _start_distributed(opt: argparse.Namespace) -> None:
    """DDP launch (``torch.distributed.run``): check the batch split, join the process group (NCCL/Gloo).

    Raises:
        ValueError: ``--batch-size`` is not a multiple of ``WORLD_SIZE`` (it is the total over all processes).
    """
    from utils.dist import check_batch_split, get_world_size, init_distributed
    from utils.torch_utils import select_device

    per_process = check_batch_split(opt.batch_size)
    device = init_distributed(select_device(opt.device, batch_size=opt.batch_size))
    LOGGER.info(f"{colorstr('DDP:')} {get_world_size()} processes on {device.type}, batch {per_process} per process")


def run(**kwargs: Any) -> argparse.Namespace:
    """Pretrain from Python: ``run(cfg='yolov5s.yaml', data='coco128.yaml', epochs=10)`` -> options namespace.

    Keyword names are the CLI flags with '_' for '-'; ``callbacks`` may pass a :class:`Callbacks`.

    Raises:
        TypeError: an unknown keyword (the valid names are listed).
    """
    callbacks = kwargs.pop("callbacks", None)
    opt = build_parser().parse_args([])
    unknown = sorted(set(kwargs) - set(vars(opt)))
    if unknown:
        raise TypeError(f"unknown pretraining option(s) {unknown}; valid options: {', '.join(sorted(vars(opt)))}")
    for key, value in kwargs.items():
        setattr(opt, key, _plain(value))
    return main(opt, callbacks)


if __name__ == "__main__":
    try:
        main(build_parser().parse_args())
    except KeyboardInterrupt:
        sys.exit(130)
    except (FileNotFoundError, ValueError, RuntimeError) as error:
        LOGGER.error(f"{colorstr('red', 'pretrain: error:')} {error}")
        sys.exit(1)
