"""``TrainerSetup``: everything :class:`engine.trainer.Trainer` builds before the first epoch, in upstream's order.

run folder + hyp -> seeds -> dataset YAML -> model (+ ``--weights`` transfer) -> precision policy -> freeze -> image and
batch size -> epochs (resume) -> optimizer + LR schedule -> data loaders -> AutoAnchor -> EMA -> resume state ->
loss gains and model attributes -> loop constants. Each step is a small method that sets attributes on ``self``.
"""

from __future__ import annotations

import dataclasses
import subprocess
from copy import deepcopy
from pathlib import Path
from typing import Any

import numpy as np
import torch

from utils.callbacks import Callbacks
from utils.dist import broadcast_from_main, get_local_rank, get_rank, get_world_size, is_main_process, wrap_ddp
from utils.files import ROOT, yaml_save
from utils.loggers import Loggers
from utils.logging import LOGGER, colorstr
from utils.ops import check_img_size
from utils.optim import EarlyStopping, labels_to_class_weights, linear_lr, one_cycle, smart_optimizer
from utils.precision import select_precision
from utils.torch_utils import de_parallel, torch_distributed_zero_first
from engine.train_options import NothingToResumeError, TrainError, TrainOptions, load_hyp
from engine.train_setup import (
    check_amp,
    check_train_batch_size,
    freeze_layers,
    init_seeds,
    pretrained_model_yaml,
    read_pretrained,
    transfer_weights,
)

NOMINAL_BATCH_SIZE = 64  # upstream's nbs: gradients are accumulated up to this many images per optimizer step


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


