"""The setup steps of the detection trainer (:meth:`engine.trainer.Trainer.setup` runs them in upstream's order),
each a function that returns what it builds."""

from __future__ import annotations

import subprocess
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn

from engine.train_options import NothingToResumeError, TrainError, TrainOptions, load_hyp
from extensions.transfer import load_backbone_weights, pretrained_model_yaml, read_pretrained, transfer_weights
from utils.dist import get_local_rank, torch_distributed_zero_first
from utils.files import ROOT
from utils.hyp import Hyp
from utils.logging import LOGGER, colorstr
from utils.optim import linear_lr, one_cycle, smart_optimizer


def git_info(path: Path = ROOT) -> dict:
    """Return ``{remote, branch, commit}`` of the repository at ``path`` (values None when unavailable)."""
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(path), *args], capture_output=True, text=True, timeout=5)
            return (out.stdout.strip() or None) if out.returncode == 0 else None
        except (OSError, subprocess.SubprocessError):
            return None

    return {"remote": git("config", "--get", "remote.origin.url"), "branch": git("rev-parse", "--abbrev-ref", "HEAD"),
            "commit": git("rev-parse", "HEAD")}


def load_run_hyp(hyp_source: Any) -> tuple[dict, Hyp]:
    """Return the run's hyperparameters as loaded (the dict ``hyp.yaml``/``opt.yaml`` store) and as a ``Hyp``.

    Keys training does not know are kept in the dict (and so in ``hyp.yaml``) as upstream keeps them, warned about
    by :func:`engine.train_options.load_hyp`, and left out of the ``Hyp``.

    Raises:
        TrainError: ``nbs`` is not a positive integer.
    """
    values = load_hyp(hyp_source)
    LOGGER.info(colorstr("hyperparameters: ") + ", ".join(f"{k}={v}" for k, v in values.items()))
    hyp = Hyp.from_dict(values, strict=False)
    if hyp.nominal_batch_size < 1:
        raise TrainError(f"hyperparameter nbs={hyp.nbs} (nominal batch size) must be a positive integer")
    return dict(values), hyp


@dataclass(frozen=True)
class DatasetInfo:
    """What the dataset YAML says: the checked dict, split paths, class count and names, COCO or not."""

    data_dict: dict
    train_path: Any
    val_path: Any
    nc: int
    names: Any
    is_coco: bool


def load_dataset_info(data: Any, single_cls: bool) -> DatasetInfo:
    """Check the dataset YAML (generating a built-in dataset if needed; rank 0 first) and read its classes."""
    from utils.data.dataset_yaml import check_dataset

    with torch_distributed_zero_first(get_local_rank()):
        data_dict = check_dataset(data)
    val_path, names = data_dict["val"], data_dict["names"]
    return DatasetInfo(data_dict, data_dict["train"], val_path, 1 if single_cls else int(data_dict["nc"]),
                       {0: "item"} if single_cls and len(names) != 1 else names,
                       isinstance(val_path, str) and val_path.endswith("coco/val2017.txt"))


def build_model(opt: TrainOptions, nc: int, anchors: Any, device: torch.device,
                model_class: type | None = None) -> tuple[nn.Module, dict | None]:
    """Build the model (``model_class``, default ``models.yolo.Model``) from ``--cfg`` (or the checkpoint's
    architecture), transfer ``--weights`` then ``--backbone-weights`` (TrainError when missing or unmatched); returns
    ``(model, checkpoint to resume or None)``."""
    from models.yolo import Model

    Model = model_class or Model  # noqa: N806 (the class to build)
    resume_checkpoint = None
    if not opt.weights:
        model = Model(opt.cfg, ch=3, nc=nc, anchors=anchors).to(device)
    else:
        source = read_pretrained(opt.weights)
        cfg = opt.cfg or deepcopy(pretrained_model_yaml(source, opt.weights))
        model = Model(cfg, ch=3, nc=nc, anchors=anchors).to(device)
        exclude = ["anchor"] if (opt.cfg or anchors) and not opt.resume else []
        transfer_weights(model, source.state_dict, exclude=exclude, source=opt.weights)
        resume_checkpoint = source.checkpoint if opt.resume else None
    if opt.backbone_weights and not opt.resume:
        try:
            load_backbone_weights(opt.backbone_weights, model)
        except (ValueError, FileNotFoundError) as e:
            raise TrainError(f"--backbone-weights {opt.backbone_weights}: {e}") from e
    return model, resume_checkpoint


