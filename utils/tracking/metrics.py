"""MOT metrics (MOTA, IDF1, HOTA, ID switches, ...) of tracker results against MOTChallenge ground truth.

The metric definitions are computed by the ``trackers`` library's TrackEval-style functions (CLEAR MOT, Identity,
HOTA over 19 IoU thresholds 0.05-0.95); this module prepares their inputs from MOTChallenge arrays
(:func:`utils.tracking.mot.read_mot_file`), as TrackEval's MOTChallenge preprocessing does:

* ground-truth rows with ``consider`` = 0 are ignored regions: a result box matched to one (IoU > 0.5, optimal
  assignment) is removed before scoring, and the ignored box itself is never counted as missed;
* ids of both sides are renumbered 0..K-1; similarity is the box IoU of each (gt, result) pair in a frame.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = ["SequenceScores", "TrackingMetrics", "box_iou_xywh", "evaluate_mot", "score_sequence", "summarize"]

IGNORE_IOU = 0.5


@dataclass(frozen=True)
class TrackingMetrics:
    """Scores of one sequence (or several, combined). Ratios in [0, 1] (MOTA can be negative); counts are boxes.

    Attributes:
        MOTA: 1 - (FN + FP + IDSW) / GT boxes. MOTP: mean IoU of matched pairs. IDF1/IDP/IDR: identity F1, precision,
            recall. HOTA/DetA/AssA/LocA: higher-order tracking accuracy and its detection, association and
            localisation parts (averaged over IoU 0.05-0.95). IDSW: identity switches. Frag: fragmentations.
        TP/FP/FN: CLEAR matches at IoU 0.5. MT/PT/ML: tracks mostly tracked / partly / mostly lost.
        gt_tracks/pred_tracks: distinct ids scored. frames: frames scored.
    """

    MOTA: float
    MOTP: float
    IDF1: float
    IDP: float
    IDR: float
    HOTA: float
    DetA: float
    AssA: float
    LocA: float
    IDSW: int
    Frag: int
    TP: int
    FP: int
    FN: int
    MT: int
    PT: int
    ML: int
    gt_tracks: int
    pred_tracks: int
    frames: int

    def as_dict(self) -> dict[str, Any]:
        """Return the metrics as a plain dict (field order)."""
        return asdict(self)


def box_iou_xywh(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Return the (n, m) IoU of boxes ``a`` (n, 4) and ``b`` (m, 4), both ``[left, top, width, height]``."""
    a, b = np.asarray(a, dtype=np.float64).reshape(-1, 4), np.asarray(b, dtype=np.float64).reshape(-1, 4)
    a_xyxy = np.concatenate([a[:, :2], a[:, :2] + a[:, 2:]], 1)
    b_xyxy = np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], 1)
    lt = np.maximum(a_xyxy[:, None, :2], b_xyxy[None, :, :2])
    rb = np.minimum(a_xyxy[:, None, 2:], b_xyxy[None, :, 2:])
    inter = (rb - lt).clip(0).prod(2)
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def _renumber(ids: np.ndarray) -> tuple[np.ndarray, int]:
    """Return ids mapped to 0..K-1 (sorted order) and K."""
    unique, inverse = np.unique(ids.astype(np.int64), return_inverse=True)
    return inverse.reshape(-1), len(unique)


def _drop_ignored(gt_ignored: np.ndarray, pred_boxes: np.ndarray) -> np.ndarray:
    """Return a mask of result boxes to keep: those not matched (IoU > 0.5, optimal assignment) to an ignored gt."""
    keep = np.ones(len(pred_boxes), dtype=bool)
    if len(gt_ignored) and len(pred_boxes):
        iou = box_iou_xywh(gt_ignored, pred_boxes)
        rows, cols = linear_sum_assignment(-iou)
        keep[cols[iou[rows, cols] > IGNORE_IOU]] = False
    return keep


def _prepare(gt: np.ndarray, pred: np.ndarray, frames: int) -> tuple[list, list, list, int, int]:
    """Per-frame (gt ids, result ids, IoU matrices) for frames 1..``frames`` and the number of ids of each side."""
    gt_ids_all, n_gt = _renumber(gt[:, 1])
    scored = gt[:, 6] != 0
    gt_frame, pred_frame = gt[:, 0].astype(np.int64), pred[:, 0].astype(np.int64)
    per_frame_pred: list[np.ndarray] = []
    for frame in range(1, frames + 1):
        in_frame = pred_frame == frame
        rows = np.flatnonzero(in_frame)
        ignored = gt[(gt_frame == frame) & ~scored, 2:6]
        per_frame_pred.append(rows[_drop_ignored(ignored, pred[rows, 2:6])])
    kept_pred = np.concatenate(per_frame_pred) if per_frame_pred else np.zeros(0, dtype=np.int64)
    pred_ids_kept, n_pred = _renumber(pred[kept_pred, 1])
    pred_ids = np.full(len(pred), -1, dtype=np.int64)
    pred_ids[kept_pred] = pred_ids_kept
    gt_ids, pred_id_list, similarity = [], [], []
    for frame, rows in enumerate(per_frame_pred, 1):
        g = np.flatnonzero((gt_frame == frame) & scored)
        gt_ids.append(gt_ids_all[g])
        pred_id_list.append(pred_ids[rows])
        similarity.append(box_iou_xywh(gt[g, 2:6], pred[rows, 2:6]))
    return gt_ids, pred_id_list, similarity, n_gt, n_pred


