"""The segmentation trainer: the detection :class:`engine.trainer.Trainer` on the shared loop, with masks.

What changes against detection (upstream ``segment/train.py``): the model is a ``SegmentationModel``; the data is
:class:`utils.data.segment_dataset.LoadImagesAndLabelsAndMasks` (``--mask-ratio``, ``--no-overlap``); the loss is
:class:`utils.segment.loss.ComputeLoss` with four items (box, seg, obj, cls); validation is
:class:`engine.segment_validator.SegmentValidator` (box and mask metrics); fitness adds the box and mask fitness;
``results.csv`` has upstream's 19 segmentation columns (:data:`utils.segment.metrics.KEYS`) and ``results.png`` 16
panels; ``train_batch*.jpg`` show the masks. ``--evolve`` and ``--quad`` are refused (not implemented for masks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from engine import detection_setup as steps
from engine.segment_options import SegmentTrainOptions, SegValOptions
from engine.segment_validator import SegmentValidator
from engine.train_options import TrainError
from engine.trainer import Trainer, TrainState
from models.yolo import SegmentationModel
from utils.callbacks import Callbacks
from utils.dist import get_local_rank
from utils.logging import colorstr
from utils.segment.metrics import KEYS, fitness

__all__ = ["SEGMENT_LOSS_NAMES", "SegmentTrainState", "SegmentTrainer"]

SEGMENT_LOSS_NAMES = ("box_loss", "seg_loss", "obj_loss", "cls_loss")
TRAIN_BATCH_PLOTS = 3


@dataclass
class SegmentTrainState(TrainState):
    """:class:`TrainState` whose ``results`` are the 12 segmentation values: box P, R, mAP50, mAP50-95, the same for
    masks, and the box, seg, obj, cls validation losses; ``mean_loss`` is (4,)."""

    results: tuple = (0.0,) * 12


class SegmentTrainer(Trainer):
    """Train a ``Segment``-headed model as ``segment/train.py`` does; ``train()`` returns the 12 results."""

    loss_names = SEGMENT_LOSS_NAMES
    model_class = SegmentationModel
    results_keys = tuple(KEYS)
    resume_command = "python segment/train.py --resume"
    predict_script = "segment/predict.py"
    supports_evolve = False  # engine/evolve.py records detection results

    def __init__(self, options: SegmentTrainOptions, device: torch.device, callbacks: Callbacks | None = None) -> None:
        if options.quad:
            raise TrainError("--quad is not supported for segmentation (its 2x2 collation has no mask version)")
        super().__init__(options, device, callbacks)

    @property
    def overlap(self) -> bool:
        """Ground-truth masks as one index mask per image (``not --no-overlap``)."""
        return not getattr(self.opt, "no_overlap", False)

    def make_state(self) -> SegmentTrainState:
        """The loop state with 12 result values."""
        return SegmentTrainState()

    def _prepare_run_dir(self):
        hyp = super()._prepare_run_dir()
        if self.loggers is not None and self.loggers.csv is not None:
            self.loggers.csv.batch_plots = False  # train_batch*.jpg are drawn with masks in end_batch
        return hyp

    def build_dataloaders(self, info: steps.DatasetInfo) -> tuple[Any, Any, Any]:
        """Augmented train loader with masks (``--mask-ratio``, overlap), its dataset, and the rect val loader."""
        from utils.data.segment_dataset import create_dataloader

        opt, per_rank, hyp = self.opt, self.batch_size // self.world_size, self.hyp.to_dict()
        mask_args = {"mask_downsample_ratio": int(opt.mask_ratio), "overlap_mask": self.overlap}
        cache = None if opt.cache == "val" else opt.cache
        train_loader, dataset = create_dataloader(
            info.train_path, self.imgsz, per_rank, self.gs, opt.single_cls, hyp=hyp, augment=True, cache=cache,
            rect=opt.rect, rank=get_local_rank(), workers=opt.workers, image_weights=opt.image_weights,
            prefix=colorstr("train: "), shuffle=True, seed=opt.seed, **mask_args)
        val_loader = None
        if self.is_main:
            val_cache = None if opt.noval else ("ram" if opt.cache == "val" else opt.cache)
            val_loader = create_dataloader(
                info.val_path, self.imgsz, per_rank * 2, self.gs, opt.single_cls, hyp=hyp, cache=val_cache, rect=True,
                rank=-1, workers=opt.workers * 2, pad=0.5, prefix=colorstr("val: "), **mask_args)[0]
        return train_loader, dataset, val_loader

    def make_loss(self) -> Any:
        """The segmentation loss (box, seg, obj, cls) with the run's scaled hyperparameters."""
        from utils.segment.loss import ComputeLoss

        return ComputeLoss(self.model, overlap=self.overlap, hyp=self.hyp)

    def fitness(self, results: Sequence[float]) -> float:
        """Box fitness plus mask fitness (each 0.1 mAP50 + 0.9 mAP50-95)."""
        return float(fitness(np.array(results[:8]).reshape(1, -1))[0])

    def make_validator(self, model: Any, settings: dict) -> SegmentValidator:
        """The segmentation validator on the val loader, with the training masks' format."""
        options = SegValOptions(overlap=self.overlap, mask_downsample_ratio=int(self.opt.mask_ratio), **settings)
        return SegmentValidator(model, self.val_loader, options, data=self.data_dict, save_dir=self.save_dir,
                                callbacks=self.callbacks, compute_loss=self.compute_loss)

    def end_batch(self, i: int, epoch: int, batch: Sequence, inputs: torch.Tensor, loss_items: torch.Tensor,
                  progress: Any) -> None:
        """The loop's bookkeeping, then ``train_batch{0,1,2}.jpg`` with boxes and masks (main process, plots on)."""
        super().end_batch(i, epoch, batch, inputs, loss_items, progress)
        if self.is_main and self.plots and self.state.step < TRAIN_BATCH_PLOTS:
            from utils.plotting.masks import plot_images_and_masks

            plot_images_and_masks(inputs, batch[1], batch[4], batch[2],
                                  self.save_dir / f"train_batch{self.state.step}.jpg", overlap=self.overlap)