class TrainerSetup:
    """Build the model, optimizer, data and loss for a run; base class of :class:`engine.trainer.Trainer`."""

    def __init__(self, options: TrainOptions, device: torch.device, callbacks: Callbacks) -> None:
        self.opt = dataclasses.replace(options, freeze=list(options.freeze))  # prepared: see train_options
        self.device = torch.device(device)
        self.callbacks = callbacks
        self.is_main, self.world_size = is_main_process(), get_world_size()
        self.save_dir = Path(self.opt.save_dir)
        self.weights_dir = self.save_dir / "weights"
        self.last, self.best = self.weights_dir / "last.pt", self.weights_dir / "best.pt"
        self.plots = not self.opt.evolve and not self.opt.noplots
        self.ema = None
        self.val_loader = None
        self.loggers: Loggers | None = None
        self._resume_checkpoint: dict | None = None
        self.broadcast = broadcast_from_main

    def setup(self) -> None:
        """Run every setup step; afterwards the trainer is ready for :meth:`Trainer.fit`."""
        self.callbacks.run("on_pretrain_routine_start")
        self._prepare_run_dir()
        init_seeds(self.opt.seed + 1 + get_rank(), deterministic=True)
        self._load_data()
        self._build_model()
        self._select_precision()
        freeze_layers(self.model, self.opt.freeze)
        self._image_and_batch_size()
        self._resolve_epochs()
        self._build_optimizer()
        self._build_dataloaders()
        self._pretrain_routine_end()
        self._build_ema()
        self._restore_resume_state()
        self._wrap_distributed()
        self._set_model_attributes()
        self._set_loop_constants()

    def _prepare_run_dir(self) -> None:
        """Load the hyperparameters; main process: create ``save_dir/weights``, write ``hyp.yaml``/``opt.yaml`` and
        register the loggers (CSV, TensorBoard, Comet: :class:`utils.loggers.Loggers`). Other DDP ranks write nothing.
        """
        opt = self.opt
        if self.is_main:
            self.weights_dir.mkdir(parents=True, exist_ok=True)
        hyp = load_hyp(opt.hyp)
        LOGGER.info(colorstr("hyperparameters: ") + ", ".join(f"{k}={v}" for k, v in hyp.items()))
        opt.hyp = dict(hyp)  # unscaled: what opt.yaml and checkpoints store
        self.hyp = dict(hyp)  # working copy: weight decay and loss gains are scaled below
        self.nbs = int(hyp.get("nbs", NOMINAL_BATCH_SIZE))
        if self.nbs < 1:
            raise TrainError(f"hyperparameter nbs={hyp['nbs']} (nominal batch size) must be a positive integer")
        if opt.sync_bn and self.world_size == 1:
            LOGGER.warning("WARNING ⚠️ --sync-bn only applies to multi-GPU DDP training; ignored")
        self.git = git_info() if self.is_main else {}
        if not self.is_main:
            return
        if not opt.evolve:
            yaml_save(self.save_dir / "hyp.yaml", hyp)
            yaml_save(self.save_dir / "opt.yaml", opt.to_dict())
            self.loggers = Loggers(self.save_dir, opt.weights, opt, hyp, plots=self.plots).register(self.callbacks)

    def _load_data(self) -> None:
        """Check the dataset YAML (generating a built-in dataset if needed); set paths, ``nc`` and ``names``."""
        from utils.data.dataset_yaml import check_dataset

        with torch_distributed_zero_first(get_local_rank()):
            self.data_dict = check_dataset(self.opt.data)
        data = self.data_dict
        self.train_path, self.val_path = data["train"], data["val"]
        self.nc = 1 if self.opt.single_cls else int(data["nc"])
        names = data["names"]
        self.names = {0: "item"} if self.opt.single_cls and len(names) != 1 else names
        self.is_coco = isinstance(self.val_path, str) and self.val_path.endswith("coco/val2017.txt")

    def _build_model(self) -> None:
        """Build the model from ``--cfg`` (or the checkpoint's architecture) and transfer matching weights."""
        from models.yolo import Model

        opt, anchors = self.opt, self.hyp.get("anchors")
        if not opt.weights:
            self.model = Model(opt.cfg, ch=3, nc=self.nc, anchors=anchors).to(self.device)
        else:
            source = read_pretrained(opt.weights)
            cfg = opt.cfg or deepcopy(pretrained_model_yaml(source, opt.weights))
            self.model = Model(cfg, ch=3, nc=self.nc, anchors=anchors).to(self.device)
            exclude = ["anchor"] if (opt.cfg or anchors) and not opt.resume else []
            transfer_weights(self.model, source.state_dict, exclude=exclude, source=opt.weights)
            self._resume_checkpoint = source.checkpoint if opt.resume else None
        if opt.backbone_weights and not opt.resume:
            self._transfer_backbone(opt.backbone_weights)

    def _transfer_backbone(self, path: str) -> None:
        """Copy only the backbone rows' tensors from ``path`` (after any --weights transfer, before the optimizer)."""
        from extensions.transfer import load_backbone_weights

        try:
            load_backbone_weights(path, self.model)
        except (ValueError, FileNotFoundError) as e:
            raise TrainError(f"--backbone-weights {path}: {e}") from e

    def _select_precision(self) -> None:
        """Choose the precision policy (:mod:`utils.precision`, logged with its reason) and the model's layout.

        CUDA: upstream's fp16 AMP when ``check_amp`` passes. CPU: bf16 autocast + channels_last where the CPU has
        native bf16, else fp32 channels_last. ``--fp32``: plain fp32 NCHW. ``amp`` is True only for fp16 AMP (it
        drives the GradScaler, AutoBatch and fp16 validation as upstream); bf16 needs no loss scaling.
        """
        cuda_amp = not self.opt.fp32 and check_amp(self.model)
        self.policy = select_precision(self.device, force_fp32=self.opt.fp32, cuda_amp=cuda_amp, log=self.is_main)
        self.amp = self.policy.autocast_dtype == torch.float16
        self.policy.prepare_model(self.model)

    @property
    def channels_last(self) -> bool:
        """True when the model and batches use the channels_last memory format (from the precision policy)."""
        return self.policy.channels_last

    def _image_and_batch_size(self) -> None:
        """Grid stride ``gs``, image size (a multiple of ``gs``, at least 2 gs) and batch size (AutoBatch for -1)."""
        self.gs = max(int(self.model.stride.max()), 32)
        self.imgsz = check_img_size(self.opt.imgsz, self.gs, floor=self.gs * 2)
        self.batch_size = self.opt.batch_size
        if self.batch_size == -1:
            if get_rank() != -1:
                raise TrainError("AutoBatch (--batch-size -1) works with single-GPU training only; pass a batch size")
            self.batch_size = check_train_batch_size(self.model, self.imgsz, self.amp)
            self.callbacks.run("on_params_update", {"batch_size": self.batch_size})
        if self.batch_size < 1:
            raise TrainError(f"--batch-size {self.opt.batch_size} is invalid: use a positive number or -1 (AutoBatch)")

    def _resolve_epochs(self) -> None:
        """Set ``start_epoch``/``epochs``; for a resume, check the checkpoint is unfinished (fine-tune if asked)."""
        state, opt, ckpt = self.state, self.opt, self._resume_checkpoint
        state.epochs, state.start_epoch = opt.epochs, 0
        if ckpt is None:
            return
        trained = int(ckpt.get("epoch", -1))
        state.start_epoch = trained + 1
        if state.start_epoch <= 0:
            raise NothingToResumeError(f"{opt.weights} training to {opt.epochs} epochs is finished, nothing to "
                                       f"resume.\nStart a new training without --resume, i.e. 'python train.py "
                                       f"--weights {opt.weights}'")
        LOGGER.info(f"Resuming training from {opt.weights} from epoch {state.start_epoch} to {state.epochs} total "
                    f"epochs")
        if state.epochs < state.start_epoch:
            LOGGER.info(f"{opt.weights} has been trained for {trained} epochs. Fine-tuning for {state.epochs} more "
                        f"epochs.")
            state.epochs += trained
        state.epoch = state.start_epoch - 1

    def _build_optimizer(self) -> None:
        """Accumulation to the nominal batch 64, scaled weight decay, 3 parameter groups and the LR lambda."""
        hyp = self.hyp
        self.state.accumulate = max(round(self.nbs / self.batch_size), 1)
        hyp["weight_decay"] *= self.batch_size * self.state.accumulate / self.nbs
        self.optimizer = smart_optimizer(self.model, self.opt.optimizer, hyp["lr0"], hyp["momentum"],
                                         hyp["weight_decay"])
        epochs = self.state.epochs
        self.lf = one_cycle(1, hyp["lrf"], epochs) if self.opt.cos_lr else linear_lr(epochs, hyp["lrf"])
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda=self.lf)

    def _build_dataloaders(self) -> None:
        """Create the training loader (augmented) and, on the main process, the rectangular val loader."""
        from utils.data.loaders import create_dataloader

        opt, per_rank = self.opt, self.batch_size // self.world_size
        cache = None if opt.cache == "val" else opt.cache
        self.train_loader, self.dataset = create_dataloader(
            self.train_path, self.imgsz, per_rank, self.gs, opt.single_cls, hyp=self.hyp, augment=True, cache=cache,
            rect=opt.rect, rank=get_local_rank(), workers=opt.workers, image_weights=opt.image_weights,
            quad=opt.quad, prefix=colorstr("train: "), shuffle=True, seed=opt.seed)
        self.labels = np.concatenate(self.dataset.labels, 0) if len(self.dataset.labels) else np.zeros((0, 5))
        self._check_label_classes()
        if self.is_main:
            val_cache = None if opt.noval else ("ram" if opt.cache == "val" else opt.cache)
            self.val_loader = create_dataloader(
                self.val_path, self.imgsz, per_rank * 2, self.gs, opt.single_cls, hyp=self.hyp, cache=val_cache,
                rect=True, rank=-1, workers=opt.workers * 2, pad=0.5, prefix=colorstr("val: "))[0]

    def _check_label_classes(self) -> None:
        if not len(self.labels):
            LOGGER.warning(f"WARNING ⚠️ no labels found in {self.train_path}: the model can only learn background")
            return
        highest = int(self.labels[:, 0].max())
        if highest >= self.nc:
            raise TrainError(f"Label class {highest} exceeds nc={self.nc} in {self.opt.data}. Possible class labels "
                             f"are 0-{self.nc - 1}")

    def _pretrain_routine_end(self) -> None:
        """Main process: AutoAnchor (new runs), fp16-round the weights as upstream, ``on_pretrain_routine_end``."""
        if not self.is_main:
            return
        if not self.opt.resume:
            if not self.opt.noautoanchor:
                from utils.autoanchor import check_anchors

                check_anchors(self.dataset, model=self.model, thr=self.hyp["anchor_t"], imgsz=self.imgsz)
            self.model.half().float()  # pre-reduce anchor precision
        self.callbacks.run("on_pretrain_routine_end", self.labels, self.names)

    def _build_ema(self) -> None:
        from utils.ema import ModelEMA

        self.ema = ModelEMA(self.model) if self.is_main else None

    def _restore_resume_state(self) -> None:
        """Resume: load optimizer state, best fitness, EMA weights and update count; trim ``results.csv``."""
        ckpt, self._resume_checkpoint = self._resume_checkpoint, None
        if ckpt is None:
            return
        if ckpt.get("optimizer") is not None:
            self.optimizer.load_state_dict(ckpt["optimizer"])
            best = ckpt.get("best_fitness")
            self.state.best_fitness = float(np.asarray(best).reshape(-1)[0]) if best is not None else 0.0
        if self.ema is not None and ckpt.get("ema") is not None:
            self.ema.ema.load_state_dict(ckpt["ema"].float().state_dict())
            self.ema.updates = int(ckpt.get("updates") or 0)
        if self.loggers is not None and self.loggers.csv is not None:
            self.loggers.csv.truncate_from(self.state.start_epoch)

    def _wrap_distributed(self) -> None:
        """DDP launch (``LOCAL_RANK`` set, process group up): ``--sync-bn`` (CUDA only), then the DDP wrapper.

        The EMA, checkpoints, validation and the loss use ``de_parallel(self.model)``; gradients are averaged over
        the ranks, which is why :meth:`Trainer.train_step` multiplies the loss by ``WORLD_SIZE`` (as upstream).
        """
        if get_local_rank() == -1 or not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return  # not launched by torch.distributed.run (a 1-process launch is still wrapped, as upstream)
        if self.opt.sync_bn:
            if self.device.type == "cuda":
                self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model).to(self.device)
                LOGGER.info("Using SyncBatchNorm()")
            else:
                LOGGER.warning("WARNING ⚠️ --sync-bn needs CUDA devices (torch's SyncBatchNorm has no CPU kernel); "
                               "ignored, each process keeps its own batch-norm statistics")
        self.model = wrap_ddp(self.model, self.device)

    def _set_model_attributes(self) -> None:
        """Scale loss gains by levels, classes and image size; attach nc/hyp/names/class weights; build the loss."""
        from utils.loss import build_loss

        hyp, model = self.hyp, de_parallel(self.model)
        levels = getattr(model.model[-1], "nl", 3)
        hyp["box"] *= 3 / levels
        hyp["cls"] *= self.nc / 80 * 3 / levels
        hyp["obj"] *= (self.imgsz / 640) ** 2 * 3 / levels
        hyp["label_smoothing"] = self.opt.label_smoothing
        model.nc, model.hyp, model.names = self.nc, hyp, self.names
        model.class_weights = labels_to_class_weights(self.dataset.labels, self.nc).to(self.device) * self.nc
        self.compute_loss = build_loss(self.model)

    def _set_loop_constants(self) -> None:
        """Batches per epoch ``nb``, warmup steps ``nw`` (>= 100), the AMP grad scaler and early stopping."""
        self.nb = len(self.train_loader)
        self.nw = max(round(self.hyp["warmup_epochs"] * self.nb), 100)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp)
        self.stopper = EarlyStopping(patience=self.opt.patience)

    def describe(self) -> dict[str, Any]:
        """Return the derived settings (for logs and tests): image size, batch, accumulation, warmup, groups."""
        return {"imgsz": self.imgsz, "batch_size": self.batch_size, "accumulate": self.state.accumulate,
                "nb": self.nb, "nw": self.nw, "amp": self.amp, "precision": self.policy.name,
                "weight_decay": self.hyp["weight_decay"],
                "param_groups": [len(g["params"]) for g in self.optimizer.param_groups]}
