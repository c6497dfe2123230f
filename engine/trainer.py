"""The YOLOv5 detection trainer: setup (:mod:`engine.detection_setup`) plus the shared :class:`engine.loop.TrainingLoop`
with warmup, multi-scale batches, loss x ``WORLD_SIZE`` (x4 ``--quad``), gradient clipping to norm 10, EMA validation,
fitness ``0.1 mAP50 + 0.9 mAP50-95``, early stopping and ``last/best/epoch{N}.pt``; the last epoch strips them and
validates ``best.pt`` with plots. Logging happens only through upstream-named callbacks on the main process.
"""

from __future__ import annotations

import dataclasses
import math
import random
import shlex
import time
from copy import deepcopy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from engine import detection_setup as steps
from engine.environment import check_amp, check_train_batch_size, init_seeds
from engine.loop import TQDM_BAR_FORMAT, LoopState, NonFiniteLossError, TrainingLoop
from engine.train_options import TrainError, TrainOptions
from engine.validator import Validator, ValOptions
from extensions.transfer import freeze_layers
from models.loading import load_model, model_from_checkpoint
from utils.callbacks import Callbacks
from utils.checkpoint import make_checkpoint, strip_optimizer, stripped_checkpoint, write_stripped
from utils.dist import get_rank
from utils.files import yaml_save
from utils.hyp import WARMUP_MIN_ITERS, Hyp
from utils.loggers import RESULTS_KEYS, Loggers
from utils.logging import LOGGER, colorstr
from utils.metrics import fitness
from utils.ops import check_img_size
from utils.optim import EarlyStopping, labels_to_class_weights, labels_to_image_weights
from utils.precision import float_outputs, select_precision
from utils.torch_utils import de_parallel

__all__ = ["GRAD_CLIP_NORM", "LOSS_NAMES", "TQDM_BAR_FORMAT", "NonFiniteLossError", "TrainState", "Trainer"]

GRAD_CLIP_NORM = 10.0  # max gradient L2 norm before each optimizer step
LOSS_NAMES = ("box_loss", "obj_loss", "cls_loss")


@dataclass
class TrainState(LoopState):
    """The loop state plus the detection results: ``results`` = latest validation ``(P, R, mAP50, mAP50-95, val
    box, obj, cls)``, ``maps`` = (nc,) per-class mAP50-95; ``mean_loss`` is (3,) (box, obj, cls)."""

    results: tuple = (0.0,) * 7
    maps: np.ndarray = field(default_factory=lambda: np.zeros(0))


