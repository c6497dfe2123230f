"""Running ``train.py``: resume or new run, DDP checks and process group, device, then training or evolution.

``train.py`` parses the command line and calls :func:`run_training`; everything else happens here.
"""

from __future__ import annotations

import logging

import torch

from engine.train_options import TrainError, TrainOptions, explicit_overrides, prepare_new_run, restore_resume_options
from utils.callbacks import Callbacks
from utils.dist import check_batch_split, destroy_distributed, get_local_rank, get_world_size, is_main_process
from utils.logging import LOGGER, colorstr

DDP_INCOMPATIBLE = "is not compatible with YOLOv5 Multi-GPU DDP training"


def _check_distributed(options: TrainOptions) -> None:
    """Upstream's checks for a DDP launch (``LOCAL_RANK`` set), run before any process group or run folder exists.

    Raises:
        TrainError: ``--image-weights``, ``--evolve``, AutoBatch (``--batch-size -1``) or a total batch size that is
            not a multiple of ``WORLD_SIZE``.
    """
    if get_local_rank() == -1:
        return
    if options.image_weights:
        raise TrainError(f"--image-weights {DDP_INCOMPATIBLE}")
    if options.evolve:
        raise TrainError(f"--evolve {DDP_INCOMPATIBLE}")
    if options.batch_size == -1:
        raise TrainError(f"AutoBatch with --batch-size -1 {DDP_INCOMPATIBLE}, please pass a valid --batch-size")
    try:
        check_batch_split(options.batch_size)
    except ValueError as error:
        raise TrainError(str(error)) from None


def _start_distributed(device: torch.device, options: TrainOptions) -> torch.device:
    """Join the process group (NCCL on CUDA, Gloo on CPU); returns this rank's device. Rank 0 chooses save_dir."""
    from utils.dist import broadcast_from_main, init_distributed

    try:
        device = init_distributed(device)
    except RuntimeError as error:
        raise TrainError(str(error)) from None
    options.save_dir = broadcast_from_main(options.save_dir)  # every rank writes (if at all) into rank 0's folder
    if is_main_process():
        import torch.distributed as torch_dist

        LOGGER.info(f"{colorstr('DDP:')} {get_world_size()} processes, backend {torch_dist.get_backend()}, "
                    f"rank 0 on {device}, batch {options.batch_size // get_world_size()} per process")
    return device


def run_training(options: TrainOptions, callbacks: Callbacks, trainer_class: type | None = None) -> TrainOptions:
    """Train (or evolve) with ``options`` (from the command line, not yet prepared); returns the run's final options.

    ``trainer_class`` (default :class:`engine.trainer.Trainer`) is the loop that trains, e.g. the segmentation
    trainer.

    A resume restores the interrupted run's options; a new run checks its files and chooses ``save_dir``. Under a
    DDP launch every rank joins the process group and writes into rank 0's folder; other ranks log warnings only.

    Raises:
        TrainError: a user error (bad device, DDP-incompatible options, ...), reported without a traceback.
    """
    if options.resume and not options.evolve:
        options = restore_resume_options(options, overrides=explicit_overrides(options))
    else:
        options = prepare_new_run(options)
    _check_distributed(options)
    from utils.torch_utils import select_device

    try:
        device = select_device(options.device, batch_size=options.batch_size)
    except ValueError as error:  # e.g. --device 0 without CUDA: a user error, reported without a traceback
        raise TrainError(str(error)) from None
    distributed, level = get_local_rank() != -1, LOGGER.level
    if not is_main_process():
        LOGGER.setLevel(logging.WARNING)  # other ranks only report problems; rank 0 logs the run
    try:
        if distributed:
            device = _start_distributed(device, options)
        return _train_or_evolve(options, device, callbacks, trainer_class)
    finally:
        LOGGER.setLevel(level)
        if distributed:
            destroy_distributed()


def _train_or_evolve(options: TrainOptions, device: torch.device, callbacks: Callbacks,
                     trainer_class: type | None = None) -> TrainOptions:
    """Run the evolution or one training; returns the final options."""
    if options.evolve and trainer_class is not None and not getattr(trainer_class, "supports_evolve", True):
        raise TrainError(f"--evolve is not supported by {trainer_class.__name__} in this version; evolve the "
                         f"hyperparameters with train.py on the same data's boxes, or pass --hyp")
    if options.evolve:
        from engine.evolve import evolve

        evolve(options, device, callbacks)
        return options
    from engine.trainer import Trainer

    trainer = (trainer_class or Trainer)(options, device, callbacks)
    try:
        trainer.train()
    finally:
        options = trainer.opt
    return options
