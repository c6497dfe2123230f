"""Validation outputs: the results table, speed and save lines, label files, COCO JSON scoring, plot targets and the
image-size study plot. Every writer takes what it writes as arguments."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence, Union

import numpy as np
import torch

from engine.val_metrics import ValMetrics
from utils.boxes import xyxy2xywh
from utils.coco_eval import find_annotations, image_id_from_path, save_predictions_json, score_with_pycocotools
from utils.files import atomic_write_bytes
from utils.logging import LOGGER, colorstr

ROW_FORMAT = "%22s" + "%11i" * 2 + "%11.3g" * 4
TABLE_HEADER = ("%22s" + "%11s" * 6) % ("Class", "Images", "Instances", "P", "R", "mAP50", "mAP50-95")


def log_results(metrics: ValMetrics, seen: int, names: dict[int, str], task: str, per_class: bool,
                voc_ap: bool = False) -> None:
    """Log the ``all`` row (``seen`` images) and, when ``per_class``, one row per class in ``metrics.ap_class``.

    Warns when the split has no labels; with ``voc_ap`` first says which AP the mAP columns hold.
    """
    nt = metrics.nt
    if voc_ap:
        LOGGER.info("mAP columns use VOC all-point interpolated AP (--voc-ap)")
    LOGGER.info(ROW_FORMAT % ("all", seen, nt.sum(), metrics.mp, metrics.mr, metrics.map50, metrics.map))
    if nt.sum() == 0:
        LOGGER.warning(f"WARNING ⚠️ no labels found in {task} set, can not compute metrics without labels")
    if per_class:
        for i, c in enumerate(metrics.ap_class):
            LOGGER.info(ROW_FORMAT % (names[int(c)], seen, nt[int(c)], metrics.p[i], metrics.r[i],
                                      metrics.ap50[i], metrics.ap[i]))


def log_speed(speeds: Sequence[float], shape: tuple[int, int, int, int]) -> None:
    """Log the pre-process, inference and NMS times (ms per image) for input batches of ``shape`` (b, c, h, w)."""
    LOGGER.info(f"Speed: %.1fms pre-process, %.1fms inference, %.1fms NMS per image at shape {shape}"
                % tuple(speeds))


def log_saved(save_dir: Path, save_txt: bool) -> None:
    """Log where a run saved its outputs and, with ``save_txt``, how many label files are in ``labels/``."""
    labels = ""
    if save_txt:
        labels = f"\n{len(list(save_dir.glob('labels/*.txt')))} labels saved to {save_dir / 'labels'}"
    LOGGER.info(f"Results saved to {colorstr('bold', save_dir)}{labels}")


def save_txt_labels(predn: torch.Tensor, save_conf: bool, shape0: Sequence[int], file: Path) -> None:
    """Write detections as YOLO label lines ``cls x y w h [conf]`` (xywh normalised to the original image).

    Args:
        predn: (n, 6) ``[x1, y1, x2, y2, conf, cls]`` in original-image pixels. shape0: original ``(h, w)``.
    """
    gain = torch.tensor(shape0, device=predn.device, dtype=torch.float32)[[1, 0, 1, 0]]
    xywhn = xyxy2xywh(predn[:, :4].float()) / gain
    columns = [predn[:, 5:6].float(), xywhn] + ([predn[:, 4:5].float()] if save_conf else [])
    rows = torch.cat(columns, 1).cpu().numpy()
    text = "".join(" ".join(f"{x:g}" for x in row) + "\n" for row in rows.tolist())
    atomic_write_bytes(file, text.encode("utf-8"))


def predictions_to_targets(preds: Sequence[torch.Tensor], max_det: int = 300) -> torch.Tensor:
    """Return (n, 7) plot targets ``[image_index, cls, x, y, w, h, conf]`` (xywh pixels) from NMS outputs."""
    parts = [torch.cat((torch.full((len(p[:max_det]), 1), i, dtype=torch.float32), p[:max_det, 5:6].float().cpu(),
                        xyxy2xywh(p[:max_det, :4].float().cpu()), p[:max_det, 4:5].float().cpu()), 1)
             for i, p in enumerate(preds)]
    return torch.cat(parts, 0) if parts else torch.zeros((0, 7))


def finish_json(jdict: list[dict], save_dir: Path, stem: str, data: dict,
                image_files: Sequence[str] | None = None) -> dict[str, float]:
    """Write ``<stem>_predictions.json`` to ``save_dir``; score it with pycocotools when annotations exist.

    ``image_files`` restricts the scoring to those images (COCO ids from the file stems). Returns
    ``{'map': .., 'map50': ..}`` from pycocotools (replacing ours, as upstream does) or ``{}``.
    """
    pred_json = save_dir / f"{stem}_predictions.json"
    LOGGER.info(f"\nEvaluating pycocotools mAP... saving {pred_json}...")
    save_predictions_json(jdict, pred_json)
    anno_json = find_annotations(data)
    if anno_json is None:
        LOGGER.info("pycocotools unable to run: no COCO annotations JSON found (set 'coco_annotations:' in the "
                    "data YAML, or place it at <path>/annotations/instances_val2017.json)")
        return {}
    image_ids = [image_id_from_path(f) for f in image_files] if image_files is not None else None
    scores = score_with_pycocotools(anno_json, pred_json, image_ids)
    return {"map": scores[0], "map50": scores[1]} if scores else {}


def study_file_name(data: Union[str, Path], weights: Union[str, Path]) -> str:
    """Return upstream's study file name ``study_<data stem>_<weights stem>.txt``."""
    return f"study_{Path(str(data)).stem}_{Path(str(weights)).stem}.txt"


def plot_study(files: Sequence[Path], sizes: Sequence[int], out_png: Path) -> None:
    """Plot mAP50-95 and mAP50 against image size, and mAP50-95 against inference time, for each study file.

    Each file holds upstream's rows ``P R mAP50 mAP50-95 box obj cls t_pre t_inf t_nms`` (times in ms/img), one
    row per entry of ``sizes`` (pixels).
    """
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4), tight_layout=True)
    by_size, by_speed = figure.subplots(1, 2)
    for file in files:
        values = np.loadtxt(file, ndmin=2)
        label = Path(file).stem.replace("study_", "")
        by_size.plot(sizes, values[:, 3], ".-", label=f"{label} mAP50-95")
        by_size.plot(sizes, values[:, 2], ".--", label=f"{label} mAP50")
        by_speed.plot(values[:, 8], values[:, 3], ".-", label=label)
    by_size.set(xlabel="image size (pixels)", ylabel="mAP", title="mAP vs image size")
    by_speed.set(xlabel="inference time (ms/img)", ylabel="mAP50-95", title="mAP vs speed")
    for axis in (by_size, by_speed):
        axis.grid(alpha=0.3)
        axis.legend(loc="lower right", fontsize=7)
    figure.savefig(out_png, dpi=200)
    LOGGER.info(f"Saved {out_png}")
