"""Classification validation: top-1/top-5 accuracy and cross-entropy loss over a loader, per class with ``verbose``.

Used by the classification trainer after every epoch (on the EMA model) and by ``classify/val.py``. The model is
left as it was given (its training mode is restored); inference runs under the run's precision policy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

from engine.loop import TQDM_BAR_FORMAT
from utils.logging import LOGGER
from utils.precision import PrecisionPolicy


def _device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Where and in which precision ``model`` takes inputs: its parameters', else a backend's ``device`` (fp32)."""
    param = next(model.parameters(), None)
    if param is not None:
        return param.device, param.dtype
    return torch.device(getattr(model, "device", "cpu")), torch.float32


@dataclass
class ClassifyMetrics:
    """Validation results: ``top1``/``top5`` accuracy (0-1), mean ``loss``; per class (nc,) ``images``,
    ``top1_per_class`` and ``top5_per_class`` (NaN for classes without images); ``seen`` images."""

    top1: float = 0.0
    top5: float = 0.0
    loss: float = 0.0
    seen: int = 0
    images: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    top1_per_class: np.ndarray = field(default_factory=lambda: np.zeros(0))
    top5_per_class: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def as_tuple(self) -> tuple[float, float, float]:
        """Return upstream's ``(top1, top5, loss)``."""
        return self.top1, self.top5, self.loss


def accuracy_from_topk(topk: torch.Tensor, targets: torch.Tensor,
                       nc: int) -> tuple[float, float, np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(top1, top5, images per class, top-1 per class, top-5 per class)`` from (n, k) ranked class indices
    and (n,) targets; classes without images get NaN per-class accuracy. Vectorised (bincount)."""
    hits = topk == targets[:, None]
    top1_hit, top5_hit = hits[:, 0].double(), hits[:, :5].any(1).double()
    counts = torch.bincount(targets, minlength=nc).double()
    per1 = torch.bincount(targets, weights=top1_hit, minlength=nc) / counts
    per5 = torch.bincount(targets, weights=top5_hit, minlength=nc) / counts
    n = max(len(targets), 1)
    return (float(top1_hit.sum() / n), float(top5_hit.sum() / n), counts.long().numpy(), per1.numpy(),
            per5.numpy())


class ClassifyValidator:
    """Validate a classifier on a loader of ``(images (B, 3, H, W) float normalised, labels (B,))`` batches.

    Args:
        model: the classifier (logits (B, nc)). loader: the validation loader. nc: number of classes.
        criterion: loss on (logits, labels) (default: plain cross-entropy). policy: precision policy (autocast,
            input layout); None runs plain fp32. desc: progress-bar text. names: class names for ``verbose``.
    """

    def __init__(self, model: nn.Module, loader: Iterable, nc: int, criterion: nn.Module | None = None,
                 policy: PrecisionPolicy | None = None, desc: str = "validating", names: Mapping | None = None):
        self.model, self.loader, self.nc = model, loader, int(nc)
        self.criterion = criterion or nn.CrossEntropyLoss()
        self.policy, self.desc = policy, desc
        self.names = dict(names) if names is not None else {i: str(i) for i in range(self.nc)}

    @torch.inference_mode()
    def __call__(self, verbose: bool = False, summary: bool = False) -> ClassifyMetrics:
        """Run the loader once; returns the :class:`ClassifyMetrics`. ``summary`` logs the table's ``all`` row,
        ``verbose`` the whole table (one row per class)."""
        training = self.model.training
        self.model.eval()
        device, _ = _device_dtype(self.model)
        ranks, targets, loss_sum = [], [], 0.0
        try:
            for images, labels in tqdm(self.loader, desc=self.desc, bar_format=TQDM_BAR_FORMAT, leave=False):
                images, labels = images.to(device, non_blocking=True), labels.to(device)
                logits = self._forward(images)
                loss_sum += float(self.criterion(logits, labels)) * len(labels)
                ranks.append(logits.topk(min(5, logits.shape[1]), 1).indices.cpu())
                targets.append(labels.cpu())
        finally:
            self.model.train(training)
        return self._metrics(ranks, targets, loss_sum, verbose, summary)

    def _forward(self, images: torch.Tensor) -> torch.Tensor:
        _, dtype = _device_dtype(self.model)
        if self.policy is None:
            return self.model(images.to(dtype)).float()
        with self.policy.autocast():
            return self.model(self.policy.prepare_input(images.to(dtype))).float()

    def _metrics(self, ranks: list, targets: list, loss_sum: float, verbose: bool, summary: bool) -> ClassifyMetrics:
        if not targets:
            LOGGER.warning("WARNING ⚠️ validation loader yielded no images")
            return ClassifyMetrics()
        topk, target = torch.cat(ranks), torch.cat(targets)
        top1, top5, counts, per1, per5 = accuracy_from_topk(topk, target, self.nc)
        metrics = ClassifyMetrics(top1, top5, loss_sum / len(target), len(target), counts, per1, per5)
        if verbose or summary:
            self.log_table(metrics, per_class=verbose)
        return metrics

    def log_table(self, metrics: ClassifyMetrics, per_class: bool = True) -> None:
        """Log upstream's table: ``Class Images top1_acc top5_acc``, the ``all`` row, then (``per_class``) one row
        per class with images."""
        LOGGER.info(f"{'Class':>24}{'Images':>12}{'top1_acc':>12}{'top5_acc':>12}")
        LOGGER.info(f"{'all':>24}{metrics.seen:>12}{metrics.top1:>12.3g}{metrics.top5:>12.3g}")
        for i, name in self.names.items() if per_class else ():
            if i < len(metrics.images) and metrics.images[i]:
                LOGGER.info(f"{str(name):>24}{int(metrics.images[i]):>12}{metrics.top1_per_class[i]:>12.3g}"
                            f"{metrics.top5_per_class[i]:>12.3g}")