def _library_metrics() -> Any:
    try:
        from trackers.eval import clear, hota, identity
    except ImportError as e:
        raise ImportError(f"MOT metrics need the 'trackers' package ({e}); pip install -r requirements.txt") from None
    return clear, hota, identity


def _pad(rows: Any, columns: int = 10) -> np.ndarray:
    """Return MOT rows as (n, 10), filling missing columns as :func:`utils.tracking.mot.read_mot_file` does."""
    rows = np.asarray(rows, dtype=np.float64)
    rows = rows.reshape(-1, rows.shape[-1] if rows.ndim == 2 else columns)
    if rows.shape[1] < 6:
        raise ValueError(f"MOT rows need at least 6 columns (frame, id, left, top, width, height), got {rows.shape[1]}")
    fill = np.array([1.0, -1.0, -1.0, -1.0])[max(rows.shape[1] - 6, 0):]
    return np.concatenate([rows, np.broadcast_to(fill, (len(rows), len(fill)))], 1)[:, :columns]


@dataclass(frozen=True)
class SequenceScores:
    """The library's raw CLEAR, Identity and HOTA dicts of one sequence (what sequences are combined from)."""

    clear: dict
    identity: dict
    hota: dict
    gt_tracks: int
    pred_tracks: int
    frames: int


def score_sequence(gt: Any, pred: Any, frames: int | None = None, threshold: float = 0.5) -> SequenceScores:
    """Compute the raw scores of one sequence (see :func:`evaluate_mot` for the arguments)."""
    clear, hota, identity = _library_metrics()
    gt, pred = _pad(gt), _pad(pred)
    frames = int(frames or max(gt[:, 0].max(initial=0), pred[:, 0].max(initial=0)))
    gt_ids, pred_ids, similarity, _, _ = _prepare(gt, pred, frames)
    n_gt = len(np.unique(np.concatenate(gt_ids))) if gt_ids else 0
    n_pred = len(np.unique(np.concatenate(pred_ids))) if pred_ids else 0
    return SequenceScores(clear.compute_clear_metrics(gt_ids, pred_ids, similarity, threshold=threshold),
                          identity.compute_identity_metrics(gt_ids, pred_ids, similarity, threshold=threshold),
                          hota.compute_hota_metrics(gt_ids, pred_ids, similarity), n_gt, n_pred, frames)


def summarize(scores: Sequence[SequenceScores]) -> TrackingMetrics:
    """Return the metrics of one sequence, or of several combined as TrackEval combines them (counts summed,
    ratios recomputed from the sums; HOTA's association terms weighted by true positives)."""
    clear, hota, identity = _library_metrics()
    if len(scores) == 1:
        c, i, h = scores[0].clear, scores[0].identity, scores[0].hota
    else:
        c = clear.aggregate_clear_metrics([s.clear for s in scores])
        i = identity.aggregate_identity_metrics([s.identity for s in scores])
        h = hota.aggregate_hota_metrics([s.hota for s in scores])
    return TrackingMetrics(
        MOTA=float(c["MOTA"]), MOTP=float(c["MOTP"]), IDF1=float(i["IDF1"]), IDP=float(i["IDP"]), IDR=float(i["IDR"]),
        HOTA=float(h["HOTA"]), DetA=float(h["DetA"]), AssA=float(h["AssA"]), LocA=float(h["LocA"]),
        IDSW=int(c["IDSW"]), Frag=int(c["Frag"]), TP=int(c["CLR_TP"]), FP=int(c["CLR_FP"]), FN=int(c["CLR_FN"]),
        MT=int(c["MT"]), PT=int(c["PT"]), ML=int(c["ML"]), gt_tracks=sum(s.gt_tracks for s in scores),
        pred_tracks=sum(s.pred_tracks for s in scores), frames=sum(s.frames for s in scores))


def evaluate_mot(gt: Any, pred: Any, frames: int | None = None, threshold: float = 0.5) -> TrackingMetrics:
    """Score tracker results against the ground truth of one sequence.

    Args:
        gt: (n, 7+) MOTChallenge ground truth rows ``[frame, id, left, top, width, height, consider, ...]``.
        pred: (m, 6+) result rows ``[frame, id, left, top, width, height, ...]``.
        frames: sequence length (default: the last frame that appears in either).
        threshold: IoU for a CLEAR/Identity match (HOTA uses 0.05-0.95).
    """
    return summarize([score_sequence(gt, pred, frames, threshold)])