class Trainer(TrainingLoop):
    """Train a YOLOv5 model as ``train.py`` does from prepared ``options`` (see :mod:`engine.train_options`);
    ``train()`` returns the last results (7 floats). Override :meth:`compute_batch_loss` for another objective.

    Another task (segmentation) overrides ``model_class``, ``results_keys``, :meth:`make_state`,
    :meth:`build_dataloaders`, :meth:`make_loss`, :meth:`fitness` and :meth:`make_validator`.
    """

    loss_names = LOSS_NAMES
    grad_clip_norm = GRAD_CLIP_NORM
    divergence_hint = "try a lower lr0 in --hyp"
    predict_script = "detect.py"  # named in the "Try the model" line at the end of a run
    model_class: type | None = None  # None: models.yolo.Model
    results_keys = RESULTS_KEYS  # the on_fit_epoch_end values, as results.csv columns

    def __init__(self, options: TrainOptions, device: torch.device, callbacks: Callbacks | None = None) -> None:
        self.opt = dataclasses.replace(options, freeze=list(options.freeze or [0]))  # prepared: see train_options
        super().__init__(self.make_state(), self.opt.save_dir, callbacks)
        self.device = torch.device(device)
        self.plots = not self.opt.evolve and not self.opt.noplots
        self.hyp: Hyp | None = None  # scaled for this run (loss gains, weight decay); opt.hyp keeps the file's values
        self.nbs, self.git, self.loggers = 0, {}, None  # nominal batch size, git info, Loggers (main process)
        self.data_dict, self.train_path, self.val_path, self.nc, self.names, self.is_coco = {}, None, None, 0, {}, False
        self.amp = False  # fp16 CUDA AMP (drives the GradScaler, AutoBatch and fp16 validation)
        self.gs = self.imgsz = self.batch_size = 0
        self.lf: Any = None  # LR lambda of the scheduler
        self.dataset = self.val_loader = self.compute_loss = None
        self.labels, self.nw = np.zeros((0, 5)), 0  # all training labels (n, 5); warmup steps
        self.stopper: EarlyStopping | None = None
        self.final_checkpoints: dict[Path, dict] = {}  # last/best path -> its stripped checkpoint (this process)

    @property
    def channels_last(self) -> bool:
        """True when the model and batches use the channels_last memory format (from the precision policy)."""
        return self.policy.channels_last

    def setup(self) -> None:
        """Build everything the epochs need, in upstream's order (see :mod:`engine.detection_setup`)."""
        opt, state = self.opt, self.state
        self.callbacks.run("on_pretrain_routine_start")
        file_hyp = self._prepare_run_dir()
        init_seeds(opt.seed + 1 + get_rank(), deterministic=True)
        info = steps.load_dataset_info(opt.data, opt.single_cls)
        self.data_dict, self.train_path, self.val_path = info.data_dict, info.train_path, info.val_path
        self.nc, self.names, self.is_coco = info.nc, info.names, info.is_coco
        self.model, resume_checkpoint = steps.build_model(opt, self.nc, file_hyp.anchors, self.device, self.model_class)
        cuda_amp = not opt.fp32 and check_amp(self.model)
        self.policy = select_precision(self.device, force_fp32=opt.fp32, cuda_amp=cuda_amp, log=self.is_main)
        self.amp = self.policy.autocast_dtype == torch.float16
        self.policy.prepare_model(self.model)
        freeze_layers(self.model, opt.freeze)
        self._image_and_batch_size()
        state.start_epoch, state.epochs = steps.resolve_epochs(opt, resume_checkpoint)
        if resume_checkpoint is not None:
            state.epoch = state.start_epoch - 1
        state.accumulate = max(round(self.nbs / self.batch_size), 1)
        self.hyp = file_hyp.scaled(levels=getattr(self.model.model[-1], "nl", 3), nc=self.nc, imgsz=self.imgsz,
                                   label_smoothing=opt.label_smoothing, batch_size=self.batch_size,
                                   accumulate=state.accumulate)
        self.optimizer, self.scheduler, self.lf = steps.build_optimizer(self.model, opt.optimizer, self.hyp,
                                                                        state.epochs, opt.cos_lr)
        self.train_loader, self.dataset, self.val_loader = self.build_dataloaders(info)
        self.labels = np.concatenate(self.dataset.labels, 0) if len(self.dataset.labels) else np.zeros((0, 5))
        steps.check_label_classes(self.labels, self.nc, self.train_path, opt.data)
        self._pretrain_routine_end(file_hyp.anchor_t)
        if self.is_main:
            from utils.ema import ModelEMA

            self.ema = ModelEMA(self.model)
        if resume_checkpoint is not None:
            state.best_fitness = steps.restore_resume_state(resume_checkpoint, self.optimizer, self.ema)
            if self.loggers is not None and self.loggers.csv is not None:
                self.loggers.csv.truncate_from(state.start_epoch)
        self.model = steps.wrap_distributed(self.model, opt.sync_bn, self.device)
        self._set_model_attributes()
        self.nb = len(self.train_loader)
        self.nw = warmup_iterations(file_hyp, self.nb)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp)
        self.stopper = EarlyStopping(patience=opt.patience)
        state.maps = np.zeros(self.nc)
        self.ready = True

    def make_state(self) -> TrainState:
        """The loop state this trainer starts from (its ``results`` have the length of a validation result)."""
        return TrainState()

    def build_dataloaders(self, info: steps.DatasetInfo) -> tuple[Any, Any, Any]:
        """Return ``(train loader, its dataset, val loader or None)`` (:func:`detection_setup.build_dataloaders`)."""
        return steps.build_dataloaders(self.opt, info, self.imgsz, self.batch_size // self.world_size, self.gs,
                                       self.hyp.to_dict(), self.is_main)

    def make_loss(self) -> Any:
        """The criterion (built after the model attributes are set): the head's own or ``ComputeLoss``."""
        from utils.loss import build_loss

        return build_loss(self.model, hyp=self.hyp)

    def fitness(self, results: Sequence[float]) -> float:
        """Fitness of a validation result (higher is better): 0.1 mAP50 + 0.9 mAP50-95."""
        return float(fitness(np.array(results).reshape(1, -1))[0])

    def _prepare_run_dir(self) -> Hyp:
        """Load the hyperparameters; main process: create ``save_dir/weights``, write ``hyp.yaml``/``opt.yaml`` and
        register the loggers (CSV, TensorBoard, Comet: :class:`utils.loggers.Loggers`). Returns the file's ``Hyp``.
        """
        opt = self.opt
        if self.is_main:
            self.weights_dir.mkdir(parents=True, exist_ok=True)
        values, hyp = steps.load_run_hyp(opt.hyp)
        opt.hyp = values  # unscaled: what opt.yaml and checkpoints store
        self.nbs = hyp.nominal_batch_size
        if opt.sync_bn and self.world_size == 1:
            LOGGER.warning("WARNING ⚠️ --sync-bn only applies to multi-GPU DDP training; ignored")
        self.git = steps.git_info() if self.is_main else {}
        if self.is_main and not opt.evolve:
            yaml_save(self.save_dir / "hyp.yaml", values)
            yaml_save(self.save_dir / "opt.yaml", opt.to_dict())
            self.loggers = Loggers(self.save_dir, opt.weights, opt, values, plots=self.plots, keys=self.results_keys,
                                   run_logger=True).register(self.callbacks)
        return hyp

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

    def _pretrain_routine_end(self, anchor_t: float) -> None:
        """Main process: AutoAnchor (new runs), fp16-round the weights as upstream, ``on_pretrain_routine_end``."""
        if not self.is_main:
            return
        if not self.opt.resume:
            if not self.opt.noautoanchor:
                from utils.autoanchor import check_anchors

                check_anchors(self.dataset, model=self.model, thr=anchor_t, imgsz=self.imgsz)
            self.model.half().float()  # pre-reduce anchor precision
        self.callbacks.run("on_pretrain_routine_end", self.labels, self.names)

    def _set_model_attributes(self) -> None:
        """Attach nc, names, class weights and the scaled hyp (as a dict, for upstream checkpoints); build the loss."""
        model = de_parallel(self.model)
        model.nc, model.hyp, model.names = self.nc, self.hyp.to_dict(), self.names
        model.class_weights = labels_to_class_weights(self.dataset.labels, self.nc).to(self.device) * self.nc
        self.compute_loss = self.make_loss()

    def describe(self) -> dict[str, Any]:
        """Return the derived settings (for logs and tests): image size, batch, accumulation, warmup, groups."""
        return {"imgsz": self.imgsz, "batch_size": self.batch_size, "accumulate": self.state.accumulate,
                "nb": self.nb, "nw": self.nw, "amp": self.amp, "precision": self.policy.name,
                "weight_decay": self.hyp.weight_decay,
                "param_groups": [len(g["params"]) for g in self.optimizer.param_groups]}

    def _start_schedule(self) -> None:
        """Position the per-epoch LR scheduler as upstream: ``last_epoch = start_epoch - 1`` (new and resumed runs)."""
        self.scheduler.last_epoch = self.state.start_epoch - 1

    def log_start(self) -> None:
        """Log image sizes, workers, the run folder and the epoch count."""
        LOGGER.info(f"Image sizes {self.imgsz} train, {self.imgsz} val\n"
                    f"Using {self.train_loader.num_workers * self.world_size} dataloader workers\n"
                    f"Logging results to {colorstr('bold', self.save_dir)}\n"
                    f"Starting training for {self.state.epochs} epochs...")

    def before_epoch(self, epoch: int) -> None:
        """``--image-weights``: draw this epoch's images favouring rare, poorly detected classes; log the header."""
        if self.opt.image_weights:
            class_weights = de_parallel(self.model).class_weights.cpu().numpy() * (1 - self.state.maps) ** 2 / self.nc
            image_weights = labels_to_image_weights(self.dataset.labels, nc=self.nc, class_weights=class_weights)
            self.dataset.indices = random.choices(range(self.dataset.n), weights=image_weights, k=self.dataset.n)
        if self.is_main:
            LOGGER.info(("\n" + "%11s" * (4 + len(self.loss_names))) % ("Epoch", "GPU_mem", *self.loss_names,
                                                                       "Instances", "Size"))

    def forward_loss(self, i: int, epoch: int, batch: Sequence) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Warmup, uint8 -> [0, 1] input (multi-scale if asked), loss times ``WORLD_SIZE`` (and 4 for ``--quad``)."""
        images, targets = batch[0], batch[1]
        images = self.policy.prepare_input(images).to(self.device, non_blocking=True).float() / 255
        if self.state.step <= self.nw:
            self._warmup(self.state.step, epoch)
        if self.opt.multi_scale:
            images = self._multi_scale(images)
        extra = [x.to(self.device, non_blocking=True) for x in batch[4:]]  # e.g. segmentation masks
        loss, loss_items = self.compute_batch_loss(images, targets.to(self.device), *extra)
        return loss * self.world_size * (4.0 if self.opt.quad else 1.0), loss_items, images

    def compute_batch_loss(self, images: torch.Tensor, targets: torch.Tensor,
                           *extra: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(loss * batch, items)`` for a batch: images (b, 3, h, w) in [0, 1], targets (n, 6), and the
        batch's further tensors (``extra``, e.g. masks) passed on to the loss.

        The forward pass runs under the precision policy's autocast (bf16 on CPU, fp16 on CUDA, or none); target
        assignment and the loss run in fp32, outside autocast. A loss with ``casts_to_fp32`` (``ComputeLoss``) gets
        the raw outputs and casts what it reads (positives, objectness) itself, so the full-size gradient tensors
        stay in the low precision; any other loss gets ``float_outputs(predictions)``.
        """
        with self.policy.autocast():
            predictions = self.model(images)
        if not getattr(self.compute_loss, "casts_to_fp32", False):
            predictions = float_outputs(predictions)
        return self.compute_loss(predictions, targets, *extra)

    def progress_text(self, epoch: int, batch: Sequence, inputs: torch.Tensor) -> str:
        """Return the progress-bar columns: epoch, GPU memory, mean losses, instances, image size."""
        memory = torch.cuda.memory_reserved() / 1e9 if torch.cuda.is_available() else 0
        losses = self.state.mean_loss.tolist()
        return ("%11s" * 2 + "%11.4g" * (2 + len(losses))) % (f"{epoch}/{self.state.epochs - 1}", f"{memory:.3g}G",
                                                             *losses, batch[1].shape[0], inputs.shape[-1])

    def _warmup(self, ni: int, epoch: int) -> None:
        """Ramp accumulate, LRs (bias from ``warmup_bias_lr``, others from 0) and momentum over ``nw`` steps."""
        hyp, x_points = self.hyp, [0, self.nw]
        self.state.accumulate = max(1, int(np.interp(ni, x_points, [1, self.nbs / self.batch_size]).round()))
        for j, group in enumerate(self.optimizer.param_groups):
            start_lr = hyp.warmup_bias_lr if j == 0 else 0.0
            group["lr"] = float(np.interp(ni, x_points, [start_lr, group["initial_lr"] * self.lf(epoch)]))
            if "momentum" in group:
                group["momentum"] = float(np.interp(ni, x_points, [hyp.warmup_momentum, hyp.momentum]))

    def _multi_scale(self, images: torch.Tensor) -> torch.Tensor:
        """Resize the batch to a random size in [0.5, 1.5] x imgsz (a multiple of the grid stride), bilinear."""
        gs = self.gs
        size = random.randrange(int(self.imgsz * 0.5), int(self.imgsz * 1.5) + gs) // gs * gs
        factor = size / max(images.shape[2:])
        if factor != 1:
            new_shape = [math.ceil(x * factor / gs) * gs for x in images.shape[2:]]
            images = F.interpolate(images, size=new_shape, mode="bilinear", align_corners=False)
        return self.policy.prepare_input(images)

    def evaluate(self, epoch: int) -> None:
        """EMA attributes, validation, fitness, early stopping, ``on_fit_epoch_end``, checkpoints."""
        state = self.state
        self.ema.update_attr(de_parallel(self.model), include=["yaml", "nc", "hyp", "names", "stride", "class_weights"])
        final_epoch = epoch + 1 == state.epochs or self.stopper.possible_stop
        if not self.opt.noval or final_epoch:
            state.results, state.maps = self.validate()
        state.fitness = self.fitness(state.results)
        state.stop = self.stopper(epoch=epoch, fitness=state.fitness)
        state.best_fitness = max(state.best_fitness, state.fitness)
        log_values = [*state.mean_loss.tolist(), *state.results, *state.lr]
        self.callbacks.run("on_fit_epoch_end", log_values, epoch, state.best_fitness, state.fitness)
        if not self.opt.nosave or (final_epoch and not self.opt.evolve):
            self.save(epoch, final_epoch)

    def validate(self) -> tuple[tuple, np.ndarray]:
        """Validate the EMA model on the val loader (no plots); returns ``(results (7,), maps (nc,))``."""
        results, maps, _ = self._run_validator(self.ema.ema, plots=False)
        return tuple(float(x) for x in results), np.asarray(maps)

    def _run_validator(self, model: Any, **settings: Any) -> tuple:
        """Validate ``model`` on the val loader; ``settings`` are :class:`engine.val_options.ValOptions` fields."""
        settings = dict(batch_size=self.batch_size // self.world_size * 2, imgsz=self.imgsz, half=self.amp,
                        single_cls=self.opt.single_cls, fp32=self.opt.fp32, **settings)
        return self.make_validator(model, settings)()

    def make_validator(self, model: Any, settings: dict) -> Validator:
        """The validator of ``model`` on the val loader with these :class:`ValOptions` ``settings``."""
        return Validator(model, self.val_loader, ValOptions(**settings), data=self.data_dict, save_dir=self.save_dir,
                         callbacks=self.callbacks, compute_loss=self.compute_loss)

    def save(self, epoch: int, final_epoch: bool) -> None:
        """Write ``last.pt`` (and ``best.pt`` when fitness is the best, ``epoch{N}.pt`` per --save-period)."""
        state = self.state
        ckpt = make_checkpoint(self.model, self.ema.ema, epoch, np.array([state.best_fitness]), self.ema.updates,
                               self.optimizer.state_dict(), self.opt.to_dict(), self.git)
        periodic = self.opt.save_period > 0 and epoch % self.opt.save_period == 0
        improved = state.best_fitness == state.fitness
        self.save_epoch(ckpt, epoch, final_epoch, improved=improved,
                        extra=[self.weights_dir / f"epoch{epoch}.pt"] if periodic else [])
        final = stripped_checkpoint(ckpt)  # what finish() writes, kept so it need not read the files back
        self.final_checkpoints.update({self.last: final, **({self.best: final} if improved else {})})

    def finish(self) -> tuple:
        """After the last epoch: strip checkpoints, validate ``best.pt`` with plots, ``on_train_end``."""
        state = self.state
        if not self.is_main or state.interrupted:
            return state.results
        hours = (time.time() - self.t0) / 3600
        LOGGER.info(f"\n{state.epoch - state.start_epoch + 1} epochs completed in {hours:.3f} hours.")
        for checkpoint in (self.last, self.best):
            if checkpoint in self.final_checkpoints:
                write_stripped(self.final_checkpoints[checkpoint], checkpoint)
            elif checkpoint.exists():  # written by an earlier process (resumed run)
                strip_optimizer(checkpoint)
        if self.best.exists():
            LOGGER.info(f"\nValidating {self.best}...")
            state.results = self.final_validation()
            if self.is_coco:
                log_values = [*state.mean_loss.tolist(), *state.results, *state.lr]
                self.callbacks.run("on_fit_epoch_end", log_values, state.epoch, state.best_fitness, state.fitness)
        self.callbacks.run("on_train_end", self.last, self.best, state.epoch, state.results)
        LOGGER.info(f"Results saved to {colorstr('bold', self.save_dir)}")
        hint = try_command(self.best if self.best.exists() else self.last, self.data_dict.get("val"), self.imgsz,
                           self.predict_script)
        if hint:
            LOGGER.info(f"Try the model: {hint}")
        return state.results

    def final_validation(self) -> tuple:
        """Validate stripped ``best.pt`` (fused) with verbose per-class output and plots; returns results.

        The model is the one just written to ``best.pt`` (a copy kept in memory) or, for a resumed run whose best
        epoch came before, read back from the file.
        """
        kept = self.final_checkpoints.get(self.best)
        model = (model_from_checkpoint(deepcopy(kept), self.best, self.device) if kept is not None
                 else load_model(self.best, self.device))
        results, _, _ = self._run_validator(model, iou_thres=0.65 if self.is_coco else 0.60, save_json=self.is_coco,
                                            verbose=True, plots=self.plots)
        return tuple(float(x) for x in results)


