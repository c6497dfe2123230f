"""Positive-slot assignment for the darknet-style YOLOv3 losses (the darknet assignment rules, vectorised).

A *slot* is one prediction: (level, image, anchor, cell row, cell column). Every ground truth has ``nl * na``
candidate slots: the cell containing its centre on every level, with each of that level's anchors. Candidates are
ranked by the *shape IoU* between the ground-truth size and the anchor size (both boxes centred on the same point,
as darknet does). Two rules:

- :func:`assign_best_anchor` (``darknet`` / ``ciou`` losses): exactly one slot per ground truth, its best-IoU
  candidate; when two ground truths want the same slot the higher IoU wins and the other falls back to its next
  best free candidate.
- :func:`assign_multi_anchor` (``multi_anchor`` loss): every candidate whose IoU exceeds a threshold, plus the best
  candidate of each ground truth; a slot claimed by several ground truths goes to the highest IoU.

Ties are broken by the lower ground-truth index, then by the lower candidate (level-major, then anchor).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from utils.metrics import wh_iou


@dataclass
class Candidates:
    """All (ground truth, candidate slot) pairs, each field shaped (nt, K) with K = nl * na.

    Attributes:
        level, anchor, gy, gx: long slot coordinates; ``image`` (nt, K) long image index.
        key: long id unique to each slot of the batch.
        iou: shape IoU between the ground truth and the candidate's anchor.
    """

    level: torch.Tensor
    anchor: torch.Tensor
    image: torch.Tensor
    gy: torch.Tensor
    gx: torch.Tensor
    key: torch.Tensor
    iou: torch.Tensor


@dataclass
class Positives:
    """Assigned slots, each field (n,) long: ``level, image, anchor, gy, gx`` and ``target`` (row in targets)."""

    level: torch.Tensor
    image: torch.Tensor
    anchor: torch.Tensor
    gy: torch.Tensor
    gx: torch.Tensor
    target: torch.Tensor

    def on_level(self, level: int) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """Return ``((image, anchor, gy, gx), target)`` of the positives on ``level``."""
        keep = self.level == level
        return (self.image[keep], self.anchor[keep], self.gy[keep], self.gx[keep]), self.target[keep]


def build_candidates(targets: torch.Tensor, anchors_px: torch.Tensor, grid_shapes: Sequence[tuple[int, int]],
                     batch_size: int, image_wh: torch.Tensor) -> Candidates:
    """Return every ground truth's centre-cell candidates on all levels.

    Args:
        targets: (nt, 6) ``[image, class, x, y, w, h]``, xywh normalised.
        anchors_px: (nl, na, 2) anchor sizes in pixels.
        grid_shapes: per level ``(ny, nx)``.
        batch_size: images in the batch (slot ids are unique across it).
        image_wh: (2,) input width and height in pixels.
    """
    nl, na = anchors_px.shape[:2]
    device = targets.device
    nt = targets.shape[0]
    level = torch.arange(nl, device=device).repeat_interleave(na).expand(nt, -1)  # (nt, K)
    anchor = torch.arange(na, device=device).repeat(nl).expand(nt, -1)
    sizes = torch.tensor([[nx, ny] for ny, nx in grid_shapes], device=device, dtype=targets.dtype)  # (nl, 2)
    cell = (targets[:, None, 2:4] * sizes[level]).long()  # (nt, K, 2) x, y
    cell = torch.minimum(cell.clamp(min=0), sizes[level].long() - 1)
    slots_per_level = torch.tensor([batch_size * na * ny * nx for ny, nx in grid_shapes], device=device)
    offset = torch.cumsum(slots_per_level, 0) - slots_per_level
    image = targets[:, 0].long()[:, None].expand(nt, nl * na)
    nx_k, ny_k = sizes[level, 0].long(), sizes[level, 1].long()
    key = offset[level] + ((image * na + anchor) * ny_k + cell[..., 1]) * nx_k + cell[..., 0]
    gt_wh = targets[:, 4:6] * image_wh.to(targets.dtype)
    iou = wh_iou(gt_wh, anchors_px.reshape(nl * na, 2).to(targets.dtype))
    return Candidates(level, anchor, image, cell[..., 1], cell[..., 0], key, iou)


def _best_per_key(keys: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """Return indices of the highest-score entry of each distinct key (first entry wins ties)."""
    if keys.numel() == 0:
        return keys.new_zeros(0)
    by_score = torch.argsort(scores, descending=True, stable=True)
    order = by_score[torch.argsort(keys[by_score], stable=True)]
    sorted_keys = keys[order]
    first = torch.ones_like(sorted_keys, dtype=torch.bool)
    first[1:] = sorted_keys[1:] != sorted_keys[:-1]
    return order[first]


def _positives(cand: Candidates, rows: torch.Tensor, cols: torch.Tensor) -> Positives:
    return Positives(cand.level[rows, cols], cand.image[rows, cols], cand.anchor[rows, cols], cand.gy[rows, cols],
                     cand.gx[rows, cols], rows)


def assign_best_anchor(cand: Candidates) -> Positives:
    """One slot per ground truth (its best free candidate; collisions go to the higher IoU)."""
    nt, k = cand.iou.shape
    device = cand.iou.device
    ranked = torch.argsort(cand.iou, dim=1, descending=True, stable=True)  # (nt, K)
    chosen = torch.full((nt,), -1, dtype=torch.long, device=device)
    taken = torch.zeros(0, dtype=torch.long, device=device)
    for rank in range(k):  # at most nl * na rounds, each vectorised over the ground truths
        rows = (chosen < 0).nonzero().view(-1)
        if rows.numel() == 0:
            break
        cols = ranked[rows, rank]
        keys = cand.key[rows, cols]
        free = ~torch.isin(keys, taken)
        rows, cols, keys = rows[free], cols[free], keys[free]
        winners = _best_per_key(keys, cand.iou[rows, cols])
        chosen[rows[winners]] = cols[winners]
        taken = torch.cat((taken, keys[winners]))
    rows = (chosen >= 0).nonzero().view(-1)
    return _positives(cand, rows, chosen[rows])


def assign_multi_anchor(cand: Candidates, iou_thresh: float) -> Positives:
    """Every candidate with shape IoU > ``iou_thresh`` plus each ground truth's best; one ground truth per slot."""
    nt, k = cand.iou.shape
    eligible = cand.iou > iou_thresh
    if nt:
        eligible[torch.arange(nt, device=cand.iou.device), cand.iou.argmax(1)] = True
    rows, cols = eligible.nonzero(as_tuple=True)
    winners = _best_per_key(cand.key[rows, cols], cand.iou[rows, cols])
    winners = winners.sort().values  # keep ground-truth-major order
    return _positives(cand, rows[winners], cols[winners])
