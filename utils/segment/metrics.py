"""Segmentation metrics (upstream ``utils/segment/metrics.py``): box and mask P, R, AP side by side.

``ap_per_class_box_and_mask`` runs :func:`utils.metrics.ap_per_class` twice on the same detections, once with their
box matches and once with their mask matches (the IoU thresholds are the same, 0.50:0.05:0.95); ``Metric`` holds one
of the two results and ``Metrics`` both. ``fitness`` weighs mAP50 0.1 and mAP50-95 0.9 for boxes and again for
masks. ``match_masks`` is the validation matching with mask IoU instead of box IoU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike

from utils.mask_ops import mask_iou
from utils.metrics import ap_per_class, match_by_iou

__all__ = ["BEST_KEYS", "KEYS", "Metric", "Metrics", "ap_per_class_box_and_mask", "fitness", "match_masks"]

KEYS = [
    "train/box_loss", "train/seg_loss", "train/obj_loss", "train/cls_loss",  # train loss
    "metrics/precision(B)", "metrics/recall(B)", "metrics/mAP_0.5(B)", "metrics/mAP_0.5:0.95(B)",  # box metrics
    "metrics/precision(M)", "metrics/recall(M)", "metrics/mAP_0.5(M)", "metrics/mAP_0.5:0.95(M)",  # mask metrics
    "val/box_loss", "val/seg_loss", "val/obj_loss", "val/cls_loss",  # val loss
    "x/lr0", "x/lr1", "x/lr2",
]
BEST_KEYS = [
    "best/epoch", "best/precision(B)", "best/recall(B)", "best/mAP_0.5(B)", "best/mAP_0.5:0.95(B)",
    "best/precision(M)", "best/recall(M)", "best/mAP_0.5(M)", "best/mAP_0.5:0.95(M)",
]


def fitness(x: ArrayLike) -> np.ndarray:
    """Return fitness (n,) of metric rows (n, >= 8) ``[P(B), R(B), mAP50(B), mAP(B), P(M), R(M), mAP50(M), mAP(M)]``:
    ``0.1 mAP50 + 0.9 mAP50-95`` of the boxes plus the same of the masks."""
    weights = np.array([0.0, 0.0, 0.1, 0.9, 0.0, 0.0, 0.1, 0.9])
    return (np.asarray(x, dtype=np.float64)[:, :8] * weights).sum(1)


def ap_per_class_box_and_mask(tp_m: ArrayLike, tp_b: ArrayLike, conf: ArrayLike, pred_cls: ArrayLike,
                              target_cls: ArrayLike, plot: bool = False, save_dir: str | Path = ".",
                              names: Any = ()) -> dict[str, dict[str, np.ndarray]]:
    """Per-class P, R, F1 and AP for the same detections matched by mask (``tp_m``) and by box (``tp_b``).

    Args:
        tp_m, tp_b: (n, 10) bool matches at the 10 IoU thresholds. conf, pred_cls: (n,). target_cls: (m,).
        plot: write ``Box*_curve.png`` and ``Mask*_curve.png`` (PR, F1, P, R) to ``save_dir``.

    Returns:
        ``{"boxes": {...}, "masks": {...}}``, each with ``p``, ``r``, ``f1`` (c,), ``ap`` (c, 10), ``ap_class`` (c,)
        and the ``tp``/``fp`` counts (c,) at the best-F1 confidence.
    """
    results = {}
    for key, tp, prefix in (("boxes", tp_b, "Box"), ("masks", tp_m, "Mask")):
        tp_count, fp_count, p, r, f1, ap, ap_class = ap_per_class(tp, conf, pred_cls, target_cls, plot=plot,
                                                                  save_dir=save_dir, names=names, prefix=prefix)
        results[key] = {"p": p, "r": r, "ap": ap, "f1": f1, "ap_class": ap_class, "tp": tp_count, "fp": fp_count}
    return results


class Metric:
    """P, R, F1 and AP per class of one kind of match (boxes or masks), with upstream's accessors."""

    def __init__(self) -> None:
        self.p: np.ndarray | list = []  # (nc,)
        self.r: np.ndarray | list = []  # (nc,)
        self.f1: np.ndarray | list = []  # (nc,)
        self.all_ap: np.ndarray | list = []  # (nc, 10)
        self.ap_class_index: np.ndarray | list = []  # (nc,)

    @property
    def ap50(self) -> np.ndarray | list:
        """AP at IoU 0.5 per class (nc,)."""
        return self.all_ap[:, 0] if len(self.all_ap) else []

    @property
    def ap(self) -> np.ndarray | list:
        """AP50-95 per class (nc,)."""
        return self.all_ap.mean(1) if len(self.all_ap) else []

    @property
    def mp(self) -> float:
        """Mean precision over classes."""
        return float(np.mean(self.p)) if len(self.p) else 0.0

    @property
    def mr(self) -> float:
        """Mean recall over classes."""
        return float(np.mean(self.r)) if len(self.r) else 0.0

    @property
    def map50(self) -> float:
        """Mean AP at IoU 0.5."""
        return float(self.all_ap[:, 0].mean()) if len(self.all_ap) else 0.0

    @property
    def map(self) -> float:
        """Mean AP50-95."""
        return float(self.all_ap.mean()) if len(self.all_ap) else 0.0

    def mean_results(self) -> tuple[float, float, float, float]:
        """(mp, mr, map50, map)."""
        return self.mp, self.mr, self.map50, self.map

    def class_result(self, i: int) -> tuple[float, float, float, float]:
        """(p, r, ap50, ap) of the i-th class in ``ap_class_index``."""
        return self.p[i], self.r[i], self.ap50[i], self.ap[i]

    def get_maps(self, nc: int) -> np.ndarray:
        """(nc,) AP50-95 per class id; classes without labels get the mean AP50-95."""
        maps = np.zeros(nc) + self.map
        for i, c in enumerate(self.ap_class_index):
            maps[int(c)] = self.ap[i]
        return maps

    def update(self, results: Sequence) -> None:
        """Set from ``(p, r, all_ap, f1, ap_class_index)``."""
        self.p, self.r, self.all_ap, self.f1, self.ap_class_index = results


