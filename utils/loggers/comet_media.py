"""Comet payload builders: prediction-image box layers, per-class metrics and the confusion matrix.

Kept apart from :mod:`utils.loggers.comet` so the box maths is testable without an experiment. Only
``comet_ml.annotations`` is imported here, lazily, when a layer is built.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch

from utils.boxes import scale_boxes, xywh2xyxy


def native_boxes(im: torch.Tensor, targets: torch.Tensor, out: Sequence[torch.Tensor], si: int, shape: Any,
                 conf_thres: float) -> tuple[np.ndarray, np.ndarray]:
    """Return image ``si``'s ground truth and predictions in original-image pixels.

    Args:
        im: the letterboxed val batch (B, 3, H, W). targets: (N, 6) ``[image, cls, x, y, w, h]`` in letterbox
            pixels (as the validator passes them to ``on_val_batch_end``). out: per-image detections (n, 6)
            ``[x1, y1, x2, y2, conf, cls]`` in letterbox pixels. shape: ``(shape0 (h0, w0), ratio_pad)`` or None.
        conf_thres: predictions with confidence <= this are dropped.

    Returns:
        ``(labels (m, 5) [cls, x1, y1, x2, y2], predictions (k, 6) [x1, y1, x2, y2, conf, cls])``, float64, xyxy.
    """
    size = im.shape[2:]
    shape0, ratio_pad = (shape[0], shape[1]) if shape is not None else (size, None)
    labels = targets[targets[:, 0] == si, 1:].detach().float().cpu().clone()
    label_boxes = scale_boxes(size, xywh2xyxy(labels[:, 1:5]), shape0, ratio_pad)
    predictions = out[si].detach().float().cpu().clone()
    predictions = predictions[predictions[:, 4] > conf_thres]
    scale_boxes(size, predictions[:, :4], shape0, ratio_pad)
    return (torch.cat((labels[:, :1], label_boxes), 1).double().numpy(), predictions.double().numpy())


def _name(names: Mapping[int, str], cls: float) -> str:
    return str(names.get(int(cls), int(cls)))


def prediction_layers(im: torch.Tensor, targets: torch.Tensor, out: Sequence[torch.Tensor], si: int, shape: Any,
                      names: Mapping[int, str], conf_thres: float) -> tuple[list, list[dict]]:
    """Return ``(comet annotation layers, upstream-style metadata)`` for val image ``si`` (see :func:`native_boxes`).

    Layers are ``ground_truth`` and ``prediction`` (boxes as Comet's ``(x, y, w, h)`` top-left pixels, score in
    [0, 1]); empty layers are omitted. Metadata entries are ``{"label", "score" (0-100), "box": {x, y, x2, y2}}``,
    ground-truth labels suffixed ``-gt`` with score 100, as upstream's ``image-metadata.json``.
    """
    from comet_ml.annotations import Box, Layer

    labels, predictions = native_boxes(im, targets, out, si, shape, conf_thres)
    truth = [(_name(names, c), 1.0, box) for c, *box in labels.tolist()]
    guessed = [(_name(names, c), conf, box) for *box, conf, c in predictions.tolist()]
    layers, metadata = [], []
    for layer_name, entries, suffix in (("ground_truth", truth, "-gt"), ("prediction", guessed, "")):
        boxes = [Box(box=(x1, y1, x2 - x1, y2 - y1), label=label, score=score)
                 for label, score, (x1, y1, x2, y2) in entries]
        if boxes:
            layers.append(Layer(boxes=boxes, name=layer_name))
        metadata.extend({"label": f"{label}{suffix}", "score": score * 100,
                         "box": {"x": x1, "y": y1, "x2": x2, "y2": y2}} for label, score, (x1, y1, x2, y2) in entries)
    return layers, metadata


def per_class_metrics(names: Mapping[int, str], nt: Any, tp: Any, fp: Any, p: Any, r: Any, f1: Any, ap: Any,
                      ap50: Any, ap_class: Any) -> dict[str, dict[str, float]]:
    """Return ``{class name: {mAP@.5, mAP@.5:.95, precision, recall, f1, true_positives, false_positives,
    support}}`` for each class in ``ap_class`` (arrays indexed as the validator's ``on_val_end`` arguments)."""
    nt = np.asarray(nt)
    return {_name(names, c): {"mAP@.5": float(ap50[i]), "mAP@.5:.95": float(ap[i]), "precision": float(p[i]),
                              "recall": float(r[i]), "f1": float(f1[i]), "true_positives": float(tp[i]),
                              "false_positives": float(fp[i]), "support": float(nt[int(c)])}
            for i, c in enumerate(np.asarray(ap_class).tolist())}


def log_per_class_metrics(experiment: Any, names: Mapping[int, str], nt: Any, tp: Any, fp: Any, p: Any, r: Any,
                          f1: Any, ap: Any, ap50: Any, ap_class: Any, epoch: int) -> None:
    """Log :func:`per_class_metrics` with each class name as the metric prefix (``<name>_precision``, ...)."""
    for name, metrics in per_class_metrics(names, nt, tp, fp, p, r, f1, ap, ap50, ap_class).items():
        experiment.log_metrics(metrics, prefix=name, epoch=epoch)


def log_confusion_matrix(experiment: Any, matrix: np.ndarray, names: Mapping[int, str], epoch: int) -> None:
    """Log the (nc + 1, nc + 1) matrix (rows predicted, columns true, last = background) as
    ``confusion-matrix-epoch-{epoch}.json``."""
    matrix = np.asarray(matrix)
    labels = [_name(names, i) for i in range(matrix.shape[0] - 1)] + ["background"]
    experiment.log_confusion_matrix(matrix=matrix.astype(int).tolist(), labels=labels, max_categories=len(labels),
                                    title=f"Confusion Matrix, Epoch {epoch}", row_label="Predicted Class",
                                    column_label="Actual Category", file_name=f"confusion-matrix-epoch-{epoch}.json",
                                    epoch=epoch)