def resolve_epochs(opt: TrainOptions, checkpoint: dict | None) -> tuple[int, int]:
    """Return ``(start_epoch, epochs)``; a resume must be unfinished (more epochs than trained fine-tune).

    Raises:
        NothingToResumeError: the checkpoint is finished (stripped).
    """
    if checkpoint is None:
        return 0, opt.epochs
    trained = int(checkpoint.get("epoch", -1))
    start_epoch, epochs = trained + 1, opt.epochs
    if start_epoch <= 0:
        raise NothingToResumeError(f"{opt.weights} training to {opt.epochs} epochs is finished, nothing to "
                                   f"resume.\nStart a new training without --resume, i.e. 'python train.py "
                                   f"--weights {opt.weights}'")
    LOGGER.info(f"Resuming training from {opt.weights} from epoch {start_epoch} to {epochs} total epochs")
    if epochs < start_epoch:
        LOGGER.info(f"{opt.weights} has been trained for {trained} epochs. Fine-tuning for {epochs} more epochs.")
        epochs += trained
    return start_epoch, epochs


def build_optimizer(model: nn.Module, name: str, hyp: Hyp, epochs: int,
                    cos_lr: bool) -> tuple[torch.optim.Optimizer, Any, Callable[[int], float]]:
    """Return ``(optimizer, LambdaLR scheduler, LR lambda)``: upstream's 3 parameter groups, ``hyp`` (scaled) LRs."""
    optimizer = smart_optimizer(model, name, hyp.lr0, hyp.momentum, hyp.weight_decay)
    lf = one_cycle(1, hyp.lrf, epochs) if cos_lr else linear_lr(epochs, hyp.lrf)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=lf), lf


def build_dataloaders(opt: TrainOptions, info: DatasetInfo, imgsz: int, per_rank: int, gs: int, hyp: dict,
                      main: bool) -> tuple[Any, Any, Any]:
    """Return ``(train loader (augmented), its dataset, rectangular val loader or None on other DDP ranks)``."""
    from utils.data.loaders import create_dataloader

    cache = None if opt.cache == "val" else opt.cache
    train_loader, dataset = create_dataloader(
        info.train_path, imgsz, per_rank, gs, opt.single_cls, hyp=hyp, augment=True, cache=cache, rect=opt.rect,
        rank=get_local_rank(), workers=opt.workers, image_weights=opt.image_weights, quad=opt.quad,
        prefix=colorstr("train: "), shuffle=True, seed=opt.seed)
    val_loader = None
    if main:
        val_cache = None if opt.noval else ("ram" if opt.cache == "val" else opt.cache)
        val_loader = create_dataloader(
            info.val_path, imgsz, per_rank * 2, gs, opt.single_cls, hyp=hyp, cache=val_cache, rect=True, rank=-1,
            workers=opt.workers * 2, pad=0.5, prefix=colorstr("val: "))[0]
    return train_loader, dataset, val_loader


def check_label_classes(labels: np.ndarray, nc: int, train_path: Any, data: Any) -> None:
    """Warn when there are no labels; raise TrainError when a label class is ``>= nc``."""
    if not len(labels):
        LOGGER.warning(f"WARNING ⚠️ no labels found in {train_path}: the model can only learn background")
        return
    highest = int(labels[:, 0].max())
    if highest >= nc:
        raise TrainError(f"Label class {highest} exceeds nc={nc} in {data}. Possible class labels are 0-{nc - 1}")


def restore_resume_state(checkpoint: dict, optimizer: torch.optim.Optimizer, ema: Any) -> float:
    """Load the optimizer state and the EMA weights/update count of ``checkpoint``; returns its best fitness."""
    best_fitness = 0.0
    if checkpoint.get("optimizer") is not None:
        optimizer.load_state_dict(checkpoint["optimizer"])
        best = checkpoint.get("best_fitness")
        best_fitness = float(np.asarray(best).reshape(-1)[0]) if best is not None else 0.0
    if ema is not None and checkpoint.get("ema") is not None:
        ema.ema.load_state_dict(checkpoint["ema"].float().state_dict())
        ema.updates = int(checkpoint.get("updates") or 0)
    return best_fitness


def wrap_distributed(model: nn.Module, sync_bn: bool, device: torch.device) -> nn.Module:
    """Under a DDP launch (``LOCAL_RANK`` set, group up; even 1 process, as upstream): ``--sync-bn`` (CUDA only),
    then the DDP wrapper (gradients are averaged over ranks: the trainer multiplies the loss by ``WORLD_SIZE``)."""
    from utils.dist import wrap_ddp

    if get_local_rank() == -1 or not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return model
    if sync_bn:
        if device.type == "cuda":
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model).to(device)
            LOGGER.info("Using SyncBatchNorm()")
        else:
            LOGGER.warning("WARNING ⚠️ --sync-bn needs CUDA devices (torch's SyncBatchNorm has no CPU kernel); "
                           "ignored, each process keeps its own batch-norm statistics")
    return wrap_ddp(model, device)
