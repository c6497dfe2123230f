"""The autoencoder pretraining loop (``python -m extensions.pretrain``): a :class:`engine.loop.TrainingLoop` with one
optimizer step per batch and no clipping.

Per step: uint8 batch -> [0, 1] -> (flip for unlabeled sources) -> box mask -> pretext input/target -> forward under
the precision policy's autocast -> box-masked weighted MSE in fp32. Per epoch: validation loss on the ``val:`` split
(else the training loss), ``results.csv``, ``recon_epoch{N}.png``, ``weights/last.pt`` and, when the loss improved,
``best.pt``. Callbacks use upstream's hook names and arguments (so train.py's loggers work), with ``vals`` in
:data:`extensions.autoencoder.plots.RESULTS_KEYS` order, ``on_train_batch_end(..., vals=[loss])`` and fitness = -loss.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm import tqdm

from engine.environment import init_seeds
from engine.loop import TQDM_BAR_FORMAT, LoopState, TrainingLoop
from extensions.autoencoder.data import build_pretrain_data, random_fliplr
from extensions.autoencoder.export import (
    init_encoder_from,
    load_pretrain_checkpoint,
    make_pretrain_checkpoint,
    save_pretrain_checkpoint,
)
from extensions.autoencoder.loss import box_mask, images_with_boxes, loss_weights, masked_mse, pretext_pair
from extensions.autoencoder.model import Autoencoder
from extensions.autoencoder.plots import (
    RESULTS_KEYS,
    append_results,
    plot_losses,
    save_reconstruction_grid,
    truncate_results,
)
from utils.callbacks import Callbacks
from utils.dist import get_local_rank, get_rank, init_distributed, wrap_ddp
from utils.ema import ModelEMA
from utils.loggers import Loggers
from utils.logging import LOGGER, colorstr
from utils.ops import check_img_size
from utils.optim import one_cycle, smart_optimizer
from utils.precision import select_precision
from utils.torch_utils import de_parallel, select_device

MOMENTUM = {"sgd": 0.937, "adam": 0.9, "adamw": 0.9}  # SGD momentum / Adam beta1 (the original: Adam(0.9, 0.999))
PRETRAIN_HYP_KEYS = ("lr", "lrf", "weight_decay", "optimizer", "mask_p", "pretext", "skips", "ema", "batch_size",
                     "imgsz")  # logged to Comet as the run's hyperparameters


def register_pretrain_loggers(opt: argparse.Namespace, callbacks: Callbacks) -> Loggers:
    """Register train.py's TensorBoard and Comet loggers (main process) with the pretrainer's metric names.

    The pretrainer writes its own ``results.csv`` (:data:`extensions.autoencoder.plots.RESULTS_KEYS`); TensorBoard
    scalars and Comet metrics use the same names, Comet's job type is "Pretraining". Comet resume: ``--resume``
    continues the experiment whose key the run folder holds.
    """
    hyp = {k: getattr(opt, k) for k in PRETRAIN_HYP_KEYS if hasattr(opt, k)}
    return Loggers(opt.save_dir, opt.weights, opt, hyp, plots=not opt.noplots, keys=RESULTS_KEYS,
                   job_type="Pretraining").register(callbacks)


@dataclass
class PretrainState(LoopState):
    """The loop state with fitness = -loss (``best_fitness`` starts at -inf) and ``loss_total``, the sum of this
    epoch's batch losses."""

    best_fitness: float = -math.inf
    loss_total: float = 0.0


