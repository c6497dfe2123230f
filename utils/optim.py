"""Optimiser construction, LR schedule lambdas, early stopping and class/image weights (upstream semantics)."""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn

from utils.logging import LOGGER, colorstr

_NORM_LAYERS = tuple(v for k, v in vars(nn).items() if "Norm" in k and isinstance(v, type))


def split_param_groups(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter], list[nn.Parameter]]:
    """Return ``(biases, decayed_weights, norm_weights)``: every direct parameter of every module, once each.

    A parameter named ``bias`` goes to biases; ``weight`` of a normalisation layer (any ``torch.nn`` class whose
    name contains "Norm") to norm_weights; everything else (conv/linear weights, learned scalars) is decayed.
    """
    biases, decayed, norm_weights = [], [], []
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if name == "bias":
                biases.append(param)
            elif name == "weight" and isinstance(module, _NORM_LAYERS):
                norm_weights.append(param)
            else:
                decayed.append(param)
    return biases, decayed, norm_weights


def smart_optimizer(model: nn.Module, name: str = "Adam", lr: float = 0.001, momentum: float = 0.9,
                    decay: float = 1e-5) -> torch.optim.Optimizer:
    """Return an optimiser with upstream's three parameter groups, in this order.

    Group 0: biases (no weight decay); group 1: other weights (``weight_decay=decay``); group 2: normalisation-layer
    weights (no decay). ``name`` is SGD (Nesterov, ``momentum``), Adam (betas ``(momentum, 0.999)``), AdamW (same
    betas) or RMSProp (``momentum``), case-insensitive.

    Raises:
        NotImplementedError: ``name`` is not one of the four optimisers.
    """
    biases, decayed, norm_weights = split_param_groups(model)
    key = name.lower()
    if key == "adam":
        optimizer = torch.optim.Adam(biases, lr=lr, betas=(momentum, 0.999))
    elif key == "adamw":
        optimizer = torch.optim.AdamW(biases, lr=lr, betas=(momentum, 0.999), weight_decay=0.0)
    elif key == "rmsprop":
        optimizer = torch.optim.RMSprop(biases, lr=lr, momentum=momentum)
    elif key == "sgd":
        optimizer = torch.optim.SGD(biases, lr=lr, momentum=momentum, nesterov=True)
    else:
        raise NotImplementedError(f"Optimizer '{name}' not implemented; choose one of SGD, Adam, AdamW, RMSProp")
    optimizer.add_param_group({"params": decayed, "weight_decay": decay})
    optimizer.add_param_group({"params": norm_weights, "weight_decay": 0.0})
    LOGGER.info(f"{colorstr('optimizer:')} {type(optimizer).__name__}(lr={lr}) with parameter groups "
                f"{len(norm_weights)} weight(decay=0.0), {len(decayed)} weight(decay={decay}), {len(biases)} bias")
    return optimizer


def one_cycle(y1: float = 0.0, y2: float = 1.0, steps: int = 100) -> Callable[[float], float]:
    """Return ``f(x)``: a half-cosine ramp from ``y1`` at x=0 to ``y2`` at x=steps (the ``--cos-lr`` factor)."""
    return lambda x: ((1 - math.cos(x * math.pi / steps)) / 2) * (y2 - y1) + y1


def linear_lr(epochs: int, lrf: float) -> Callable[[float], float]:
    """Return ``f(epoch) = (1 - epoch/epochs) * (1 - lrf) + lrf``: linear decay from 1 to ``lrf``."""
    return lambda x: (1 - x / epochs) * (1.0 - lrf) + lrf


class EarlyStopping:
    """Stop when fitness has not strictly improved for ``patience`` epochs (0 or None means never stop).

    Attributes:
        best_fitness: best fitness seen (starts at -1, so the first epoch always counts as an improvement).
        best_epoch: epoch of ``best_fitness``. possible_stop: the next epoch without improvement stops training.
    """

    def __init__(self, patience: int = 30) -> None:
        self.best_fitness = -1.0
        self.best_epoch = 0
        self.patience = patience or float("inf")
        self.possible_stop = False

    def __call__(self, epoch: int, fitness: float) -> bool:
        """Record ``fitness`` for ``epoch``; return True when training should stop."""
        if fitness > self.best_fitness:
            self.best_epoch = epoch
            self.best_fitness = fitness
        delta = epoch - self.best_epoch
        self.possible_stop = delta >= (self.patience - 1)
        stop = delta >= self.patience
        if stop:
            LOGGER.info(f"Stopping training early as no improvement observed in last {self.patience} epochs. "
                        f"Best results observed at epoch {self.best_epoch}, best model saved as best.pt.\n"
                        f"To update EarlyStopping(patience={self.patience}) pass a new patience value, "
                        f"i.e. `python train.py --patience 300` or use `--patience 0` to disable EarlyStopping.")
        return stop


def labels_to_class_weights(labels: Sequence[np.ndarray], nc: int = 80) -> torch.Tensor:
    """Return (nc,) float weights proportional to 1 / class frequency, summing to 1 (absent classes count as 1).

    Args:
        labels: per-image arrays (k, 5) ``[cls, x, y, w, h]``.
    """
    if len(labels) == 0 or labels[0] is None:
        return torch.Tensor()
    classes = np.concatenate(labels, 0)[:, 0].astype(int)
    counts = np.bincount(classes, minlength=nc).astype(float)
    counts[counts == 0] = 1
    weights = 1 / counts
    return torch.from_numpy(weights / weights.sum()).float()


def labels_to_image_weights(labels: Sequence[np.ndarray], nc: int = 80,
                            class_weights: np.ndarray | None = None) -> np.ndarray:
    """Return (n_images,) sampling weights: sum over each image's labels of their class weight.

    Args:
        labels: per-image arrays (k, 5) ``[cls, x, y, w, h]``. class_weights: (nc,), default all ones.
    """
    class_weights = np.ones(nc) if class_weights is None else np.asarray(class_weights, dtype=float)
    counts_per_image = np.array([len(x) for x in labels], dtype=int)
    image_index = np.repeat(np.arange(len(labels)), counts_per_image)
    columns = [np.asarray(x, dtype=float)[:, 0] if len(x) else np.zeros(0) for x in labels]
    classes = np.concatenate(columns).astype(int) if columns else np.zeros(0, dtype=int)
    counts = np.bincount(image_index * nc + classes, minlength=len(labels) * nc).reshape(len(labels), nc)
    return (counts * class_weights.reshape(1, nc)).sum(1)
