"""Detection metrics: YOLOv5 validation matching, AP/mAP, confusion matrix and VOC AP (the box IoUs come from
:mod:`utils.boxes` and are re-exported here under upstream's import path).

Box formats: ``xyxy`` = corners (x1, y1, x2, y2), ``xywh`` = centre x, centre y, width, height; any consistent
unit (usually pixels).

Two AP definitions live here:

* ``ap_per_class``/``compute_ap``: upstream YOLOv5's. Sentinels (recall 0, precision 1) and (recall 1, precision 0)
  are added, the precision envelope is ``np.interp``-olated at 101 recall points and integrated with the trapezoid
  rule. pycocotools instead averages the envelope sampled with ``searchsorted`` at 101 recall thresholds, scoring 0
  beyond the maximum recall, and matches each detection to the best *unmatched* ground truth. Consequences:
  perfect predictions give 0.995 here vs 1.0; with every object found mAP50 reads ~0.003 lower than pycocotools;
  where recall never reaches 1, the interpolation adds a linear ramp from the last precision to 0 at recall 1, so
  ours reads higher (about half of (1 - max recall) x final precision per class; +0.04..0.06 on synthetic sets
  with 20% of objects missed). Report pycocotools figures for COCO.
* ``voc_ap``/``ap_per_class_voc``/``match_detections_voc``: PASCAL VOC as in Padilla's object-detection-metrics
  toolkit (all-point or 11-point AP at IoU 0.5).

Ties: where upstream resolves equal IoUs through numpy's (unstable) sort order, this module uses one documented
rule (see ``process_batch`` and ``ConfusionMatrix``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from numpy.typing import ArrayLike

from utils.boxes import bbox_ioa, bbox_iou, box_iou, wh_iou
from utils.logging import LOGGER
from utils.ops import smooth
from utils.plotting.metrics import plot_confusion_matrix, plot_mc_curve, plot_pr_curve

__all__ = [
    "ConfusionMatrix", "ap_per_class", "ap_per_class_voc", "bbox_ioa", "bbox_iou", "box_iou", "compute_ap", "fitness",
    "match_detections_voc", "plot_mc_curve", "plot_pr_curve", "process_batch", "smooth", "voc_ap", "wh_iou",
]

_trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy >= 2 renamed trapz


def fitness(x: np.ndarray) -> np.ndarray:
    """Return model fitness (n,) from metric rows (n, >=4) ``[P, R, mAP@.5, mAP@.5:.95, ...]``: 0.1 mAP50 + 0.9 mAP."""
    weights = np.array([0.0, 0.0, 0.1, 0.9])
    return (np.asarray(x)[:, :4] * weights).sum(1)


def compute_ap(recall: np.ndarray, precision: np.ndarray, method: str = "interp") -> tuple[float, np.ndarray,
                                                                                             np.ndarray]:
    """Return (AP, envelope precision, recall) for one precision-recall curve (upstream YOLOv5 definition).

    Args:
        recall: (n,) cumulative recall, non-decreasing.
        precision: (n,) cumulative precision.
        method: 'interp' = envelope sampled at 101 recall points, trapezoid-integrated; 'continuous' = sum of
            recall steps x envelope precision.

    Returns:
        ap, mpre (n + 2,) envelope with sentinels (1 at recall 0, 0 at recall 1), mrec (n + 2,).
    """
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.flip(np.maximum.accumulate(np.flip(np.concatenate(([1.0], precision, [0.0])))))
    if method == "interp":
        x = np.linspace(0, 1, 101)
        ap = float(_trapezoid(np.interp(x, mrec, mpre), x))
    elif method == "continuous":
        steps = np.where(mrec[1:] != mrec[:-1])[0]
        ap = float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))
    else:
        raise ValueError(f"compute_ap: unknown method {method!r}, expected 'interp' or 'continuous'")
    return ap, mpre, mrec


def _names_dict(names: Any, unique_classes: np.ndarray) -> dict[int, str]:
    """Return {0..: name} for the classes present (upstream re-indexes names to the present classes)."""
    names = dict(enumerate(names)) if isinstance(names, (list, tuple)) else dict(names or {})
    return dict(enumerate(v for k, v in names.items() if k in unique_classes))


def _class_curves(tp: np.ndarray, conf: np.ndarray, n_labels: int, px: np.ndarray,
                  eps: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Return per-class (recall@px, precision@px, ap (k,), pr-curve@px) for detections sorted by conf desc.

    Args:
        tp: (n, k) bool/0-1 true positives at k IoU thresholds; conf: (n,) decreasing.
    """
    tpc, fpc = tp.cumsum(0), (1 - tp).cumsum(0)
    recall = tpc / (n_labels + eps)
    precision = tpc / (tpc + fpc)
    recall_px = np.interp(-px, -conf, recall[:, 0], left=0)
    precision_px = np.interp(-px, -conf, precision[:, 0], left=1)
    aps, pr_curve = np.zeros(tp.shape[1]), None
    for j in range(tp.shape[1]):
        aps[j], mpre, mrec = compute_ap(recall[:, j], precision[:, j])
        if j == 0:
            pr_curve = np.interp(px, mrec, mpre)
    return recall_px, precision_px, aps, pr_curve


