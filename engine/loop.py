"""``TrainingLoop``: the epoch/batch mechanics shared by the detection trainer and the autoencoder pretrainer.

Per batch: :meth:`~TrainingLoop.forward_loss` (subclass) -> finite-loss check -> scaled backward -> every
``accumulate`` batches an optimizer step (optional clipping, GradScaler, EMA) -> :meth:`~TrainingLoop.end_batch`.
Per epoch: LR scheduler step, then on the main process :meth:`~TrainingLoop.evaluate` (subclass: validation,
fitness, checkpoints), then rank 0's stop flags reach every DDP rank. ``callbacks.stop_training`` stops after the
batch (alone) or after the epoch (DDP: only one rank knows). A NaN/inf loss raises :class:`NonFiniteLossError`;
checkpoints are written atomically, so the previous ``last.pt`` survives a crash.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
import torch.nn as nn
from tqdm import tqdm

from engine.train_options import TrainError
from utils.callbacks import Callbacks
from utils.checkpoint import checkpoint_bytes, save_checkpoint
from utils.dist import broadcast_from_main, get_world_size, is_main_process
from utils.logging import LOGGER

TQDM_BAR_FORMAT = "{l_bar}{bar:10}{r_bar}"


class NonFiniteLossError(TrainError):
    """The loss (or gradient norm) became NaN/inf; the message names the epoch, batch and image paths."""


@dataclass
class LoopState:
    """Everything that changes while a loop runs: epochs ``range(start_epoch, epochs)``, global batch ``step``,
    ``accumulate`` batches per optimizer step, fitness (higher is better), the epoch's running ``mean_loss`` and
    per-group ``lr``, ``stop`` (the subclass's rule fired) and ``interrupted`` (a callback asked; resumable)."""

    epoch: int = 0
    start_epoch: int = 0
    epochs: int = 0
    step: int = 0
    last_opt_step: int = -1
    accumulate: int = 1
    best_fitness: float = 0.0
    fitness: float = 0.0
    mean_loss: torch.Tensor | None = None
    lr: list = field(default_factory=list)
    stop: bool = False
    interrupted: bool = False


class TrainingLoop:
    """Base of every training loop: ``setup()`` builds the collaborators, ``train()`` runs and finishes the epochs.

    ``state`` is a :class:`LoopState` (or subclass); checkpoints go to ``save_dir/weights/{last,best}.pt``.
    Subclasses may set ``loss_names``, ``grad_clip_norm`` (None: no clipping), ``divergence_hint``, ``resume_command``.
    """

    loss_names: tuple[str, ...] = ("loss",)
    grad_clip_norm: float | None = None
    divergence_hint = "try a lower learning rate"
    resume_command = "python train.py --resume"

    def __init__(self, state: LoopState, save_dir: str | Path, callbacks: Callbacks | None = None) -> None:
        self.state = state
        self.callbacks = callbacks if callbacks is not None else Callbacks()
        self.save_dir = Path(save_dir)
        self.weights_dir = self.save_dir / "weights"
        self.last, self.best = self.weights_dir / "last.pt", self.weights_dir / "best.pt"
        self.is_main, self.world_size = is_main_process(), get_world_size()
        self.broadcast = broadcast_from_main
        self.device = torch.device("cpu")
        self.model: nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.scaler: torch.amp.GradScaler | None = None
        # LR scheduler, utils.ema.ModelEMA (main process, or None), utils.precision.PrecisionPolicy, training loader
        self.scheduler = self.ema = self.policy = self.train_loader = None
        self.nb, self.ready, self.t0 = 0, False, 0.0  # batches per epoch, setup() has run, start time

    def setup(self) -> None:
        """Build the model, optimizer, scheduler, scaler, EMA, policy and loaders; set ``ready``."""
        raise NotImplementedError

    def train(self) -> Any:
        """Set up (unless done), run the epochs and :meth:`finish`; ``teardown`` always runs at the end."""
        determinism = (torch.are_deterministic_algorithms_enabled(),
                       torch.is_deterministic_algorithms_warn_only_enabled())
        try:
            if not self.ready:
                self.setup()
            self.fit()
            return self.finish()
        except KeyboardInterrupt:
            if self.is_main and self.last.is_file():
                LOGGER.info(f"\nInterrupted. Resume with: {self.resume_command} {self.last}")
            raise
        finally:
            torch.use_deterministic_algorithms(determinism[0], warn_only=determinism[1])
            self.callbacks.run("teardown")

    def fit(self) -> None:
        """Train epochs ``start_epoch .. epochs-1``, evaluating after each one, until done, stopped or interrupted."""
        state = self.state
        state.mean_loss = torch.zeros(len(self.loss_names), device=self.device)
        state.lr = [float(group["lr"]) for group in self.optimizer.param_groups]
        self._start_schedule()
        self.t0 = time.time()
        self.callbacks.run("on_train_start")
        self.log_start()
        for epoch in range(state.start_epoch, state.epochs):
            state.epoch = epoch
            self.train_one_epoch(epoch)
            if state.interrupted:
                break
            self.end_epoch(epoch)
            if state.stop or state.interrupted:
                break

    def _start_schedule(self) -> None:
        """Position the LR scheduler for ``start_epoch`` (new and resumed runs); the subclass decides how."""

    def log_start(self) -> None:
        """Log what the run is about to do (after ``on_train_start``)."""

    def train_one_epoch(self, epoch: int) -> None:
        """Run one pass over the training batches (``on_train_epoch_start`` .. LR scheduler step)."""
        state = self.state
        self.callbacks.run("on_train_epoch_start")
        self.model.train()
        self.before_epoch(epoch)
        state.mean_loss = torch.zeros(len(self.loss_names), device=self.device)
        sampler = getattr(self.train_loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        batches = tqdm(enumerate(self.train_loader), total=self.nb, bar_format=TQDM_BAR_FORMAT,
                       disable=not self.is_main)
        self.optimizer.zero_grad()
        deferred_stop = False
        for i, batch in batches:
            self.callbacks.run("on_train_batch_start")
            self.train_step(i, epoch, batch, batches)
            if self.callbacks.stop_training and self.world_size > 1:
                if not deferred_stop:  # only this rank knows: stopping here would leave the others waiting
                    LOGGER.info(f"Stop requested at epoch {epoch}, batch {i}: finishing the epoch on all DDP ranks")
                deferred_stop = True
            elif self.callbacks.stop_training:
                state.interrupted = True
                LOGGER.info(f"Training stopped by a callback at epoch {epoch}, batch {i}")
                return
        state.lr = [float(group["lr"]) for group in self.optimizer.param_groups]
        self.scheduler.step()

    def before_epoch(self, epoch: int) -> None:
        """Prepare the epoch (resample images, log a header) after ``model.train()``, before the first batch."""

    def train_step(self, i: int, epoch: int, batch: Sequence, progress: Any = None) -> None:
        """Loss, backward and every ``accumulate`` batches an optimizer step; batch: (images, targets, paths, _)."""
        state = self.state
        state.step = ni = i + self.nb * epoch
        paths = batch[2]
        loss, loss_items, inputs = self.forward_loss(i, epoch, batch)
        self._check_finite(loss, loss_items, i, epoch, paths)
        self.scaler.scale(loss).backward()
        if ni - state.last_opt_step >= state.accumulate:
            self._optimizer_step(i, epoch, paths)
            state.last_opt_step = ni
        self.end_batch(i, epoch, batch, inputs, loss_items, progress)

    def forward_loss(self, i: int, epoch: int, batch: Sequence) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``(loss to backpropagate, detached loss items (len(loss_names),), network input)`` for a batch."""
        raise NotImplementedError

    def end_batch(self, i: int, epoch: int, batch: Sequence, inputs: torch.Tensor, loss_items: torch.Tensor,
                  progress: Any) -> None:
        """Main process: update the running mean loss and the progress bar, run ``on_train_batch_end``."""
        if not self.is_main:
            return
        state = self.state
        state.mean_loss = (state.mean_loss * i + loss_items.detach()) / (i + 1)
        if isinstance(progress, tqdm):
            progress.set_description(self.progress_text(epoch, batch, inputs))
        self.callbacks.run("on_train_batch_end", self.model, state.step, inputs, batch[1], batch[2],
                           list(state.mean_loss))

    def progress_text(self, epoch: int, batch: Sequence, inputs: torch.Tensor) -> str:
        """Return the progress-bar description after a batch."""
        return f"{epoch}/{self.state.epochs - 1} loss {self.state.mean_loss.tolist()}"

    def _optimizer_step(self, i: int, epoch: int, paths: Sequence[str]) -> None:
        """(Unscale and clip to ``grad_clip_norm``,) step the optimizer and the scaler, zero gradients, update EMA."""
        if self.grad_clip_norm is not None:
            self.scaler.unscale_(self.optimizer)
            norm = nn.utils.clip_grad_norm_(self.model.parameters(), max_norm=self.grad_clip_norm)
            if not self.scaler.is_enabled() and not torch.isfinite(norm):  # fp16 AMP: the scaler skips such steps
                self._raise_non_finite("gradient norm", float(norm), i, epoch, paths)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad()
        if self.ema is not None:
            self.ema.update(self.model)

    def _check_finite(self, loss: torch.Tensor, loss_items: torch.Tensor, i: int, epoch: int,
                      paths: Sequence[str]) -> None:
        """Raise :class:`NonFiniteLossError` when ``loss`` holds NaN or inf."""
        if not torch.isfinite(loss).all():
            values = loss_items.reshape(-1).tolist()
            items = ", ".join(f"{n}={v:.4g}" for n, v in zip(self.loss_names, values, strict=True))
            self._raise_non_finite(f"loss ({items})", float(loss.detach()), i, epoch, paths)

    def _raise_non_finite(self, what: str, value: float, i: int, epoch: int, paths: Sequence[str]) -> None:
        weights_bad = any(not torch.isfinite(p).all() for p in self.model.parameters())
        cause = (f"the model weights are already non-finite (training diverged: {self.divergence_hint})"
                 if weights_bad else "the weights are finite, so this batch triggered it: check its labels/images")
        kept = (f"{self.last} (epoch {epoch - 1}) is intact; resume with --resume {self.last}"
                if self.last.is_file() else "no checkpoint was written yet")
        shown = "\n  ".join(map(str, paths[:32])) + ("\n  ..." if len(paths) > 32 else "")
        raise NonFiniteLossError(f"non-finite {what} = {value} at epoch {epoch}, batch {i} (global step "
                                 f"{self.state.step}); {cause}. Training stopped; {kept}.\nImages of this batch:"
                                 f"\n  {shown}")

    def end_epoch(self, epoch: int) -> None:
        """Main process: ``on_train_epoch_end`` and :meth:`evaluate`; then all DDP ranks share rank 0's stop flags."""
        state = self.state
        if self.is_main:
            self.callbacks.run("on_train_epoch_end", epoch=epoch)
            self.evaluate(epoch)
            state.interrupted = bool(self.callbacks.stop_training)
        stop, interrupted = self.broadcast((state.stop, state.interrupted))  # every DDP rank leaves the loop together
        state.stop, state.interrupted = bool(stop), bool(interrupted)

    def evaluate(self, epoch: int) -> None:
        """Main process, after each epoch: validate, set ``state.fitness``/``best_fitness``/``stop``, log, save."""
        raise NotImplementedError

    def save_epoch(self, ckpt: dict, epoch: int, final_epoch: bool, improved: bool, extra: Iterable[Path] = ()) -> None:
        """Write ``ckpt`` to ``last.pt``, to ``best.pt`` when ``improved``, and to each ``extra`` file; then run
        ``on_model_save(last, epoch, final_epoch, best_fitness, fitness)``."""
        state = self.state
        self.weights_dir.mkdir(parents=True, exist_ok=True)
        data = checkpoint_bytes(ckpt)  # serialised once for every file it goes to
        for file in [self.last, *([self.best] if improved else []), *extra]:
            save_checkpoint(data, file)
        self.callbacks.run("on_model_save", self.last, epoch, final_epoch, state.best_fitness, state.fitness)

    def finish(self) -> Any:
        """After the last epoch: strip or export checkpoints, final logs and ``on_train_end``; returns the result."""
        raise NotImplementedError
