"""The YOLOv5 training loop as a ``Trainer`` object with explicit, inspectable state (``TrainState``).

Order of work (upstream's): setup (:mod:`engine.trainer_setup`) -> for each epoch: train batches (warmup, forward,
loss, backward, accumulated optimizer step with gradient clipping and EMA) -> validate the EMA -> fitness ->
``results.csv`` via callbacks -> save ``last.pt``/``best.pt`` -> after the last epoch: strip the checkpoints and
validate ``best.pt`` with plots. Logging and plots happen only through :class:`utils.callbacks.Callbacks` hooks
(upstream's names and arguments) and only on the main process (rank -1 or 0).

A non-finite loss or gradient stops training with :class:`NonFiniteLossError` naming the batch (index and image
paths); ``last.pt`` from the previous epoch is left intact and resumable. ``callbacks.stop_training`` or Ctrl-C
also leave a resumable ``last.pt``.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from utils.callbacks import Callbacks
from utils.checkpoint import load_model, make_checkpoint, save_checkpoint, strip_optimizer
from utils.logging import LOGGER, colorstr
from utils.metrics import fitness
from utils.optim import labels_to_image_weights
from utils.precision import float_outputs
from utils.torch_utils import de_parallel
from engine.train_options import TrainError, TrainOptions
from engine.trainer_setup import TrainerSetup

TQDM_BAR_FORMAT = "{l_bar}{bar:10}{r_bar}"
GRAD_CLIP_NORM = 10.0  # max gradient L2 norm before each optimizer step
LOSS_NAMES = ("box_loss", "obj_loss", "cls_loss")


class NonFiniteLossError(TrainError):
    """The loss (or gradient norm) became NaN/inf; the message names the epoch, batch and image paths."""


@dataclass
class TrainState:
    """Everything that changes while training; upstream's loop locals, made inspectable and checkpointable.

    Attributes:
        epoch: current epoch (0-based). start_epoch/epochs: the loop runs ``range(start_epoch, epochs)``.
        step: global batch index ``ni = batch + nb * epoch``. last_opt_step: ``step`` of the last optimizer step.
        accumulate: batches per optimizer step (grows to ``64 / batch_size`` during warmup).
        best_fitness/fitness: best and latest fitness (0.1 mAP50 + 0.9 mAP50-95).
        mean_loss: running mean (3,) of (box, obj, cls) loss items this epoch. results: latest validation
        ``(P, R, mAP50, mAP50-95, val box, obj, cls)``. maps: (nc,) per-class mAP50-95. lr: per-group LR.
        stop: early stopping fired. interrupted: a callback asked to stop (the run stays resumable).
    """

    epoch: int = 0
    start_epoch: int = 0
    epochs: int = 0
    step: int = 0
    last_opt_step: int = -1
    accumulate: int = 1
    best_fitness: float = 0.0
    fitness: float = 0.0
    mean_loss: torch.Tensor | None = None
    results: tuple = (0.0,) * 7
    maps: np.ndarray = field(default_factory=lambda: np.zeros(0))
    lr: list = field(default_factory=list)
    stop: bool = False
    interrupted: bool = False


class Trainer(TrainerSetup):
    """Train a YOLOv5 model as ``train.py`` does; ``Trainer(options, device, callbacks).train()`` returns results.

    Args:
        options: prepared options (``save_dir`` chosen, files checked; see :mod:`engine.train_options`).
        device: the torch device to train on. callbacks: upstream-compatible hooks (loggers, extensions).

    Subclasses may override :meth:`compute_batch_loss` to train the same loop with another objective.
    """

    def __init__(self, options: TrainOptions, device: torch.device, callbacks: Callbacks | None = None) -> None:
        super().__init__(options, device, callbacks if callbacks is not None else Callbacks())
        self.state = TrainState()

    def train(self) -> tuple:
        """Run setup, the epochs and the final validation; returns the last results tuple (7 floats)."""
        determinism = (torch.are_deterministic_algorithms_enabled(),
                       torch.is_deterministic_algorithms_warn_only_enabled())
        try:
            self.setup()
            self.fit()
            return self.finish()
        except KeyboardInterrupt:
            if self.is_main and self.last.is_file():
                LOGGER.info(f"\nInterrupted. Resume with: python train.py --resume {self.last}")
            raise
        finally:
            torch.use_deterministic_algorithms(determinism[0], warn_only=determinism[1])
            self.callbacks.run("teardown")

    def fit(self) -> None:
        """Train epochs ``start_epoch .. epochs-1``, validating and saving after each one."""
        state = self.state
        state.maps, state.mean_loss = np.zeros(self.nc), torch.zeros(3, device=self.device)
        state.lr = [float(group["lr"]) for group in self.optimizer.param_groups]
        self._start_schedule()
        self.t0 = time.time()
        self.callbacks.run("on_train_start")
        LOGGER.info(f"Image sizes {self.imgsz} train, {self.imgsz} val\n"
                    f"Using {self.train_loader.num_workers * self.world_size} dataloader workers\n"
                    f"Logging results to {colorstr('bold', self.save_dir)}\n"
                    f"Starting training for {state.epochs} epochs...")
        for epoch in range(state.start_epoch, state.epochs):
            state.epoch = epoch
            self.train_one_epoch(epoch)
            if state.interrupted:
                break
            self.end_epoch(epoch)
            if state.stop or state.interrupted:
                break

    def _start_schedule(self) -> None:
        """Position the per-epoch LR scheduler as upstream: ``last_epoch = start_epoch - 1`` (new and resumed runs)."""
        self.scheduler.last_epoch = self.state.start_epoch - 1

    def train_one_epoch(self, epoch: int) -> None:
        """Run one pass over the training batches (``on_train_epoch_start`` .. LR scheduler step)."""
        self.callbacks.run("on_train_epoch_start")
        self.model.train()
        if self.opt.image_weights:
            self._resample_images()
        self.state.mean_loss = torch.zeros(3, device=self.device)
        sampler = getattr(self.train_loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        batches = enumerate(self.train_loader)
        if self.is_main:
            LOGGER.info(("\n" + "%11s" * 7) % ("Epoch", "GPU_mem", *LOSS_NAMES, "Instances", "Size"))
            batches = tqdm(batches, total=self.nb, bar_format=TQDM_BAR_FORMAT)
        self.optimizer.zero_grad()
        deferred_stop = False
        for i, (images, targets, paths, _) in batches:
            self.callbacks.run("on_train_batch_start")
            self.train_step(i, epoch, images, targets, paths, batches)
            if self.callbacks.stop_training and self.world_size > 1:
                if not deferred_stop:  # only this rank knows: stopping here would leave the others waiting
                    LOGGER.info(f"Stop requested at epoch {epoch}, batch {i}: finishing the epoch on all DDP ranks")
                deferred_stop = True
            elif self.callbacks.stop_training:
                self.state.interrupted = True
                LOGGER.info(f"Training stopped by a callback at epoch {epoch}, batch {i}")
                return
        self.state.lr = [float(group["lr"]) for group in self.optimizer.param_groups]
        self.scheduler.step()

    def train_step(self, i: int, epoch: int, images: torch.Tensor, targets: torch.Tensor, paths: Sequence[str],
                   progress: Any = None) -> None:
        """Forward, loss, backward and (every ``accumulate`` batches) an optimizer step for batch ``i``."""
        state = self.state
        state.step = ni = i + self.nb * epoch
        images = self.policy.prepare_input(images).to(self.device, non_blocking=True).float() / 255
        if ni <= self.nw:
            self._warmup(ni, epoch)
        if self.opt.multi_scale:
            images = self._multi_scale(images)
        loss, loss_items = self.compute_batch_loss(images, targets.to(self.device))
        loss = loss * self.world_size * (4.0 if self.opt.quad else 1.0)
        self._check_finite(loss, loss_items, i, epoch, paths)
        self.scaler.scale(loss).backward()
        if ni - state.last_opt_step >= state.accumulate:
            self._optimizer_step(i, epoch, paths)
            state.last_opt_step = ni
        if self.is_main:
            state.mean_loss = (state.mean_loss * i + loss_items.detach()) / (i + 1)
            if isinstance(progress, tqdm):
                progress.set_description(self._progress_text(epoch, targets.shape[0], images.shape[-1]))
            self.callbacks.run("on_train_batch_end", self.model, ni, images, targets, paths,
                               list(state.mean_loss))

    def compute_batch_loss(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(loss * batch, items (3,))`` for a batch: images (b, 3, h, w) in [0, 1], targets (n, 6).

        The forward pass runs under the precision policy's autocast (bf16 on CPU, fp16 on CUDA, or none); target
        assignment and the loss run in fp32, outside autocast. A loss with ``casts_to_fp32`` (``ComputeLoss``) gets
        the raw outputs and casts what it reads (positives, objectness) itself, so the full-size gradient tensors
        stay in the low precision; any other loss gets ``float_outputs(predictions)``.
        """
        with self.policy.autocast():
            predictions = self.model(images)
        if not getattr(self.compute_loss, "casts_to_fp32", False):
            predictions = float_outputs(predictions)
        return self.compute_loss(predictions, targets)

    def _progress_text(self, epoch: int, instances: int, size: int) -> str:
        memory = torch.cuda.memory_reserved() / 1e9 if torch.cuda.is_available() else 0
        return ("%11s" * 2 + "%11.4g" * 5) % (f"{epoch}/{self.state.epochs - 1}", f"{memory:.3g}G",
                                             *self.state.mean_loss.tolist(), instances, size)

    def _warmup(self, ni: int, epoch: int) -> None:
        """Ramp accumulate, LRs (bias from ``warmup_bias_lr``, others from 0) and momentum over ``nw`` steps."""
        hyp, x_points = self.hyp, [0, self.nw]
        self.state.accumulate = max(1, int(np.interp(ni, x_points, [1, self.nbs / self.batch_size]).round()))
        for j, group in enumerate(self.optimizer.param_groups):
            start_lr = hyp["warmup_bias_lr"] if j == 0 else 0.0
            group["lr"] = float(np.interp(ni, x_points, [start_lr, group["initial_lr"] * self.lf(epoch)]))
            if "momentum" in group:
                group["momentum"] = float(np.interp(ni, x_points, [hyp["warmup_momentum"], hyp["momentum"]]))

    def _multi_scale(self, images: torch.Tensor) -> torch.Tensor:
        """Resize the batch to a random size in [0.5, 1.5] x imgsz (a multiple of the grid stride), bilinear."""
        gs = self.gs
        size = random.randrange(int(self.imgsz * 0.5), int(self.imgsz * 1.5) + gs) // gs * gs
        factor = size / max(images.shape[2:])
        if factor != 1:
            new_shape = [math.ceil(x * factor / gs) * gs for x in images.shape[2:]]
            images = F.interpolate(images, size=new_shape, mode="bilinear", align_corners=False)
        return self.policy.prepare_input(images)

    def _optimizer_step(self, i: int, epoch: int, paths: Sequence[str]) -> None:
        """Unscale, clip gradients to norm 10, step the optimizer and the EMA, zero the gradients."""
        self.scaler.unscale_(self.optimizer)
        norm = nn.utils.clip_grad_norm_(self.model.parameters(), max_norm=GRAD_CLIP_NORM)
        if not self.amp and not torch.isfinite(norm):  # with AMP the scaler skips such steps by design
            self._raise_non_finite("gradient norm", float(norm), i, epoch, paths)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad()
        if self.ema is not None:
            self.ema.update(self.model)

    def _check_finite(self, loss: torch.Tensor, loss_items: torch.Tensor, i: int, epoch: int,
                      paths: Sequence[str]) -> None:
        if not torch.isfinite(loss).all():
            items = ", ".join(f"{n}={v:.4g}" for n, v in zip(LOSS_NAMES, loss_items.tolist(), strict=True))
            self._raise_non_finite(f"loss ({items})", float(loss), i, epoch, paths)

    def _raise_non_finite(self, what: str, value: float, i: int, epoch: int, paths: Sequence[str]) -> None:
        weights_bad = any(not torch.isfinite(p).all() for p in self.model.parameters())
        cause = ("the model weights are already non-finite (training diverged: try a lower lr0 in --hyp)"
                 if weights_bad else "the weights are finite, so this batch triggered it: check its labels/images")
        kept = (f"{self.last} (epoch {epoch - 1}) is intact; resume with --resume {self.last}"
                if self.last.is_file() else "no checkpoint was written yet")
        shown = "\n  ".join(map(str, paths[:32])) + ("\n  ..." if len(paths) > 32 else "")
        raise NonFiniteLossError(f"non-finite {what} = {value} at epoch {epoch}, batch {i} (global step "
                                 f"{self.state.step}); {cause}. Training stopped; {kept}.\nImages of this batch:"
                                 f"\n  {shown}")

    def _resample_images(self) -> None:
        """``--image-weights``: draw this epoch's images with weights favouring rare, poorly detected classes."""
        class_weights = de_parallel(self.model).class_weights.cpu().numpy() * (1 - self.state.maps) ** 2 / self.nc
        image_weights = labels_to_image_weights(self.dataset.labels, nc=self.nc, class_weights=class_weights)
        self.dataset.indices = random.choices(range(self.dataset.n), weights=image_weights, k=self.dataset.n)

    def end_epoch(self, epoch: int) -> None:
        """Main process: EMA attributes, validation, fitness, early stopping, ``on_fit_epoch_end``, checkpoints."""
        state = self.state
        if self.is_main:
            self.callbacks.run("on_train_epoch_end", epoch=epoch)
            self.ema.update_attr(de_parallel(self.model),
                                 include=["yaml", "nc", "hyp", "names", "stride", "class_weights"])
            final_epoch = epoch + 1 == state.epochs or self.stopper.possible_stop
            if not self.opt.noval or final_epoch:
                state.results, state.maps = self.validate()
            state.fitness = float(fitness(np.array(state.results).reshape(1, -1))[0])
            state.stop = self.stopper(epoch=epoch, fitness=state.fitness)
            state.best_fitness = max(state.best_fitness, state.fitness)
            log_values = [*state.mean_loss.tolist(), *state.results, *state.lr]
            self.callbacks.run("on_fit_epoch_end", log_values, epoch, state.best_fitness, state.fitness)
            if not self.opt.nosave or (final_epoch and not self.opt.evolve):
                self.save(epoch, final_epoch)
            state.interrupted = bool(self.callbacks.stop_training)
        stop, interrupted = self.broadcast((state.stop, state.interrupted))  # every DDP rank leaves the loop together
        state.stop, state.interrupted = bool(stop), bool(interrupted)

    def validate(self) -> tuple[tuple, np.ndarray]:
        """Validate the EMA model on the val loader (no plots); returns ``(results (7,), maps (nc,))``."""
        from engine import validator

        results, maps, _ = validator.run(self.data_dict, batch_size=self.batch_size // self.world_size * 2,
                                         imgsz=self.imgsz, half=self.amp, model=self.ema.ema,
                                         single_cls=self.opt.single_cls, dataloader=self.val_loader,
                                         save_dir=self.save_dir, plots=False, callbacks=self.callbacks,
                                         compute_loss=self.compute_loss, fp32=self.opt.fp32)
        return tuple(float(x) for x in results), np.asarray(maps)

    def save(self, epoch: int, final_epoch: bool) -> None:
        """Write ``last.pt`` (and ``best.pt`` when fitness is the best, ``epoch{N}.pt`` per --save-period)."""
        state = self.state
        ckpt = make_checkpoint(self.model, self.ema.ema, epoch, np.array([state.best_fitness]), self.ema.updates,
                               self.optimizer.state_dict(), self.opt.to_dict(), self.git)
        save_checkpoint(ckpt, self.last)
        if state.best_fitness == state.fitness:
            save_checkpoint(ckpt, self.best)
        if self.opt.save_period > 0 and epoch % self.opt.save_period == 0:
            save_checkpoint(ckpt, self.weights_dir / f"epoch{epoch}.pt")
        del ckpt
        self.callbacks.run("on_model_save", self.last, epoch, final_epoch, state.best_fitness, state.fitness)

    def finish(self) -> tuple:
        """After the last epoch: strip checkpoints, validate ``best.pt`` with plots, ``on_train_end``."""
        state = self.state
        if not self.is_main or state.interrupted:
            return state.results
        hours = (time.time() - self.t0) / 3600
        LOGGER.info(f"\n{state.epoch - state.start_epoch + 1} epochs completed in {hours:.3f} hours.")
        for checkpoint in (self.last, self.best):
            if checkpoint.exists():
                strip_optimizer(checkpoint)
        if self.best.exists():
            LOGGER.info(f"\nValidating {self.best}...")
            state.results = self.final_validation()
            if self.is_coco:
                log_values = [*state.mean_loss.tolist(), *state.results, *state.lr]
                self.callbacks.run("on_fit_epoch_end", log_values, state.epoch, state.best_fitness, state.fitness)
        self.callbacks.run("on_train_end", self.last, self.best, state.epoch, state.results)
        LOGGER.info(f"Results saved to {colorstr('bold', self.save_dir)}")
        return state.results

    def final_validation(self) -> tuple:
        """Validate stripped ``best.pt`` (fused) with verbose per-class output and plots; returns results."""
        from engine import validator

        model = load_model(self.best, self.device)
        results, _, _ = validator.run(self.data_dict, batch_size=self.batch_size // self.world_size * 2,
                                      imgsz=self.imgsz, model=model, iou_thres=0.65 if self.is_coco else 0.60,
                                      single_cls=self.opt.single_cls, dataloader=self.val_loader,
                                      save_dir=self.save_dir, save_json=self.is_coco, verbose=True,
                                      plots=self.plots, callbacks=self.callbacks, compute_loss=self.compute_loss,
                                      half=self.amp, fp32=self.opt.fp32)
        return tuple(float(x) for x in results)