class PretrainTrainer(TrainingLoop):
    """Train an :class:`Autoencoder` with the options of ``extensions.pretrain`` (``save_dir`` set; ``resume`` False
    or a ``last.pt`` to continue). Setup runs in the constructor; ``data`` is the :class:`PretrainData`."""

    divergence_hint = "lower --lr or use --fp32"
    resume_command = "python -m extensions.pretrain --resume"

    def __init__(self, opt: argparse.Namespace, callbacks: Callbacks | None = None):
        super().__init__(PretrainState(), opt.save_dir, callbacks)
        self.opt = opt
        self.csv = self.save_dir / "results.csv"
        self.data: Any = None  # extensions.autoencoder.data.PretrainData
        self.imgsz = 0
        self.preview: tuple[torch.Tensor, torch.Tensor] | None = None  # fixed images of the reconstruction grid
        self.loggers = register_pretrain_loggers(opt, self.callbacks) if self.is_main else None
        try:
            self.setup()
        except BaseException:
            self.callbacks.run("teardown")  # end a Comet experiment / TensorBoard writer started above
            raise

    @property
    def best_loss(self) -> float:
        """Lowest epoch loss so far (validation loss, or training loss without a val split); inf before any."""
        return -self.state.best_fitness

    def setup(self) -> None:
        """Seeds, device (DDP: this rank's), precision, model, data, optimizer, resume state, DDP wrapper."""
        opt, state = self.opt, self.state
        self.callbacks.run("on_pretrain_routine_start")
        init_seeds(opt.seed + max(get_rank(), 0))
        self.device = select_device(opt.device, batch_size=opt.batch_size)
        if get_local_rank() != -1:
            self.device = init_distributed(self.device)  # joins the group pretrain.main started (or starts it)
        self.policy = select_precision(self.device, force_fp32=opt.fp32)
        resume_ckpt = load_pretrain_checkpoint(opt.resume) if opt.resume else None
        self._setup_model(resume_ckpt)
        self.imgsz = check_img_size(opt.imgsz, self.model.stride, floor=self.model.stride)
        self.data = build_pretrain_data(opt.data, self.imgsz, opt.batch_size // self.world_size, self.model.stride,
                                        opt.workers, opt.cache, rank=get_local_rank(), val=self.is_main)
        self.train_loader, self.nb = self.data.train_loader, len(self.data.train_loader)
        self.preview = self._preview_batch()
        momentum = MOMENTUM.get(opt.optimizer.lower(), 0.9)
        self.optimizer = smart_optimizer(self.model, opt.optimizer, opt.lr, momentum, decay=opt.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, one_cycle(1.0, opt.lrf, opt.epochs))
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.policy.autocast_dtype == torch.float16)
        state.epochs = opt.epochs
        if resume_ckpt is not None:
            self._restore_state(resume_ckpt)
        state.epoch = state.start_epoch - 1
        if get_local_rank() != -1 and torch.distributed.is_initialized():
            self.model = wrap_ddp(self.model, self.device)
        labels = [x for x in self.data.train_dataset.labels if len(x)]
        self.callbacks.run("on_pretrain_routine_end", np.concatenate(labels, 0) if labels else np.zeros((0, 5)), {})
        self.ready = True

    def _setup_model(self, resume_ckpt: dict | None) -> None:
        opt = self.opt
        self.model = Autoencoder(opt.cfg, skips=opt.skips)
        if resume_ckpt is not None:
            self.model.load_state_dict(resume_ckpt["autoencoder"])
        elif opt.weights:
            init_encoder_from(opt.weights, self.model)
        self.model = self.policy.prepare_model(self.model.to(self.device))
        self.ema = ModelEMA(self.model) if opt.ema and self.is_main else None
        n_params = sum(p.numel() for p in self.model.parameters())
        cfg_name = opt.cfg if isinstance(opt.cfg, str) else "checkpoint YAML"
        LOGGER.info(f"{colorstr('autoencoder:')} {cfg_name} backbone ({self.model.backbone_layers} rows) + decoder, "
                    f"{n_params / 1e6:.2f}M parameters, stride {self.model.stride}, skips={self.model.skips}")

    def _restore_state(self, ckpt: dict) -> None:
        """Continue a run: optimizer, EMA, best loss and epoch from ``ckpt``; drop re-trained results.csv rows."""
        if ckpt.get("optimizer") is None:
            raise RuntimeError(f"{self.opt.resume}: this run finished (no optimizer state), nothing to resume; "
                               f"start a new run with --weights {self.opt.resume} to continue from its encoder")
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.ema is not None and ckpt.get("autoencoder_ema") is not None:
            self.ema.ema.load_state_dict(ckpt["autoencoder_ema"])
            self.ema.updates = int(ckpt.get("ema_updates", 0))
        start_epoch = self.state.start_epoch = int(ckpt["epoch"]) + 1
        self.state.best_fitness = -float(ckpt["best_loss"])
        factor = self.scheduler.lr_lambdas[0](start_epoch)
        for group, base_lr in zip(self.optimizer.param_groups, self.scheduler.base_lrs, strict=True):
            group["lr"] = base_lr * factor
        self.scheduler.last_epoch = start_epoch
        truncate_results(self.csv, start_epoch)
        LOGGER.info(f"Resuming pretraining from {self.opt.resume} at epoch {start_epoch} of {self.opt.epochs}")

    def _preview_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Fixed images for the per-epoch reconstruction grid: the first val images, else the first train ones."""
        loader = self.data.val_loader or self.data.train_loader
        dataset = loader.dataset
        batch = dataset.collate_fn([dataset[i] for i in range(min(4, len(dataset)))])
        return batch[0], batch[1]

    def log_start(self) -> None:
        """Log the image size, workers, pretext, the run folder and the epoch count."""
        opt = self.opt
        LOGGER.info(f"Image size {self.imgsz}, {self.data.train_loader.num_workers} dataloader workers, pretext "
                    f"'{opt.pretext}', mask p={opt.mask_p}\nLogging results to {colorstr('bold', self.save_dir)}\n"
                    f"Starting pretraining for {opt.epochs} epochs...")

    def _step_inputs(self, images: torch.Tensor, targets: torch.Tensor,
                     flip_p: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """uint8 batch + labels -> (network input, target, per-pixel weights, box mask), all on the device."""
        images = images.to(self.device, non_blocking=True).float() / 255
        targets = targets.to(self.device)
        images, targets = random_fliplr(images, targets, flip_p)
        b, _, h, w = images.shape
        mask = box_mask(targets, b, h, w)
        has_boxes = images_with_boxes(targets, b)
        inputs, target = pretext_pair(images, mask, has_boxes, self.opt.pretext)
        return inputs, target, loss_weights(mask, has_boxes, self.opt.mask_p), mask

    def _loss(self, model: torch.nn.Module, inputs: torch.Tensor, target: torch.Tensor,
              weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with self.policy.autocast():
            reconstruction = model(self.policy.prepare_input(inputs))
        return masked_mse(reconstruction.float(), target, weights), reconstruction

    def before_epoch(self, epoch: int) -> None:
        """Start this epoch's loss sum."""
        self.state.loss_total = 0.0

    def forward_loss(self, i: int, epoch: int, batch: Sequence) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Pretext input/target of the batch, reconstruction and masked MSE; the input is the uint8 batch."""
        inputs, target, weights, _ = self._step_inputs(batch[0], batch[1], self.data.batch_flip_p)
        loss, _ = self._loss(self.model, inputs, target, weights)
        return loss, loss.detach().view(1), batch[0]

    def end_batch(self, i: int, epoch: int, batch: Sequence, inputs: torch.Tensor, loss_items: torch.Tensor,
                  progress: Any) -> None:
        """Add the batch loss to the epoch sum, show the mean, main process: ``on_train_batch_end(vals=[loss])``."""
        batch_loss = loss_items.item()
        self.state.loss_total += batch_loss
        progress.set_description(f"{epoch}/{self.opt.epochs - 1} loss {self.state.loss_total / (i + 1):.4g}")
        if self.is_main:
            self.callbacks.run("on_train_batch_end", self.model, self.state.step, inputs, batch[1], batch[2],
                               [batch_loss])

    @torch.no_grad()
    def validate(self) -> float:
        """Mean loss on the ``val:`` split with the EMA (or the model) in eval mode; NaN without a val split."""
        if self.data.val_loader is None:
            return float("nan")
        model = self._eval_model()
        total, count = 0.0, 0
        for images, targets, _, _ in tqdm(self.data.val_loader, desc="val", bar_format=TQDM_BAR_FORMAT):
            inputs, target, weights, _ = self._step_inputs(images, targets, 0.0)
            total += self._loss(model, inputs, target, weights)[0].item() * images.shape[0]
            count += images.shape[0]
        return total / max(count, 1)

    def _eval_model(self) -> torch.nn.Module:
        model = self.ema.ema if self.ema is not None else de_parallel(self.model)
        return model.eval()

    @torch.no_grad()
    def save_preview(self, file: Path) -> Path:
        """Reconstruct the preview images and save the ``input | reconstruction | [target |] mask`` grid."""
        inputs, target, weights, mask = self._step_inputs(*self.preview, 0.0)
        _, reconstruction = self._loss(self._eval_model(), inputs, target, weights)
        shown_target = target if self.opt.pretext == "boxes" else None
        return save_reconstruction_grid(file, inputs, reconstruction, mask, shown_target)

    def evaluate(self, epoch: int) -> None:
        """Validate, log ``results.csv``, plot the preview grid and save ``last.pt`` / ``best.pt``."""
        state = self.state
        train_loss, lr = state.loss_total / max(self.nb, 1), state.lr[0]
        val_loss = self.validate()
        loss = val_loss if math.isfinite(val_loss) else train_loss
        improved = loss < self.best_loss
        state.fitness, state.best_fitness = -loss, -min(self.best_loss, loss)
        append_results(self.csv, epoch, [train_loss, val_loss, lr])
        if not self.opt.noplots:
            self.save_preview(self.save_dir / f"recon_epoch{epoch}.png")
        self.model.train()
        self.callbacks.run("on_fit_epoch_end", [train_loss, val_loss, lr], epoch, state.best_fitness, state.fitness)
        ckpt = make_pretrain_checkpoint(de_parallel(self.model), epoch, self.best_loss, self.optimizer, self.ema,
                                        vars(self.opt))
        self.save_epoch(ckpt, epoch, epoch + 1 == self.opt.epochs, improved)
        LOGGER.info(f"epoch {epoch}: train loss {train_loss:.5g}, val loss {val_loss:.5g}, best {self.best_loss:.5g}")

    def finish(self) -> dict:
        """Strip the optimizer from last/best, plot the losses, export the backbone if asked, ``on_train_end``;
        returns ``{'last', 'best', 'best_loss', 'epoch'}``. Other DDP ranks only return the result (rank 0 writes
        every file)."""
        epoch = self.state.epoch
        result = {"last": self.last, "best": self.best, "best_loss": self.best_loss, "epoch": epoch}
        if not self.is_main:
            return result
        for file in (self.last, self.best):
            if file.is_file():
                ckpt = load_pretrain_checkpoint(file)
                ckpt["optimizer"] = None
                save_pretrain_checkpoint(ckpt, file)
        if self.csv.is_file() and not self.opt.noplots:
            plot_losses(self.csv)
        if self.opt.save_backbone and self.best.is_file():
            from extensions.autoencoder.export import export_backbone

            export_backbone(self.best, self.weights_dir / "backbone.pt")
        hours = (time.time() - self.t0) / 3600
        LOGGER.info(f"{epoch - self.state.start_epoch + 1} epochs completed in {hours:.3f} hours.\n"
                    f"Results saved to {colorstr('bold', self.save_dir)}; backbone weights for "
                    f"`train.py --backbone-weights`: {self.best}")
        self.callbacks.run("on_train_end", self.last, self.best, epoch, [self.best_loss])
        return result