def warmup_iterations(hyp: Hyp, batches_per_epoch: int) -> int:
    """Warmup length in batches: ``warmup_epochs`` epochs, at least ``warmup_min_iters`` (default upstream's 100)."""
    floor = WARMUP_MIN_ITERS if hyp.warmup_min_iters is None else int(hyp.warmup_min_iters)
    return max(round(hyp.warmup_epochs * batches_per_epoch), floor)


def try_command(weights: Path, val: Any, imgsz: int, script: str = "detect.py") -> str:
    """Return a ``script`` (``detect.py``) command line that runs ``weights`` on the first validation source, or ''.

    ``val`` is the dataset's resolved ``val`` entry (a folder, a ``.txt`` list or a list of these); a list file or a
    list falls back to its first entry, and a path that no longer exists gives ''.
    """
    source = val[0] if isinstance(val, (list, tuple)) and val else val
    if not source or not Path(source).exists() or not Path(weights).exists():
        return ""
    return f"python {script} --weights {_shell_path(weights)} --source {_shell_path(source)} --img {imgsz}"


def _shell_path(path: Any) -> str:
    """``path`` relative to the working directory when it lies under it, quoted when it contains spaces."""
    path = Path(path).resolve()
    try:
        text = str(path.relative_to(Path.cwd()))
    except ValueError:
        text = str(path)
    return shlex.quote(text)
