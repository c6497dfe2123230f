"""Turning a detection architecture into an image classifier, and classifier-side helpers.

:func:`classifier_yaml` keeps the first ``cutoff`` rows of a detection YAML (default: the whole ``backbone:``
section) and adds one classification head, so the classifier's layers ``model.0 .. model.{cutoff-1}`` carry
exactly the detector's backbone names and shapes (``train.py --backbone-weights`` transfers all of them). The head
reads the backbone's *sinks*, the kept rows no later kept row uses:

* one sink (every sequential backbone: YOLOv5 CSP, Darknet-24, Darknet-53): upstream's ``Classify`` (1x1 Conv to
  1280, global average pool, dropout, Linear);
* several sinks (a branching backbone such as the ConvNeXt YAMLs, whose P3/P4 adapter convolutions feed only the
  neck): :class:`ClassifyTaps`, one 1x1 Conv to 1280 per sink, each pooled, summed, dropout, Linear, so every
  backbone tensor is trained.

Also here: :func:`reshape_classifier_output` (upstream's helper for torchvision models) and
:func:`set_dropout`.
"""

from __future__ import annotations

from copy import deepcopy
from typing import Any, Sequence

import torch
import torch.nn as nn

from models.common import Classify, Conv
from models.registry import add_module
from utils.checkpoint import allow_model_classes

CLASSIFY_WIDTH = 1280  # channels of the head's 1x1 convolution (upstream's Classify)


class ClassifyTaps(nn.Module):
    """Classification head over several feature maps of any sizes: per input a 1x1 Conv (+BN+SiLU) to 1280 and a
    global average pool; the pooled vectors are summed, then dropout and a Linear to ``c2`` classes.

    Args:
        c1: input channels of each tapped map. c2: number of classes. dropout_p: dropout before the Linear.
    """

    def __init__(self, c1: Sequence[int], c2: int, dropout_p: float = 0.0):
        super().__init__()
        self.convs = nn.ModuleList(Conv(c, CLASSIFY_WIDTH, 1) for c in c1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(p=dropout_p, inplace=True)
        self.linear = nn.Linear(CLASSIFY_WIDTH, c2)

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        """Return class logits (b, c2) from the tapped maps [(b, c1_i, h_i, w_i), ...]."""
        x = x if isinstance(x, list) else [x]
        pooled = sum(self.pool(conv(xi)).flatten(1) for conv, xi in zip(self.convs, x, strict=True))
        return self.linear(self.drop(pooled))


def _classify_args(args: list, ch_in: list[int], ctx: Any) -> tuple[list, int]:
    """YAML row ``[from, 1, Classify, [nc]]``: Classify(c1 = summed input channels, nc, *rest)."""
    return [sum(ch_in), *args], int(args[0])


def _classify_taps_args(args: list, ch_in: list[int], ctx: Any) -> tuple[list, int]:
    """YAML row ``[[i, j, ...], 1, ClassifyTaps, [nc]]``: ClassifyTaps(c1 = [channels of each input], nc, *rest)."""
    return [list(ch_in), *args], int(args[0])


def _row_inputs(row: Sequence, index: int) -> list[int]:
    """Absolute indices of the rows a YAML row reads (-1 = the previous row)."""
    sources = row[0] if isinstance(row[0], list) else [row[0]]
    return [index + s if s < 0 else s for s in sources]


def backbone_sinks(rows: Sequence[Sequence]) -> list[int]:
    """Return the indices of ``rows`` whose output no later row reads (the last row is always one)."""
    used = {source for i, row in enumerate(rows) for source in _row_inputs(row, i)}
    return [i for i in range(len(rows)) if i not in used or i == len(rows) - 1]


def classifier_yaml(detection_yaml: dict, nc: int, cutoff: int | None = None) -> dict:
    """Return the YAML dict of a classifier: the first ``cutoff`` rows of ``detection_yaml`` plus a head.

    Args:
        detection_yaml: a detection model YAML dict (``backbone:``, ``head:``, multiples, ``imports:`` ...).
        nc: number of classes. cutoff: rows kept (default: the length of ``backbone:``).

    Raises:
        ValueError: ``cutoff`` is below 1 or keeps the detection head row.
    """
    d = deepcopy(detection_yaml)
    backbone, head = list(d.get("backbone") or []), list(d.get("head") or [])
    rows = backbone + head
    cutoff = len(backbone) if cutoff is None else int(cutoff)
    if not 1 <= cutoff < len(rows):
        raise ValueError(f"--cutoff {cutoff} must be between 1 and {len(rows) - 1} (the model has {len(backbone)} "
                         f"backbone and {len(head)} head rows; the last row is the detection head)")
    kept = rows[:cutoff]
    sinks = backbone_sinks(kept)
    head_row = [-1, 1, "Classify", [nc]] if len(sinks) == 1 else [sinks, 1, "ClassifyTaps", [nc]]
    d.update(backbone=kept, head=[head_row], nc=nc, cutoff=cutoff)
    return d


def set_dropout(model: nn.Module, p: float) -> int:
    """Set the probability of every ``nn.Dropout`` in ``model`` to ``p``; returns how many were changed."""
    layers = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    for layer in layers:
        layer.p = float(p)
    return len(layers)


def reshape_classifier_output(model: nn.Module, n: int = 1000) -> None:
    """Give a classifier ``n`` outputs in place (upstream's helper): the last Linear (or 1x1 Conv2d) of a YOLOv5
    ``Classify`` head, a torchvision ``fc``/``classifier`` or, failing those, of the whole model is replaced."""
    def resized(layer: nn.Module) -> nn.Module:
        if isinstance(layer, nn.Linear):
            return nn.Linear(layer.in_features, n) if layer.out_features != n else layer
        if isinstance(layer, nn.Conv2d):
            if layer.out_channels == n:
                return layer
            return nn.Conv2d(layer.in_channels, n, layer.kernel_size, layer.stride, bias=layer.bias is not None)
        raise TypeError(f"cannot resize a {type(layer).__name__} output layer")

    head = getattr(model, "model", None)
    if isinstance(head, nn.Sequential) and isinstance(head[-1], (Classify, ClassifyTaps)):
        head[-1].linear = resized(head[-1].linear)
        return
    for name in ("fc", "head", "classifier"):
        layer = getattr(model, name, None)
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            setattr(model, name, resized(layer))
            return
        if isinstance(layer, nn.Sequential):
            index = max(i for i, m in enumerate(layer) if isinstance(m, (nn.Linear, nn.Conv2d)))
            layer[index] = resized(layer[index])
            return
    raise TypeError(f"{type(model).__name__}: no fc, head or classifier output layer to resize")


add_module("Classify", Classify, role="custom", parse=_classify_args)
add_module("ClassifyTaps", ClassifyTaps, role="custom", parse=_classify_taps_args)
allow_model_classes(ClassifyTaps)