class Metrics:
    """Box and mask :class:`Metric` of one validation pass."""

    def __init__(self) -> None:
        self.metric_box = Metric()
        self.metric_mask = Metric()

    def update(self, results: dict) -> None:
        """Set both from :func:`ap_per_class_box_and_mask`'s dict."""
        for metric, key in ((self.metric_box, "boxes"), (self.metric_mask, "masks")):
            part = results[key]
            metric.update((part["p"], part["r"], part["ap"], part["f1"], part["ap_class"]))

    def mean_results(self) -> tuple[float, ...]:
        """(P, R, mAP50, mAP50-95) of the boxes, then of the masks (8 values)."""
        return self.metric_box.mean_results() + self.metric_mask.mean_results()

    def class_result(self, i: int) -> tuple[float, ...]:
        """Box then mask (p, r, ap50, ap) of the i-th class in ``ap_class_index``."""
        return self.metric_box.class_result(i) + self.metric_mask.class_result(i)

    def get_maps(self, nc: int) -> np.ndarray:
        """Box per-class AP50-95 plus mask per-class AP50-95 (nc,), summed as upstream does (range 0-2)."""
        return self.metric_box.get_maps(nc) + self.metric_mask.get_maps(nc)

    @property
    def ap_class_index(self) -> np.ndarray | list:
        """Class ids of the per-class rows (the same for boxes and masks)."""
        return self.metric_box.ap_class_index


def match_masks(detections: torch.Tensor, labels: torch.Tensor, iouv: torch.Tensor, pred_masks: torch.Tensor,
                gt_masks: torch.Tensor, overlap: bool = False) -> torch.Tensor:
    """Which detections are correct at each IoU threshold, by mask IoU (upstream's segmentation ``process_batch``).

    Args:
        detections: (N, 6+) ``[x1, y1, x2, y2, conf, cls, ...]`` by decreasing conf. labels: (M, 5) ``[cls, ...]``.
        iouv: (K,) thresholds. pred_masks: (N, h, w) binary. gt_masks: (M, h', w') binary, or with ``overlap`` one
            (1, h', w') / (h', w') index mask whose value k is label row k (1-based). Ground truth at another
            resolution is resized bilinearly to (h, w) and thresholded at 0.5.

    Returns:
        bool (N, K), with the same matching rule as :func:`utils.metrics.process_batch`.
    """
    n_det, m = detections.shape[0], labels.shape[0]
    if not n_det or not m:
        return torch.zeros((n_det, iouv.numel()), dtype=torch.bool, device=detections.device)
    gt = gt_masks.float()
    if overlap:
        index = torch.arange(1, m + 1, device=gt.device, dtype=gt.dtype).view(m, 1, 1)
        gt = (gt.reshape(1, *gt.shape[-2:]) == index).float()
    if gt.shape[1:] != pred_masks.shape[1:]:
        gt = F.interpolate(gt[None], pred_masks.shape[1:], mode="bilinear", align_corners=False)[0].gt_(0.5)
    iou = mask_iou(gt.reshape(m, -1), pred_masks.reshape(n_det, -1))
    return match_by_iou(iou, labels[:, 0], detections[:, 5], iouv)
