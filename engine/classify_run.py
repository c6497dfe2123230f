"""The runs behind ``classify/train.py`` and ``classify/val.py``: options -> device (and DDP group) -> work.

The entry scripts only parse flags; training, validation of a weights file and their logs happen here.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from engine.classify_setup import ClassifyError, ClassifyOptions, prepare_run
from engine.classify_trainer import ClassifyTrainer, check_classify_options
from engine.classify_validator import ClassifyMetrics, ClassifyValidator
from engine.train_options import builtin_dataset_name
from utils.callbacks import Callbacks
from utils.dist import check_batch_split, destroy_distributed, get_local_rank, get_world_size, is_main_process
from utils.files import ROOT, increment_path
from utils.logging import LOGGER, colorstr


def dataset_yaml(data: Any) -> Any:
    """Return the YAML behind ``--data`` when it names one (``shapes-cls`` -> ``data/shapes-cls.yaml``)."""
    named = ROOT / "data" / f"{data}.yaml"
    return str(named) if isinstance(data, str) and named.is_file() else data


def run_classify_training(options: ClassifyOptions, callbacks: Callbacks | None = None) -> ClassifyOptions:
    """Train with ``options`` (from the command line); returns the run's final options (``save_dir`` set).

    Under a DDP launch (``LOCAL_RANK`` set) every rank joins the process group and rank 0 writes the outputs.

    Raises:
        ClassifyError: a user error (bad batch size, optimizer, model name, ...), reported without a traceback.
    """
    from utils.dist import broadcast_from_main, init_distributed
    from utils.torch_utils import select_device

    builtin = bool(builtin_dataset_name(dataset_yaml(options.data)))
    options = prepare_run(options, builtin)
    check_classify_options(options)
    distributed, level = get_local_rank() != -1, LOGGER.level
    try:
        device = select_device(options.device, batch_size=options.batch_size)
    except ValueError as error:
        raise ClassifyError(str(error)) from None
    if not is_main_process():
        LOGGER.setLevel(logging.WARNING)
    try:
        if distributed:
            try:
                check_batch_split(options.batch_size)
            except ValueError as error:
                raise ClassifyError(str(error)) from None
            device = init_distributed(device)
            options.save_dir = broadcast_from_main(options.save_dir)
            world = get_world_size()
            LOGGER.info(f"{colorstr('DDP:')} {world} processes, backend {torch.distributed.get_backend()}, batch "
                        f"{options.batch_size // world} per process")
        ClassifyTrainer(options, device, callbacks).train()
        return options
    finally:
        LOGGER.setLevel(level)
        if distributed:
            destroy_distributed()


def load_classifier(weights: Any, device: torch.device, half: bool = False) -> torch.nn.Module:
    """Load a classifier: a ``.pt`` through the safe loader (fp32, eval mode, not fused), an exported file
    (``.torchscript``, ``.onnx``) through ``DetectMultiBackend``."""
    if str(weights).endswith(".pt"):
        from models.loading import load_model

        return load_model(weights, device, fuse=False)
    from models.backends import DetectMultiBackend

    return DetectMultiBackend(weights, device=device, fp16=half)


def validate_weights(data: Any, weights: Any, batch_size: int = 128, imgsz: int = 224, device: str = "",
                     workers: int = 8, verbose: bool = False, project: Any = ROOT / "runs/val-cls", name: str = "exp",
                     exist_ok: bool = False, half: bool = False, fp32: bool = False) -> ClassifyMetrics:
    """``classify/val.py``: top-1/top-5/loss of a classification ``.pt`` on the ``val`` (else ``test``) split.

    The model's class names must match the dataset's class folders (by name, in any order). Exported models
    (``.torchscript``/``.onnx`` from ``export.py``) run through ``DetectMultiBackend`` with batch size 1.

    Raises:
        ClassifyError: the checkpoint's classes and the dataset's differ.
    """
    from utils.data.classify import check_cls_dataset, create_classification_dataloader
    from utils.precision import select_precision
    from utils.torch_utils import select_device

    device = select_device(device, batch_size=batch_size)
    model = load_classifier(weights, device, half)
    if not str(weights).endswith(".pt"):
        LOGGER.info(f"{weights}: exported model, validating with batch size 1 (its input shape)")
        batch_size = 1
    elif half and device.type != "cpu":
        model = model.half()
    data_info = check_cls_dataset(data, require_train=False)
    names = _model_names(model, data_info["names"], weights)
    loader = create_classification_dataloader(data_info["val"], imgsz, batch_size, augment=False, rank=-1,
                                              workers=workers, shuffle=False, classes=names,
                                              prefix=colorstr("val: "))
    save_dir = increment_path(Path(project) / name, exist_ok=exist_ok, mkdir=True)
    policy = select_precision(device, force_fp32=fp32, cuda_amp=False)
    validator = ClassifyValidator(model, loader, len(names), policy=policy, names=dict(enumerate(names)))
    metrics = validator(verbose=verbose, summary=True)
    LOGGER.info(f"Results saved to {colorstr('bold', save_dir)}")
    return metrics


def _model_names(model: torch.nn.Module, data_names: dict, weights: Any) -> list[str]:
    """The model's class names in its output order; the dataset's class folders must be the same set."""
    names = getattr(model, "names", None)
    names = list(names.values()) if isinstance(names, dict) else list(names or [])
    if not names:
        return [data_names[i] for i in range(len(data_names))]
    if set(names) != set(data_names.values()):
        raise ClassifyError(f"{weights} was trained on classes {names[:10]}... but the dataset has "
                            f"{list(data_names.values())[:10]}...; validate on a dataset with the same class folders")
    return [str(n) for n in names]
