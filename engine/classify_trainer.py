"""Classification training (``classify/train.py``) on the shared :class:`engine.loop.TrainingLoop`.

Per batch: images (already normalised by the loader) -> forward under the precision policy -> cross-entropy with
label smoothing in fp32 -> backward, gradient clipping to norm 10, optimizer step, EMA. Per epoch: linear LR decay
to ``lrf`` = 0.01 of ``--lr0`` (upstream's schedule, no warmup), validation of the EMA model (top-1, top-5, loss),
``results.csv`` (upstream's columns), and upstream's classification checkpoint: ``model`` is the fp16 EMA with
``names`` and ``transforms``, ``ema`` and ``optimizer`` are None. Fitness is top-1 accuracy.
"""

from __future__ import annotations

import dataclasses
import time
from copy import deepcopy
from datetime import datetime
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn

from engine.classify_setup import CLS_RESULTS_KEYS, ClassifyError, ClassifyOptions, build_classifier
from engine.classify_validator import ClassifyMetrics, ClassifyValidator
from engine.environment import init_seeds
from engine.loop import LoopState, TrainingLoop
from utils.callbacks import Callbacks
from utils.data.classify import check_cls_dataset, create_classification_dataloader
from utils.dist import get_local_rank, get_rank, torch_distributed_zero_first, wrap_ddp
from utils.ema import ModelEMA
from utils.files import ROOT, yaml_save
from utils.logging import LOGGER, colorstr
from utils.optim import linear_lr, smart_optimizer
from utils.plotting.results import append_results_row
from utils.precision import select_precision
from utils.torch_utils import de_parallel

GRAD_CLIP_NORM = 10.0
LRF = 0.01  # final LR as a fraction of --lr0 (upstream)
MOMENTUM = 0.9  # SGD momentum / Adam beta1 (upstream)


@dataclasses.dataclass
class ClassifyState(LoopState):
    """The loop state plus the latest validation ``metrics`` (top-1 is the fitness)."""

    metrics: ClassifyMetrics = dataclasses.field(default_factory=ClassifyMetrics)