def ap_per_class(tp: ArrayLike, conf: ArrayLike, pred_cls: ArrayLike, target_cls: ArrayLike, plot: bool = False,
                 save_dir: str | Path = ".", names: Any = (), eps: float = 1e-16,
                 prefix: str = "") -> tuple[np.ndarray, ...]:
    """Compute per-class P, R, F1 and AP (upstream YOLOv5 definition).

    Args:
        tp: (n, k) bool true positives per detection at k IoU thresholds (e.g. ``process_batch`` output).
        conf: (n,) detection confidences. pred_cls: (n,) detection classes. target_cls: (m,) label classes.
        plot: write ``{prefix}PR_curve.png``, ``F1_curve.png``, ``P_curve.png``, ``R_curve.png`` to ``save_dir``.
        names: class names (dict id->name or sequence).

    Returns:
        tp (c,), fp (c,), p (c,), r (c,), f1 (c,) at the confidence maximising the smoothed mean F1 (box filter
        f=0.1 over 1000 confidence points), ap (c, k), unique target classes (c,) int. Classes without both
        predictions and labels get zeros. Detections with equal conf keep their input order (stable sort).
    """
    tp, conf, pred_cls = np.asarray(tp), np.asarray(conf), np.asarray(pred_cls)
    tp = tp.reshape(len(tp), -1).astype(np.float64)
    order = np.argsort(-conf, kind="stable")
    tp, conf, pred_cls = tp[order], conf[order], pred_cls[order]
    unique_classes, n_targets = np.unique(np.asarray(target_cls), return_counts=True)
    px, pr_curves = np.linspace(0, 1, 1000), []
    ap = np.zeros((len(unique_classes), tp.shape[1]))
    p_curve, r_curve = np.zeros((len(unique_classes), 1000)), np.zeros((len(unique_classes), 1000))
    for ci, c in enumerate(unique_classes):
        selected = pred_cls == c
        if not selected.any() or not n_targets[ci]:
            continue
        r_curve[ci], p_curve[ci], ap[ci], pr_curve = _class_curves(tp[selected], conf[selected], n_targets[ci], px,
                                                                   eps)
        pr_curves.append(pr_curve)
    f1_curve = 2 * p_curve * r_curve / (p_curve + r_curve + eps)
    if plot:
        _plot_curves(px, pr_curves, ap, p_curve, r_curve, f1_curve, Path(save_dir), _names_dict(names, unique_classes),
                     prefix)
    best = smooth(f1_curve.mean(0), 0.1).argmax() if len(f1_curve) else 0
    p, r, f1 = p_curve[:, best], r_curve[:, best], f1_curve[:, best]
    tp_count = (r * n_targets).round()
    fp_count = (tp_count / (p + eps) - tp_count).round()
    return tp_count, fp_count, p, r, f1, ap, unique_classes.astype(int)


