"""Data for the pretrainer: the project's dataset pipeline with light augmentation, labelled or not.

``--data`` is a dataset YAML (its ``train:`` and ``val:`` splits, labels used for the box mask) or a plain image
source (a folder searched recursively, a ``.txt`` list of images, or one image file) that may have no labels at all.
Loading, caching (``--cache ram/disk``) and bad-input handling (corrupt images skipped with a warning naming the
file) are those of :func:`utils.data.loaders.create_dataloader`.

Augmentation is light: left-right flips (``fliplr``) and HSV jitter, no mosaic, no geometric warp. The dataset's
augmenting mode refuses a split without labels, so an unlabeled source is loaded without dataset augmentation and
the flips are applied to each batch by :func:`random_fliplr` instead (no HSV jitter then).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import torch

from utils.data.loaders import create_dataloader
from utils.data.paths import has_image_suffix
from utils.logging import LOGGER, colorstr

PRETRAIN_HYP = {"hsv_h": 0.015, "hsv_s": 0.7, "hsv_v": 0.4, "degrees": 0.0, "translate": 0.0, "scale": 0.0,
                "shear": 0.0, "perspective": 0.0, "flipud": 0.0, "fliplr": 0.5, "mosaic": 0.0, "mixup": 0.0,
                "copy_paste": 0.0}
NO_LABEL_ERRORS = ("No labels found", "All labels empty")


@dataclass
class PretrainData:
    """Loaders of one pretraining run.

    Attributes:
        train_loader, train_dataset: the training split. val_loader: the validation split, or None (plain image
        sources). batch_flip_p: left-right flip probability :func:`random_fliplr` must apply per batch (0 when the
        dataset already augments). labelled: True when the training split has any box.
    """

    train_loader: Any
    train_dataset: Any
    val_loader: Any | None
    batch_flip_p: float
    labelled: bool


def resolve_sources(data: Union[str, Path, dict]) -> tuple[Any, Any | None]:
    """Return ``(train source, val source or None)`` for a dataset YAML/dict or a plain image folder/list/file.

    Raises:
        FileNotFoundError: ``data`` is a path that does not exist (the message says what was expected).
    """
    if isinstance(data, dict) or str(data).lower().endswith((".yaml", ".yml")):
        from utils.data.dataset_yaml import check_dataset

        info = check_dataset(data)
        return info["train"], info.get("val")
    path = Path(data)
    if path.is_dir() or (path.is_file() and (path.suffix.lower() == ".txt" or has_image_suffix(path))):
        return str(path), None
    raise FileNotFoundError(f"--data {data}: not a dataset YAML, an image folder, a .txt image list or an image")


def _loader(source: Any, imgsz: int, batch_size: int, stride: int, augment: bool, shuffle: bool, workers: int,
            cache: str | None, prefix: str, rank: int = -1) -> tuple[Any, Any]:
    return create_dataloader(source, imgsz, batch_size, stride, hyp=dict(PRETRAIN_HYP), augment=augment,
                             cache=cache, rect=False, workers=workers, shuffle=shuffle, prefix=prefix, rank=rank)


def build_pretrain_data(data: Union[str, Path, dict], imgsz: int, batch_size: int, stride: int, workers: int = 8,
                        cache: str | None = None, augment: bool = True, rank: int = -1,
                        val: bool = True) -> PretrainData:
    """Build the train (augmented lightly) and val loaders; see the module docstring.

    ``batch_size`` is per process. DDP: ``rank`` (``LOCAL_RANK``) gives each process its fixed share of the training
    images through :class:`utils.data.loaders.SmartDistributedSampler` (the label cache is built by rank 0 first);
    ``val=False`` (ranks other than 0) skips the val loader.

    Images are letterboxed to ``imgsz`` x ``imgsz`` (a multiple of ``stride``), batches are the loader's
    ``(uint8 (B, 3, H, W) RGB, labels (N, 6) [image, cls, xywhn], paths, shapes)``.
    """
    train_source, val_source = resolve_sources(data)
    prefix = colorstr("pretrain: ")
    flip_p = 0.0
    try:
        loader, dataset = _loader(train_source, imgsz, batch_size, stride, augment, True, workers, cache, prefix,
                                  rank)
    except RuntimeError as error:
        if not (augment and any(text in str(error) for text in NO_LABEL_ERRORS)):
            raise
        LOGGER.warning(f"{prefix}{train_source} has no labels: uniform loss weights, flip-only augmentation")
        loader, dataset = _loader(train_source, imgsz, batch_size, stride, False, True, workers, cache, prefix,
                                  rank)
        flip_p = PRETRAIN_HYP["fliplr"]
    val_loader = None
    if val_source and val:
        val_loader, _ = _loader(val_source, imgsz, batch_size, stride, False, False, workers, cache,
                                colorstr("val: "))
    labelled = any(len(labels) for labels in dataset.labels)
    return PretrainData(loader, dataset, val_loader, flip_p, labelled)


def random_fliplr(images: torch.Tensor, targets: torch.Tensor, p: float,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip each image of a (B, C, H, W) batch left-right with probability ``p``; mirror its label x (N, 6) too.

    Returns new tensors; the inputs are not modified.
    """
    if p <= 0:
        return images, targets
    flip = torch.rand(images.shape[0], generator=generator) < p
    flip = flip.to(images.device)
    images = torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)
    targets = targets.clone()
    if targets.numel():
        rows = flip[targets[:, 0].long()]
        targets[rows, 2] = 1.0 - targets[rows, 2]
    return images, targets