class ClassifyTrainer(TrainingLoop):
    """Train an image classifier as ``classify/train.py`` does from prepared options; ``train()`` returns the final
    :class:`ClassifyMetrics` (of ``best.pt`` when it exists)."""

    loss_names = ("loss",)
    grad_clip_norm = GRAD_CLIP_NORM
    divergence_hint = "try a lower --lr0"
    resume_command = "python classify/train.py"

    def __init__(self, options: ClassifyOptions, device: torch.device, callbacks: Callbacks | None = None) -> None:
        self.opt = dataclasses.replace(options)
        super().__init__(ClassifyState(), self.opt.save_dir, callbacks)
        self.device = torch.device(device)
        self.data: dict = {}
        self.names: dict[int, str] = {}
        self.criterion: nn.Module | None = None
        self.val_loader: Any = None
        self.loggers: Any = None
        self.csv = self.save_dir / "results.csv"

    def setup(self) -> None:
        """Seeds, dataset (generated if built in, rank 0 first), model, precision, EMA, optimizer, loaders, DDP."""
        opt, state = self.opt, self.state
        self.callbacks.run("on_pretrain_routine_start")
        init_seeds(opt.seed + 1 + get_rank(), deterministic=True)
        with torch_distributed_zero_first(get_local_rank()):
            self.data = check_cls_dataset(opt.data)
        self.names = self.data["names"]
        self._prepare_run_dir()
        model = build_classifier(opt, self.data["nc"]).to(self.device)
        self.policy = select_precision(self.device, force_fp32=opt.fp32, cuda_amp=True, log=self.is_main)
        self.model = self.policy.prepare_model(model)
        self._attach_model_attributes(de_parallel(self.model))
        self.ema = ModelEMA(self.model) if self.is_main else None
        self.optimizer = smart_optimizer(self.model, opt.optimizer, opt.lr0, MOMENTUM, opt.decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda=linear_lr(opt.epochs, LRF))
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.policy.autocast_dtype == torch.float16)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=opt.label_smoothing)
        self._build_loaders()
        if get_local_rank() != -1 and torch.distributed.is_initialized():
            self.model = wrap_ddp(self.model, self.device)
        state.epochs, state.accumulate = opt.epochs, 1
        self.nb = len(self.train_loader)
        self.callbacks.run("on_pretrain_routine_end", np.zeros((0, 5)), self.names)
        self.ready = True

    def _prepare_run_dir(self) -> None:
        """Main process: ``save_dir/weights``, ``opt.yaml`` and the TensorBoard/Comet loggers (upstream's names)."""
        if not self.is_main:
            return
        from utils.loggers import Loggers

        self.weights_dir.mkdir(parents=True, exist_ok=True)
        yaml_save(self.save_dir / "opt.yaml", self.opt.to_dict())
        self.loggers = Loggers(self.save_dir, self.opt.model, self.opt, {}, plots=not self.opt.noplots,
                               keys=CLS_RESULTS_KEYS, job_type="Classification").register(self.callbacks)

    def _attach_model_attributes(self, model: nn.Module) -> None:
        """What upstream stores on a classification model: ``names`` (list), ``nc``, ``transforms`` (inference)."""
        from utils.data.classify_augment import classify_transforms

        model.names = [self.names[i] for i in range(len(self.names))]
        model.nc = len(self.names)
        model.transforms = classify_transforms(self.opt.imgsz)
        if not hasattr(model, "stride"):
            model.stride = torch.tensor([32.0])

    def _build_loaders(self) -> None:
        opt, data = self.opt, self.data
        classes = [self.names[i] for i in range(len(self.names))]
        per_rank = opt.batch_size // self.world_size
        self.train_loader = create_classification_dataloader(
            data["train"], opt.imgsz, per_rank, augment=True, cache=opt.cache, rank=get_local_rank(),
            workers=opt.workers, classes=classes, crop_scale=data["crop_scale"], seed=opt.seed,
            prefix=colorstr("train: "))
        if self.is_main:
            self.val_loader = create_classification_dataloader(
                data["val"], opt.imgsz, per_rank * 2, augment=False, cache=opt.cache, rank=-1,
                workers=opt.workers, shuffle=False, classes=classes, prefix=colorstr("val: "))

    def log_start(self) -> None:
        """Log the image size, workers, the run folder and the epoch count, then the progress-bar header."""
        opt = self.opt
        workers = self.train_loader.num_workers * self.world_size
        LOGGER.info(f"Image sizes {opt.imgsz} train, {opt.imgsz} test\nUsing {workers} dataloader workers\n"
                    f"Logging results to {colorstr('bold', self.save_dir)}\nStarting {opt.model} training on "
                    f"{opt.data} dataset with {len(self.names)} classes for {opt.epochs} epochs...\n\n"
                    f"{'Epoch':>10}{'GPU_mem':>10}{'train_loss':>12}{'val_loss':>12}{'top1_acc':>12}{'top5_acc':>12}")

    def forward_loss(self, i: int, epoch: int, batch: Sequence) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Cross-entropy (label smoothing) of one batch; the forward pass runs under the precision policy."""
        images, labels = batch[0], batch[1]
        images = self.policy.prepare_input(images.to(self.device, non_blocking=True))
        labels = labels.to(self.device)
        with self.policy.autocast():
            logits = self.model(images)
        loss = self.criterion(logits.float(), labels)
        return loss, loss.detach().view(1), images

    def train_step(self, i: int, epoch: int, batch: Sequence, progress: Any = None) -> None:
        """One batch (classification batches carry no paths: a placeholder is passed for error messages)."""
        super().train_step(i, epoch, (batch[0], batch[1], [f"batch {i} (image paths not tracked)"]), progress)

    def progress_text(self, epoch: int, batch: Sequence, inputs: torch.Tensor) -> str:
        """Progress-bar columns: epoch, GPU memory, running train loss."""
        memory = torch.cuda.memory_reserved() / 1e9 if torch.cuda.is_available() else 0
        return f"{epoch + 1:>7}/{self.state.epochs:<2}{f'{memory:.3g}G':>10}{float(self.state.mean_loss[0]):>12.3g}"

    def validate(self, model: nn.Module, verbose: bool = False) -> ClassifyMetrics:
        """Top-1/top-5/loss of ``model`` on the validation split (the table with ``verbose``: per class too)."""
        return ClassifyValidator(model, self.val_loader, len(self.names), self.criterion, self.policy,
                                 names=self.names)(verbose=verbose and self.opt.verbose, summary=verbose)

    def evaluate(self, epoch: int) -> None:
        """Validate the EMA, log the epoch (console, ``results.csv``, loggers) and save ``last.pt``/``best.pt``."""
        state = self.state
        final_epoch = epoch + 1 == state.epochs
        self.ema.update_attr(de_parallel(self.model), include=["names", "nc", "transforms", "stride", "yaml"])
        state.metrics = self.validate(self.ema.ema)
        state.fitness = state.metrics.top1
        improved = state.fitness > state.best_fitness or epoch == 0
        state.best_fitness = max(state.best_fitness, state.fitness)
        values = [float(state.mean_loss[0]), state.metrics.loss, state.metrics.top1, state.metrics.top5, state.lr[0]]
        LOGGER.info(f"{epoch + 1:>7}/{state.epochs:<2}{'':>10}{values[0]:>12.3g}{values[1]:>12.3g}"
                    f"{values[2]:>12.3g}{values[3]:>12.3g}")
        append_results_row(self.csv, CLS_RESULTS_KEYS, epoch, values)
        self.callbacks.run("on_fit_epoch_end", values, epoch, state.best_fitness, state.fitness)
        if not self.opt.nosave or final_epoch:
            self.save_epoch(self.checkpoint(epoch), epoch, final_epoch, improved)

    def checkpoint(self, epoch: int) -> dict:
        """Upstream's classification checkpoint: the EMA in fp16 under ``model``; ``ema``/``optimizer`` None."""
        from engine.detection_setup import git_info

        model = deepcopy(self.ema.ema).half().to(memory_format=torch.contiguous_format)
        for p in model.parameters():
            p.requires_grad = False
        return {"epoch": epoch, "best_fitness": self.state.best_fitness, "model": model, "ema": None,
                "updates": self.ema.updates, "optimizer": None, "opt": self.opt.to_dict(), "git": git_info(),
                "date": datetime.now().isoformat()}

    def finish(self) -> ClassifyMetrics:
        """Final validation of ``best.pt`` (per class), plots, usage hints and ``on_train_end``."""
        state = self.state
        if not self.is_main or state.interrupted:
            return state.metrics
        hours = (time.time() - self.t0) / 3600
        LOGGER.info(f"\nTraining complete ({hours:.3f} hours)")
        if self.best.is_file():
            from models.loading import load_model

            LOGGER.info(f"\nValidating {self.best}...")
            state.metrics = self.validate(load_model(self.best, self.device, fuse=False), verbose=True)
        if not self.opt.noplots:
            self._plots()
        self._usage_hints()
        self.callbacks.run("on_train_end", self.last, self.best, state.epoch, list(state.metrics.as_tuple()))
        return state.metrics

    def _plots(self) -> None:
        """``results.png`` and ``train_images.jpg`` / ``test_images.jpg`` (labels / labels vs predictions)."""
        from utils.plotting.classify import plot_classify_images
        from utils.plotting.results import plot_results

        if self.csv.is_file():
            plot_results(self.csv, panels=CLS_RESULTS_KEYS[:4])
        images, labels = next(iter(self.train_loader))
        plot_classify_images(images, labels.tolist(), self.names, self.save_dir / "train_images.jpg")
        dataset = self.val_loader.dataset  # 25 images spread over the (class-sorted) validation split
        samples = [dataset[int(i)] for i in np.linspace(0, len(dataset) - 1, min(25, len(dataset)))]
        images, labels = torch.stack([x for x, _ in samples]), torch.tensor([y for _, y in samples])
        with torch.inference_mode():
            preds = self.ema.ema(self.policy.prepare_input(images.to(self.device))).argmax(1).tolist()
        plot_classify_images(images, labels.tolist(), self.names, self.save_dir / "test_images.jpg", preds=preds)

    def _usage_hints(self) -> None:
        LOGGER.info(f"Results saved to {colorstr('bold', self.save_dir)}\n"
                    f"Predict:         python classify/predict.py --weights {self.best} --source im.jpg\n"
                    f"Validate:        python classify/val.py --weights {self.best} --data {self.opt.data}\n"
                    f"Export:          python export.py --weights {self.best} --include onnx\n"
                    f"PyTorch Hub:     model = torch.hub.load('{ROOT}', 'custom', "
                    f"'{self.best}', source='local')\n"
                    f"Backbone:        python train.py --cfg <detector.yaml> --backbone-weights {self.best}")


def check_classify_options(opt: ClassifyOptions) -> None:
    """Reject options a run cannot use (before any folder is created).

    Raises:
        ClassifyError: a non-positive batch size or epoch count.
    """
    if opt.batch_size < 1:
        raise ClassifyError(f"--batch-size {opt.batch_size} must be a positive number (AutoBatch is not available "
                            f"for classification)")
    if opt.epochs is not None and opt.epochs < 1:
        raise ClassifyError(f"--epochs {opt.epochs} must be at least 1")
