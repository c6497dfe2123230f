"""COCO-format prediction export and pycocotools scoring for validation (``val.py --save-json``).

Predictions are written as upstream does: one entry per detection ``{image_id, category_id, bbox, score}`` where
``image_id`` is the image file stem (an int when numeric), ``bbox`` is ``[x_min, y_min, w, h]`` in original-image
pixels rounded to 3 decimals, and ``score`` is rounded to 5 decimals.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import torch

from utils.boxes import xyxy2xywh
from utils.files import atomic_write_bytes
from utils.logging import LOGGER

# COCO's 80 training classes mapped to the 91 ids of the original paper (ids 12, 26, 29, 30, 45, 66, 68, 69, 71,
# 83 and 91 are unused).
_UNUSED_COCO91 = {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}


def coco80_to_coco91_class() -> list[int]:
    """Return the 80 COCO category ids (1..90, with the paper's 10 unused ids skipped), indexed by class 0..79."""
    return [i for i in range(1, 91) if i not in _UNUSED_COCO91]


def image_id_from_path(path: Union[str, Path]) -> Union[int, str]:
    """Return the COCO image id for an image file: its stem as an int when numeric, else the stem string."""
    stem = Path(path).stem
    return int(stem) if stem.isnumeric() else stem


def masks_to_rle(masks: np.ndarray) -> list[dict]:
    """COCO run-length encodings (``counts`` as text) of binary masks (h, w, n) in original-image pixels."""
    from pycocotools import mask as mask_utils

    encoded = mask_utils.encode(np.asfortranarray(masks.astype(np.uint8)))
    for rle in encoded:
        rle["counts"] = rle["counts"].decode("utf-8")
    return list(encoded)


def predictions_to_coco(predn: torch.Tensor, path: Union[str, Path], class_map: Sequence[int],
                        masks: np.ndarray | None = None) -> list[dict]:
    """Return COCO result dicts for one image's detections.

    Args:
        predn: (n, 6) ``[x1, y1, x2, y2, conf, cls]`` xyxy in original-image pixels.
        path: the image file (its stem is the image id). class_map: class index -> COCO category id.
        masks: optional (h0, w0, n) binary masks in original-image pixels: each entry gets its RLE
            ``segmentation`` (instance segmentation results).
    """
    if not len(predn):
        return []
    boxes = xyxy2xywh(predn[:, :4].detach().float().cpu())
    boxes[:, :2] -= boxes[:, 2:] / 2  # centre -> top-left corner
    boxes = np.round(boxes.numpy().astype(np.float64), 3).tolist()
    scores = np.round(predn[:, 4].detach().float().cpu().numpy().astype(np.float64), 5).tolist()
    classes = predn[:, 5].detach().cpu().long().tolist()
    image_id = image_id_from_path(path)
    entries = [{"image_id": image_id, "category_id": class_map[c], "bbox": b, "score": s}
               for c, b, s in zip(classes, boxes, scores, strict=True)]
    if masks is not None:
        for entry, rle in zip(entries, masks_to_rle(masks), strict=True):
            entry["segmentation"] = rle
    return entries


def find_annotations(data: dict) -> Path | None:
    """Return the COCO annotations JSON for a dataset dict, or None.

    Looks at, in order: a ``coco_annotations`` / ``annotations`` key of the data YAML (relative to its ``path``),
    ``../datasets/coco/annotations/instances_val2017.json`` and ``<path>/annotations/instances_val2017.json``.
    """
    root = Path(data.get("path") or ".")
    candidates = []
    for key in ("coco_annotations", "annotations"):
        if isinstance(data.get(key), str):
            value = Path(data[key])
            candidates.append(value if value.is_absolute() else root / value)
    candidates += [Path("../datasets/coco/annotations/instances_val2017.json"),
                   root / "annotations" / "instances_val2017.json"]
    return next((c for c in candidates if c.is_file()), None)


def save_predictions_json(jdict: list[dict], file: Union[str, Path]) -> None:
    """Write the COCO result list to ``file`` atomically."""
    atomic_write_bytes(file, json.dumps(jdict).encode("utf-8"))


def score_with_pycocotools(anno_json: Union[str, Path], pred_json: Union[str, Path],
                           image_ids: Sequence[Union[int, str]] | None = None,
                           iou_type: str = "bbox") -> tuple[float, float] | None:
    """Return ``(mAP50-95, mAP50)`` from pycocotools' evaluation, or None if it cannot run (logged).

    Args:
        anno_json: COCO ground-truth file. pred_json: results file. image_ids: restrict evaluation to these ids.
        iou_type: ``'bbox'`` or ``'segm'`` (masks: the results need RLE ``segmentation`` entries).
    """
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        LOGGER.info("pycocotools unable to run: not installed (pip install pycocotools)")
        return None
    try:
        annotations = COCO(os.fspath(anno_json))
        predictions = annotations.loadRes(os.fspath(pred_json))
        evaluator = COCOeval(annotations, predictions, iou_type)
        if image_ids is not None:
            evaluator.params.imgIds = list(image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
        return float(evaluator.stats[0]), float(evaluator.stats[1])
    except Exception as e:  # a malformed annotation file must not lose the already computed metrics
        LOGGER.info(f"pycocotools unable to run: {type(e).__name__}: {e}")
        return None
