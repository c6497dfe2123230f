"""Detection metrics of a validation pass: per-detection match records and the P/R/AP computed from them.

:class:`MatchRecords` collects, per image, which detections match a label at each of the IoU thresholds
0.50:0.05:0.95 (``utils.metrics.process_batch``), their confidences and classes, the label classes, and the VOC
matches at IoU 0.5. :meth:`MatchRecords.metrics` turns them into a :class:`ValMetrics`: ``ap_per_class``'s
101-point interpolated AP, or with ``voc_ap`` PASCAL VOC's all-point AP50 (``utils.metrics.ap_per_class_voc``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

IOU_THRESHOLDS = (0.5, 0.95, 10)  # linspace(start, stop, num) of the matching thresholds


def iou_thresholds(device: torch.device | str = "cpu") -> torch.Tensor:
    """Return the (10,) IoU thresholds 0.50, 0.55, ..., 0.95 detections are matched at."""
    return torch.linspace(*IOU_THRESHOLDS, device=device)


def _empty() -> np.ndarray:
    return np.zeros(0)


@dataclass
class ValMetrics:
    """P, R and AP of one validation pass, per class (arrays over ``ap_class``) and as means over classes.

    ``tp``/``fp``/``p``/``r``/``f1`` are taken at the confidence with the best mean F1; ``ap`` is AP50-95 and
    ``ap50`` AP at IoU 0.5 (VOC's with ``voc_ap``). ``nt`` (nc,) counts labels per class. All zero (and the
    arrays empty) when no detection matched.
    """

    nt: np.ndarray
    tp: Any = 0.0
    fp: Any = 0.0
    p: np.ndarray = field(default_factory=_empty)
    r: np.ndarray = field(default_factory=_empty)
    f1: np.ndarray = field(default_factory=_empty)
    ap: np.ndarray = field(default_factory=_empty)
    ap50: np.ndarray = field(default_factory=_empty)
    ap_class: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    mp: float = 0.0
    mr: float = 0.0
    map50: float = 0.0
    map: float = 0.0

    def class_maps(self, nc: int) -> np.ndarray:
        """Return (nc,) AP50-95 per class; classes absent from the split get the overall mAP50-95."""
        maps = np.zeros(nc) + self.map
        for i, c in enumerate(self.ap_class):
            maps[int(c)] = self.ap[i]
        return maps


class MatchRecords:
    """Accumulates per-image match records of a pass over ``nc`` classes at ``n_iou`` IoU thresholds."""

    def __init__(self, nc: int, n_iou: int) -> None:
        self.nc, self.n_iou = nc, n_iou
        self.records: list[tuple[torch.Tensor, ...]] = []

    def add(self, correct: torch.Tensor, conf: torch.Tensor, pred_cls: torch.Tensor, target_cls: torch.Tensor,
            voc_correct: torch.Tensor) -> None:
        """Record one image: ``correct`` (n, n_iou) bool, ``conf``/``pred_cls`` (n,), ``target_cls`` (m,),
        ``voc_correct`` (n,) bool matches at IoU 0.5 in VOC's order."""
        self.records.append((correct, conf, pred_cls, target_cls, voc_correct))

    def __len__(self) -> int:
        return len(self.records)

    def arrays(self) -> list[np.ndarray]:
        """Return the concatenated records as numpy arrays ``[correct, conf, pred_cls, target_cls, voc_correct]``."""
        if not self.records:
            return [np.zeros((0, self.n_iou), bool), np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0, bool)]
        return [torch.cat(x, 0).cpu().numpy() for x in zip(*self.records, strict=True)]

    def metrics(self, voc_ap: bool = False, plot: bool = False, save_dir: Path = Path(""),
                names: dict[int, str] | None = None) -> ValMetrics:
        """Compute :class:`ValMetrics`; ``plot`` writes the PR/F1/P/R curves to ``save_dir``."""
        from utils.metrics import ap_per_class, ap_per_class_voc

        stats = self.arrays()
        result = ValMetrics(nt=np.bincount(stats[3].astype(int), minlength=self.nc))
        if not stats[0].any():
            return result
        tp, fp, p, r, f1, ap, ap_class = ap_per_class(*stats[:4], plot=plot, save_dir=save_dir, names=names or {})
        ap50, ap = ap[:, 0], ap.mean(1)
        if voc_ap:  # VOC matching and all-point AP at IoU 0.5 replace the mAP50 column
            ap50 = ap_per_class_voc(stats[4], *stats[1:4])[0]
        result.tp, result.fp, result.p, result.r, result.f1 = tp, fp, p, r, f1
        result.ap, result.ap50, result.ap_class = ap, ap50, ap_class
        result.mp, result.mr, result.map50, result.map = p.mean(), r.mean(), ap50.mean(), ap.mean()
        return result