def _plot_curves(px: np.ndarray, pr_curves: list, ap: np.ndarray, p_curve: np.ndarray, r_curve: np.ndarray,
                 f1_curve: np.ndarray, save_dir: Path, names: dict, prefix: str) -> None:
    """Write the four ap_per_class figures into save_dir."""
    pr_stack = np.stack(pr_curves, 1) if pr_curves else np.zeros((len(px), 0))
    plot_pr_curve(px, pr_stack, ap, save_dir / f"{prefix}PR_curve.png", names)
    plot_mc_curve(px, f1_curve, save_dir / f"{prefix}F1_curve.png", names, ylabel="F1")
    plot_mc_curve(px, p_curve, save_dir / f"{prefix}P_curve.png", names, ylabel="Precision")
    plot_mc_curve(px, r_curve, save_dir / f"{prefix}R_curve.png", names, ylabel="Recall")


def _best_label(scores: torch.Tensor, prefer_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (max value (N,), row index (N,)) per column of scores (M, N); ties pick the last or first row."""
    if not prefer_last:
        return scores.max(0)
    values, flipped = scores.flip(0).max(0)
    return values, scores.shape[0] - 1 - flipped


def process_batch(detections: torch.Tensor, labels: torch.Tensor, iouv: torch.Tensor) -> torch.Tensor:
    """Return which detections are correct at each IoU threshold (upstream val.py matching, vectorised).

    Args:
        detections: (N, 6) ``[x1, y1, x2, y2, conf, cls]``, ordered by decreasing conf (NMS output order).
        labels: (M, 5) ``[cls, x1, y1, x2, y2]``, same units as detections.
        iouv: (K,) IoU thresholds, e.g. ``torch.linspace(0.5, 0.95, 10)``.

    Returns:
        bool (N, K). At threshold t each detection takes its highest-IoU same-class label with IoU >= t (ties: the
        highest label index); each label then keeps only the first detection (lowest index) that took it. The
        second step is upstream's quirk: it does not re-sort by IoU.
    """
    if not detections.shape[0] or not labels.shape[0]:
        return torch.zeros((detections.shape[0], iouv.shape[0]), dtype=torch.bool, device=detections.device)
    return match_by_iou(box_iou(labels[:, 1:], detections[:, :4]), labels[:, 0], detections[:, 5], iouv)


def match_by_iou(iou: torch.Tensor, label_cls: torch.Tensor, det_cls: torch.Tensor,
                 iouv: torch.Tensor) -> torch.Tensor:
    """The matching of :func:`process_batch` for any IoU (box or mask): iou (M, N) label x detection, label
    classes (M,), detection classes (N,) with detections by decreasing conf; returns bool (N, K)."""
    n_det, n_thr = iou.shape[1], iouv.shape[0]
    if not n_det or not iou.shape[0]:
        return torch.zeros((n_det, n_thr), dtype=torch.bool, device=iou.device)
    same_class = label_cls[:, None] == det_cls[None, :]
    best_iou, best_label = _best_label(torch.where(same_class, iou, iou.new_tensor(-1.0)), prefer_last=True)
    valid = best_iou[None, :] >= iouv.to(iou)[:, None]  # (K, N)
    det_index = torch.arange(n_det, device=iou.device).expand(n_thr, n_det)
    label_index = best_label.expand(n_thr, n_det)
    first_det = torch.full((n_thr, iou.shape[0]), n_det, dtype=torch.long, device=iou.device)
    first_det.scatter_reduce_(1, label_index, torch.where(valid, det_index, n_det), reduce="amin")
    return (valid & (first_det.gather(1, label_index) == det_index)).T


def _unique_greedy_matches(iou: torch.Tensor, iou_thres: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Match labels to detections one-to-one, greedily by IoU (ConfusionMatrix rule).

    Args:
        iou: (M, N) label x detection IoU; pairs need IoU > iou_thres.

    Returns:
        (label index (P,), detection index (P,)) sorted by label. Each detection first takes its best label (ties:
        highest label index); each label then keeps its highest-IoU detection (ties: highest detection index).
    """
    if not iou.numel():
        empty = torch.zeros(0, dtype=torch.long, device=iou.device)
        return empty, empty
    masked = torch.where(iou > iou_thres, iou, iou.new_tensor(-1.0))
    best_iou, best_label = _best_label(masked, prefer_last=True)
    dets = (best_iou >= 0).nonzero().flatten()
    labels_taken, ious = best_label[dets], best_iou[dets]
    label_best = torch.full((iou.shape[0],), -1.0, dtype=iou.dtype, device=iou.device)
    label_best.scatter_reduce_(0, labels_taken, ious, reduce="amax")
    winners = ious == label_best[labels_taken]
    choice = torch.full((iou.shape[0],), -1, dtype=torch.long, device=iou.device)
    choice.scatter_reduce_(0, labels_taken[winners], dets[winners], reduce="amax")
    matched_labels = (choice >= 0).nonzero().flatten()
    return matched_labels, choice[matched_labels]


class ConfusionMatrix:
    """Detection confusion matrix: rows = predicted class, columns = true class, index nc = background.

    Attributes:
        matrix: float64 (nc + 1, nc + 1) counts.
    """

    def __init__(self, nc: int, conf: float = 0.25, iou_thres: float = 0.45) -> None:
        """Create an empty matrix for ``nc`` classes; detections need conf > ``conf``, matches IoU > ``iou_thres``."""
        self.matrix = np.zeros((nc + 1, nc + 1))
        self.nc = nc
        self.conf = conf
        self.iou_thres = iou_thres

    def process_batch(self, detections: torch.Tensor | None, labels: torch.Tensor) -> None:
        """Accumulate one image.

        Args:
            detections: (N, 6) ``[x1, y1, x2, y2, conf, cls]`` or None (then every label counts as missed).
            labels: (M, 5) ``[cls, x1, y1, x2, y2]``; with detections=None, (M,) classes are accepted too.

        Matching is class-agnostic (see ``_unique_greedy_matches``). A matched label adds ``[det_cls, gt_cls]``, an
        unmatched label ``[background, gt_cls]``. Upstream quirk kept: unmatched detections add
        ``[det_cls, background]`` **only if the image has at least one match**.
        """
        labels = torch.as_tensor(labels)
        gt_classes = (labels if labels.ndim == 1 else labels[:, 0]).long().cpu().numpy()
        if detections is None:
            np.add.at(self.matrix, (self.nc, gt_classes), 1)
            return
        detections = detections[detections[:, 4] > self.conf]
        det_classes = detections[:, 5].long().cpu().numpy()
        matched_labels, matched_dets = _unique_greedy_matches(box_iou(labels[:, 1:5], detections[:, :4]),
                                                              self.iou_thres)
        matched_labels, matched_dets = matched_labels.cpu().numpy(), matched_dets.cpu().numpy()
        predicted = np.full(len(gt_classes), self.nc)
        predicted[matched_labels] = det_classes[matched_dets]
        np.add.at(self.matrix, (predicted, gt_classes), 1)
        if len(matched_labels):
            unmatched = np.ones(len(det_classes), dtype=bool)
            unmatched[matched_dets] = False
            np.add.at(self.matrix, (det_classes[unmatched], self.nc), 1)

    def tp_fp(self) -> tuple[np.ndarray, np.ndarray]:
        """Return true positives (nc,) = diagonal and false positives (nc,) = row sum - diagonal, without background."""
        tp = self.matrix.diagonal()
        fp = self.matrix.sum(1) - tp
        return tp[:-1], fp[:-1]

    def plot(self, normalize: bool = True, save_dir: str | Path = "", names: Sequence[str] = ()) -> None:
        """Write ``confusion_matrix.png`` (a heatmap, columns normalised if ``normalize``) into ``save_dir``."""
        plot_confusion_matrix(self.matrix, self.nc, Path(save_dir) / "confusion_matrix.png", normalize, names)

    def print(self) -> None:
        """Log the matrix, one row per line."""
        for row in self.matrix:
            LOGGER.info(" ".join(map(str, row)))


def voc_ap(recall: np.ndarray, precision: np.ndarray, use_07_metric: bool = False) -> float:
    """Return PASCAL VOC AP of one precision-recall curve (recall (n,), precision (n,), by decreasing conf).

    All-point (default): area under the precision envelope, summed where recall changes. ``use_07_metric``: mean
    of the maximum precision at recall >= t for t in 0, 0.1, ..., 1 (11-point, VOC2007).
    """
    recall, precision = np.asarray(recall, dtype=float), np.asarray(precision, dtype=float)
    if use_07_metric:
        thresholds = np.linspace(0, 1, 11)
        reached = recall[None, :] >= thresholds[:, None]
        return float(np.where(reached, precision[None, :], 0.0).max(1, initial=0.0).mean())
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.flip(np.maximum.accumulate(np.flip(np.concatenate(([0.0], precision, [0.0])))))
    steps = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def match_detections_voc(detections: torch.Tensor, labels: torch.Tensor, iou_thres: float = 0.5) -> torch.Tensor:
    """Return bool (N,) VOC true positives for one image (Padilla toolkit rule).

    Args:
        detections: (N, 6) ``[x1, y1, x2, y2, conf, cls]``, any order. labels: (M, 5) ``[cls, x1, y1, x2, y2]``.

    In decreasing-conf order (stable), each detection looks at its highest-IoU same-class label (ties: lowest
    index); it is a TP if that IoU >= iou_thres and the label is not yet taken, else a FP (no second choice).
    """
    n_det = detections.shape[0]
    tp = torch.zeros(n_det, dtype=torch.bool, device=detections.device)
    if not n_det or not labels.shape[0]:
        return tp
    order = detections[:, 4].argsort(descending=True, stable=True)
    ordered = detections[order]
    iou = box_iou(labels[:, 1:5], ordered[:, :4], eps=0.0).nan_to_num(0.0)
    masked = torch.where(labels[:, 0:1] == ordered[:, 5], iou, iou.new_tensor(-1.0))
    best_iou, best_label = _best_label(masked, prefer_last=False)
    valid = best_iou >= iou_thres
    rank = torch.arange(n_det, device=detections.device)
    first = torch.full((labels.shape[0],), n_det, dtype=torch.long, device=detections.device)
    first.scatter_reduce_(0, best_label, torch.where(valid, rank, n_det), reduce="amin")
    tp[order] = valid & (first[best_label] == rank)
    return tp


def ap_per_class_voc(tp: ArrayLike, conf: ArrayLike, pred_cls: ArrayLike, target_cls: ArrayLike,
                     use_07_metric: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Return per-class VOC AP (c,) and the unique target classes (c,) (Padilla toolkit definition).

    Args:
        tp: (n,) VOC true positives (``match_detections_voc``); a 2-D (n, k) input uses column 0 (IoU 0.5).
        conf: (n,) confidences. pred_cls: (n,) detection classes. target_cls: (m,) label classes.
        use_07_metric: 11-point instead of all-point AP.

    Detections are ranked by decreasing conf (stable). Classes with labels but no detections score 0.
    """
    tp = np.asarray(tp, dtype=float)
    tp = tp[:, 0] if tp.ndim == 2 else tp
    conf, pred_cls = np.asarray(conf), np.asarray(pred_cls)
    order = np.argsort(-conf, kind="stable")
    tp, pred_cls = tp[order], pred_cls[order]
    unique_classes, n_targets = np.unique(np.asarray(target_cls), return_counts=True)
    ap = np.zeros(len(unique_classes))
    for ci, c in enumerate(unique_classes):
        hits = tp[pred_cls == c]
        if not len(hits):
            continue
        tpc, fpc = np.cumsum(hits), np.cumsum(1 - hits)
        ap[ci] = voc_ap(tpc / n_targets[ci], tpc / (tpc + fpc), use_07_metric)
    return ap, unique_classes.astype(int)
