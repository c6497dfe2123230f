"""YOLOv5 detection loss (upstream ``ComputeLoss`` semantics) and the focal-loss wrappers it can use.

Conventions: a head output ``p[i]`` is a raw tensor (bs, na, ny, nx, 5 + nc) of logits ``[tx, ty, tw, th, obj,
cls...]``; ``targets`` is (nt, 6) ``[image_index, class, x, y, w, h]`` with xywh normalised to the input image;
anchors are in grid units (pixels / stride), as stored on the ``Detect`` head.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import torch
import torch.nn as nn

from utils.hyp import Hyp
from utils.metrics import bbox_iou
from utils.torch_utils import de_parallel

__all__ = ["BCEBlurWithLogitsLoss", "ComputeLoss", "FocalLoss", "QFocalLoss", "YoloLoss", "build_loss", "smooth_BCE"]

NEIGHBOUR_BIAS = 0.5  # a target also claims the adjacent cell it is within this distance of


def smooth_BCE(eps: float = 0.1) -> tuple[float, float]:  # noqa: N802 (upstream name)
    """Return ``(positive, negative)`` BCE targets for label smoothing ``eps``: ``(1 - eps/2, eps/2)``."""
    return 1.0 - 0.5 * eps, 0.5 * eps


class _WrappedBCE(nn.Module):
    """Base for losses that re-weight an element-wise ``BCEWithLogitsLoss`` and then reduce as it would have."""

    def __init__(self, loss_fcn: nn.BCEWithLogitsLoss) -> None:
        super().__init__()
        self.loss_fcn = loss_fcn
        self.reduction = loss_fcn.reduction
        self.loss_fcn.reduction = "none"

    def _reduce(self, loss: torch.Tensor) -> torch.Tensor:
        if self.reduction == "mean":
            return loss.mean()
        return loss.sum() if self.reduction == "sum" else loss


class FocalLoss(_WrappedBCE):
    """Focal loss: ``bce * (y*alpha + (1-y)*(1-alpha)) * (1 - p_t)**gamma`` with ``p_t = y*p + (1-y)*(1-p)``."""

    def __init__(self, loss_fcn: nn.BCEWithLogitsLoss, gamma: float = 1.5, alpha: float = 0.25) -> None:
        super().__init__(loss_fcn)
        self.gamma = gamma
        self.alpha = alpha

    def forward(self, pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
        """Return the focal-weighted BCE of logits ``pred`` against targets ``true`` (same shape), reduced."""
        loss = self.loss_fcn(pred, true)
        prob = pred.sigmoid()
        p_t = true * prob + (1 - true) * (1 - prob)
        alpha_factor = true * self.alpha + (1 - true) * (1 - self.alpha)
        return self._reduce(loss * alpha_factor * (1.0 - p_t) ** self.gamma)


class QFocalLoss(_WrappedBCE):
    """Quality focal loss: ``bce * alpha_factor * |y - p|**gamma`` (soft targets)."""

    def __init__(self, loss_fcn: nn.BCEWithLogitsLoss, gamma: float = 1.5, alpha: float = 0.25) -> None:
        super().__init__(loss_fcn)
        self.gamma = gamma
        self.alpha = alpha

    def forward(self, pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
        """Return the quality-focal-weighted BCE of logits ``pred`` against soft targets ``true``, reduced."""
        loss = self.loss_fcn(pred, true)
        alpha_factor = true * self.alpha + (1 - true) * (1 - self.alpha)
        return self._reduce(loss * alpha_factor * torch.abs(true - pred.sigmoid()) ** self.gamma)


class BCEBlurWithLogitsLoss(nn.Module):
    """BCE whose weight ``1 - exp((p - y - 1) / (alpha + 1e-4))`` damps the effect of missing labels; mean."""

    def __init__(self, alpha: float = 0.05) -> None:
        super().__init__()
        self.loss_fcn = nn.BCEWithLogitsLoss(reduction="none")
        self.alpha = alpha

    def forward(self, pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
        """Return the mean blurred BCE of logits ``pred`` against targets ``true``."""
        loss = self.loss_fcn(pred, true)
        dx = pred.sigmoid() - true
        return (loss * (1 - torch.exp((dx - 1) / (self.alpha + 1e-4)))).mean()


class Assignment(NamedTuple):
    """Targets assigned to anchors and cells, one list entry per level (see :meth:`YoloLoss.assign`).

    tcls (n,) classes; tbox (n, 4) ``[dx, dy, w, h]`` grid units (dx, dy: centre minus cell corner, -0.5..1.5);
    indices ``(image, anchor, gy, gx)``; anchors (n, 2) matched anchor sizes (grid units); ids (n,) the target id of
    each positive; xywhn (n, 4) its target box, normalised xywh.
    """

    tcls: list
    tbox: list
    indices: list
    anchors: list
    ids: list
    xywhn: list


class YoloLoss:
    """YOLOv5 loss from explicit parts: hyperparameters, anchors (nl, na, 2) in grid units, class count, strides.

    ``terms(p, targets)`` returns the gain-scaled named terms ``{'box', 'obj', 'cls'}`` (each shape (1,));
    ``__call__`` returns upstream's ``(sum(terms) * bs, cat(box, obj, cls).detach())``.
    """

    sort_obj_iou = False
    casts_to_fp32 = True  # accepts bf16/fp16 head outputs: gathers first, then computes in fp32

    def __init__(self, hyp: dict, anchors: torch.Tensor, nc: int, strides: Sequence[float] | torch.Tensor,
                 autobalance: bool = False) -> None:
        self.hyp = hyp
        self.device = anchors.device
        self.anchors = anchors
        self.nl, self.na = anchors.shape[:2]
        self.nc = nc
        pos_weight = {k: torch.tensor([float(hyp.get(k, 1.0))], device=self.device) for k in ("cls_pw", "obj_pw")}
        self.BCEcls = nn.BCEWithLogitsLoss(pos_weight=pos_weight["cls_pw"])
        self.BCEobj = nn.BCEWithLogitsLoss(pos_weight=pos_weight["obj_pw"])
        self.cp, self.cn = smooth_BCE(eps=float(hyp.get("label_smoothing", 0.0)))
        gamma = float(hyp.get("fl_gamma", 0.0))
        if gamma > 0:
            self.BCEcls, self.BCEobj = FocalLoss(self.BCEcls, gamma), FocalLoss(self.BCEobj, gamma)
        self.balance = [4.0, 1.0, 0.4] if self.nl == 3 else [4.0, 1.0, 0.25, 0.06, 0.02]
        self.ssi = [float(s) for s in strides].index(16.0) if autobalance else 0
        self.gr = 1.0
        self.autobalance = autobalance

    def __call__(self, p: list[torch.Tensor], targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``((box + obj + cls) * batch_size, tensor([box, obj, cls]))`` for head outputs ``p``."""
        terms = self.terms(p, targets)
        total = terms["box"] + terms["obj"] + terms["cls"]
        return total * p[0].shape[0], torch.cat((terms["box"], terms["obj"], terms["cls"])).detach()

    def terms(self, p: list[torch.Tensor], targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """Return the gain-scaled loss terms ``{'box', 'obj', 'cls'}``, each a (1,) tensor."""
        return self.detection_terms(p, self.assign(p, targets))[0]

    def detection_terms(self, p: list[torch.Tensor],
                        assignment: Assignment) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
        """Return (gain-scaled ``{'box', 'obj', 'cls'}`` terms, the fp32 positive rows (n_i, no) of each level)."""
        totals = {k: torch.zeros(1, device=self.device) for k in ("box", "obj", "cls")}
        positives = []
        for i, pi in enumerate(p):
            tobj = torch.zeros(pi.shape[:4], dtype=torch.float32, device=self.device)
            rows = pi[assignment.indices[i]].float()
            positives.append(rows)
            if rows.shape[0]:
                box, cls, index, iou = self._positive_terms(rows, assignment.tcls[i], assignment.tbox[i],
                                                            assignment.indices[i], assignment.anchors[i])
                totals["box"] = totals["box"] + box
                totals["cls"] = totals["cls"] + cls
                tobj[index] = iou
            obj_level = self.BCEobj(pi[..., 4].float(), tobj)
            totals["obj"] = totals["obj"] + obj_level * self.balance[i]
            if self.autobalance:
                self.balance[i] = self.balance[i] * 0.9999 + 0.0001 / obj_level.detach().item()
        if self.autobalance:
            self.balance = [x / self.balance[self.ssi] for x in self.balance]
        return {name: value * float(self.hyp[name]) for name, value in totals.items()}, positives

    def _positive_terms(self, rows: torch.Tensor, tcls: torch.Tensor, tbox: torch.Tensor,
                        index: tuple[torch.Tensor, ...], anchors: torch.Tensor):
        """Return (box loss, cls loss, tobj index, tobj values) for the positive rows (n, no) of one level."""
        pxy, pwh, _, pcls = rows[:, :5 + self.nc].split((2, 2, 1, self.nc), 1)
        pbox = torch.cat((pxy.sigmoid() * 2 - 0.5, (pwh.sigmoid() * 2) ** 2 * anchors), 1)
        iou = bbox_iou(pbox, tbox, xywh=True, CIoU=True).view(-1)
        box_loss = (1.0 - iou).mean()
        obj_target = iou.detach().clamp(0)
        if self.sort_obj_iou:
            order = obj_target.argsort()
            index = tuple(x[order] for x in index)
            obj_target = obj_target[order]
        if self.gr < 1:
            obj_target = (1.0 - self.gr) + self.gr * obj_target
        cls_loss = torch.zeros((), device=self.device)
        if self.nc > 1:
            target = torch.full_like(pcls, self.cn)
            target[torch.arange(len(tcls), device=self.device), tcls] = self.cp
            cls_loss = self.BCEcls(pcls, target)
        return box_loss, cls_loss, index, obj_target

    def build_targets(self, p: list[torch.Tensor], targets: torch.Tensor):
        """Assign targets to anchors and cells on every level (vectorised per level).

        Returns:
            tcls: per level (n,) classes. tbox: per level (n, 4) ``[dx, dy, w, h]`` in grid units, dx/dy being the
            offset of the centre from the cell corner (-0.5..1.5). indices: per level ``(image, anchor, gy, gx)``.
            anchors: per level (n, 2) matched anchor sizes in grid units.
        """
        return tuple(self.assign(p, targets))[:4]

    def assign(self, p: list[torch.Tensor], targets: torch.Tensor,
               target_ids: torch.Tensor | None = None) -> Assignment:
        """Assign targets (nt, 6) to anchors and cells of every level; see :class:`Assignment`.

        ``target_ids`` (nt,) are carried to each positive (default: the row index of its target).
        """
        nt = targets.shape[0]
        ids = (torch.arange(nt, device=self.device) if target_ids is None else target_ids).to(targets.dtype)
        anchor_index = torch.arange(self.na, device=self.device).float().view(self.na, 1).expand(self.na, nt)
        per_anchor = torch.cat((targets.expand(self.na, nt, 6), anchor_index[..., None],
                                ids.view(1, nt, 1).expand(self.na, nt, 1)), 2)  # (na, nt, 8)
        out = Assignment([], [], [], [], [], [])
        for i in range(self.nl):
            ny, nx = p[i].shape[2:4]
            cand = self._candidates(per_anchor, self.anchors[i], nx, ny)
            image, cls = cand[:, 0].long(), cand[:, 1].long()
            gxy, gwh, a = cand[:, 2:4], cand[:, 4:6], cand[:, 6].long()
            cell = (gxy - cand[:, 8:10]).long()
            cell[:, 0].clamp_(0, nx - 1)
            cell[:, 1].clamp_(0, ny - 1)
            out.indices.append((image, a, cell[:, 1], cell[:, 0]))
            out.tbox.append(torch.cat((gxy - cell, gwh), 1))
            out.anchors.append(self.anchors[i][a])
            out.tcls.append(cls)
            out.ids.append(cand[:, 7].long())
            out.xywhn.append(cand[:, 2:6] / cand.new_tensor([nx, ny, nx, ny]))
        return out

    def _candidates(self, per_anchor: torch.Tensor, level_anchors: torch.Tensor, nx: int, ny: int) -> torch.Tensor:
        """Return (m, c + 2) rows ``[img, cls, gx, gy, gw, gh, ..., off_x, off_y]`` (grid units) of positives.

        ``per_anchor`` is (na, nt, c) ``[img, cls, x, y, w, h, ...]`` (xywh normalised; the other columns are
        carried unchanged). Keeps (anchor, target) pairs whose size ratio is within ``anchor_t`` and replicates each
        into its own cell plus the (up to two) neighbouring cells its centre is close to. Order: offset, anchor,
        target.
        """
        scale = torch.ones(per_anchor.shape[2], device=self.device, dtype=per_anchor.dtype)
        scale[2:6] = scale.new_tensor([nx, ny, nx, ny])
        t = per_anchor * scale
        ratio = t[..., 4:6] / level_anchors[:, None]
        t = t[torch.max(ratio, 1 / ratio).max(2)[0] < float(self.hyp.get("anchor_t", 4.0))]  # (k, c)
        gxy = t[:, 2:4]
        gxy_inv = torch.tensor([nx, ny], device=self.device, dtype=t.dtype) - gxy
        near_low = (gxy % 1 < NEIGHBOUR_BIAS) & (gxy > 1)  # left / up neighbour usable
        near_high = (gxy_inv % 1 < NEIGHBOUR_BIAS) & (gxy_inv > 1)  # right / down neighbour usable
        keep = torch.stack((torch.ones_like(near_low[:, 0]), near_low[:, 0], near_low[:, 1],
                            near_high[:, 0], near_high[:, 1]))  # (5, k)
        offsets = torch.tensor([[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1]], device=self.device,
                               dtype=t.dtype) * NEIGHBOUR_BIAS
        rows = torch.cat((t.expand(5, *t.shape), offsets[:, None].expand(5, t.shape[0], 2)), 2)
        return rows[keep]


class ComputeLoss(YoloLoss):
    """Upstream-compatible loss for a model with a ``Detect`` head.

    ``hyp`` (a :class:`utils.hyp.Hyp` or a hyp dict, already gain-scaled: see :meth:`utils.hyp.Hyp.scaled`) gives
    the gains; without it ``model.hyp`` is read, as upstream's ``ComputeLoss(model)`` does.
    """

    def __init__(self, model: nn.Module, autobalance: bool = False, hyp: Hyp | Mapping | None = None) -> None:
        hyp, head, device = loss_setup(model, hyp, "train.py")
        super().__init__(hyp, head.anchors.to(device), head.nc, head.stride, autobalance)


def loss_setup(model: nn.Module, hyp: Hyp | Mapping | None, script: str) -> tuple[dict, nn.Module, torch.device]:
    """Return (hyp dict, head, device) for a loss built from ``model``: ``hyp`` if given, else ``model.hyp``.

    Raises:
        AttributeError: no hyperparameters anywhere (``script`` names who normally sets ``model.hyp``).
    """
    core = de_parallel(model)
    hyp = hyp if hyp is not None else getattr(core, "hyp", None) or getattr(model, "hyp", None)
    if isinstance(hyp, Hyp):
        hyp = hyp.to_dict()
    if not isinstance(hyp, Mapping):
        raise AttributeError("ComputeLoss needs hyperparameters: pass hyp= or set model.hyp (a dict such as box, "
                             f"obj, cls, anchor_t) before building the loss, as {script} does")
    return dict(hyp), core.model[-1], next(model.parameters()).device


def build_loss(model: nn.Module,
               hyp: Hyp | Mapping | None = None) -> Callable[[Any, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Return the criterion for ``model``: ``head.make_loss(model)`` if the head defines one, else ComputeLoss.

    ``hyp`` (gain-scaled) reaches the loss directly; a head whose ``make_loss`` takes no ``hyp`` ignores it.
    """
    head = de_parallel(model).model[-1]
    make_loss = getattr(head, "make_loss", None)
    if not callable(make_loss):
        return ComputeLoss(model, hyp=hyp)
    if "hyp" in inspect.signature(make_loss).parameters:
        return make_loss(model, hyp=hyp)
    return make_loss(model)
