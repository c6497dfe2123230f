"""Segmentation validation: the detection :class:`engine.validator.Validator` with masks (upstream ``segment/val.py``).

Per batch: forward -> ``(detections, prototypes, raw)``; NMS keeps 32 mask coefficients (conf 0.001, IoU 0.6,
multi-label); per image the masks are ``process_mask`` of the prototypes (upsampled to the input when plotting, as
upstream, else on the prototype grid) and each detection is matched twice at IoU 0.50:0.05:0.95: by box (original
image pixels) and by mask (ground truth resized to the predicted masks). :func:`utils.segment.metrics.
ap_per_class_box_and_mask` gives box and mask P, R, mAP50, mAP50-95 in the ``Box(P R mAP50 mAP50-95) Mask(P R mAP50
mAP50-95)`` table. ``--save-json`` writes COCO results with RLE masks (original resolution) and scores bbox and segm
with pycocotools when an annotation file exists.

Returns ``((box P, R, mAP50, mAP50-95, mask P, R, mAP50, mAP50-95, box, seg, obj, cls losses), maps (nc,),
(t_pre, t_inf, t_nms))`` like upstream's ``segment/val.run``.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn

from engine.segment_options import SegValOptions
from engine.val_metrics import MatchRecords
from engine.val_outputs import log_saved, log_speed, predictions_to_targets, save_txt_labels
from engine.validator import Validator, ValPass, build_val_loader
from utils.boxes import scale_boxes, xywh2xyxy
from utils.coco_eval import find_annotations, predictions_to_coco, save_predictions_json, score_with_pycocotools
from utils.logging import LOGGER
from utils.mask_ops import process_mask, process_mask_upsample, scale_image
from utils.metrics import process_batch
from utils.nms import non_max_suppression
from utils.precision import float_outputs
from utils.segment.metrics import Metrics, ap_per_class_box_and_mask, match_masks

__all__ = ["SEG_TABLE_HEADER", "SegmentValidator", "build_segment_val_loader", "candidate_mask_rows"]

SEG_TABLE_HEADER = ("%22s" + "%11s" * 10) % ("Class", "Images", "Instances", "Box(P", "R", "mAP50", "mAP50-95)",
                                             "Mask(P", "R", "mAP50", "mAP50-95)")
SEG_ROW_FORMAT = "%22s" + "%11i" * 2 + "%11.3g" * 8
NUM_MASKS = 32
PLOTTED_PER_IMAGE = 15  # predicted instances drawn per image in val_batch*_pred.jpg
MASK_MARGIN = 8  # input pixels around a label box that its (resized) ground-truth mask may reach


class SegmentMatchRecords(MatchRecords):
    """Per-image ``(mask matches, box matches, conf, pred_cls, target_cls)`` of a segmentation pass."""

    def add(self, correct_m: torch.Tensor, correct_b: torch.Tensor, conf: torch.Tensor, pred_cls: torch.Tensor,
            target_cls: torch.Tensor) -> None:
        """Record one image: (n, 10) bool mask and box matches, (n,) conf and classes, (m,) label classes."""
        self.records.append((correct_m, correct_b, conf, pred_cls, target_cls))

    def arrays(self) -> list[np.ndarray]:
        """The concatenated records as numpy arrays ``[tp_m, tp_b, conf, pred_cls, target_cls]``."""
        if not self.records:
            return [np.zeros((0, self.n_iou), bool)] * 2 + [np.zeros(0)] * 3
        return [torch.cat(x, 0).cpu().numpy() for x in zip(*self.records, strict=True)]

    def segment_metrics(self, plot: bool, save_dir: Path, names: dict) -> tuple[Metrics, np.ndarray, dict]:
        """Return (:class:`Metrics`, labels per class (nc,), the raw box/mask results dict or {})."""
        stats = self.arrays()
        nt = np.bincount(stats[4].astype(int), minlength=self.nc)
        metrics = Metrics()
        results: dict = {}
        if len(stats[0]) and (stats[0].any() or stats[1].any()):
            results = ap_per_class_box_and_mask(*stats, plot=plot, save_dir=save_dir, names=names)
            metrics.update(results)
        return metrics, nt, results


class SegmentValidator(Validator):
    """:class:`Validator` for ``Segment`` models; ``options`` is a :class:`SegValOptions` (``overlap`` and
    ``mask_downsample_ratio`` describe the loader's ground-truth masks). ``compute_loss`` is the segmentation loss
    ``(preds, targets, masks) -> (loss, (4,) items)``."""

    table_header = SEG_TABLE_HEADER
    loss_names = ("box_loss", "seg_loss", "obj_loss", "cls_loss")

    def __init__(self, model: nn.Module, dataloader: Any, options: SegValOptions | None = None, **kwargs: Any) -> None:
        super().__init__(model, dataloader, options or SegValOptions(), **kwargs)
        self.overlap = bool(getattr(self.opt, "overlap", False))

    @staticmethod
    def build_loader(data: dict, options: SegValOptions, stride: int, rect: bool = True) -> Any:
        """The segmentation loader :meth:`from_weights` validates on."""
        return build_segment_val_loader(data, options, stride, rect)

    def new_records(self) -> SegmentMatchRecords:
        """The per-detection box and mask match store of one pass."""
        return SegmentMatchRecords(self.nc, 10)

    def _infer_segment(self, model: nn.Module, im: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """Return ``(detections (B, N, 5 + nc + 32), prototypes (B, 32, h, w), raw levels or None)`` as fp32."""
        policy = self.policy
        x = policy.prepare_input(im) if policy is not None else im
        with policy.autocast() if policy is not None else contextlib.nullcontext():
            out = model(x)
        out = float_outputs(out)
        return out[0], out[1], (out[2] if len(out) > 2 else None)

    def _batch(self, model: nn.Module, state: ValPass, iouv: torch.Tensor, batch_i: int, im: torch.Tensor,
               targets: torch.Tensor, paths: Sequence[str], shapes: Sequence[Any], masks: torch.Tensor) -> None:
        """Pre-process, infer, suppress and score one batch (masks: the loader's ground truth)."""
        opt = self.opt
        with state.timers[0]:
            im = im.to(self.device, non_blocking=True)
            targets, masks = targets.to(self.device), masks.to(self.device).float()
            im = (im.half() if opt.half else im.float()) / 255
            nb, _, height, width = im.shape
        with state.timers[1]:
            preds, protos, train_out = self._infer_segment(model, im)
        if self.compute_loss is not None and train_out is not None:
            state.loss += self.compute_loss((train_out, protos), targets, masks)[1]
        targets[:, 2:] *= torch.tensor((width, height, width, height), device=self.device)
        with state.timers[2]:
            preds = non_max_suppression(preds, opt.conf_thres, opt.iou_thres, multi_label=True,
                                        agnostic=opt.single_cls, max_det=opt.max_det, nm=NUM_MASKS)
        plot = opt.plots and batch_i < 3
        plot_masks = []
        for si, pred in enumerate(preds):
            in_image = targets[:, 0] == si
            gt_masks = masks[[si]] if self.overlap else masks[in_image]
            pred_masks = self._image_masks(state, iouv, pred, targets[in_image, 1:], gt_masks, protos[si], im, si,
                                           Path(paths[si]), shapes[si], PLOTTED_PER_IMAGE if plot else 0)
            if plot:
                plot_masks.append(pred_masks.cpu())
        if plot:
            self._plot_mask_batch(batch_i, im, targets, masks, paths, preds, plot_masks)
        self.callbacks.run("on_val_batch_end", batch_i, im, targets, paths, shapes, [p[:, :6] for p in preds])

    def _image_masks(self, state: ValPass, iouv: torch.Tensor, pred: torch.Tensor, labels: torch.Tensor,
                     gt_masks: torch.Tensor, protos: torch.Tensor, im: torch.Tensor, si: int, path: Path,
                     shapes: Any, plotted: int = 0) -> torch.Tensor:
        """Match image ``si``'s detections (n, 38) by box and mask; record and write them; return the masks of its
        first ``plotted`` detections (drawn in ``val_batch*_pred.jpg``)."""
        opt = self.opt
        if opt.single_cls:
            labels = torch.cat((torch.zeros_like(labels[:, :1]), labels[:, 1:]), 1)
            pred[:, 5] = 0
        nl, npr = labels.shape[0], pred.shape[0]
        shape0, ratio_pad = (shapes[0], shapes[1]) if shapes is not None else (im.shape[2:], None)
        input_shape = im.shape[2:]
        state.seen += 1
        empty = torch.zeros(npr, iouv.numel(), dtype=torch.bool, device=self.device)
        if npr == 0:
            if nl:
                state.records.add(empty, empty, *torch.zeros((2, 0), device=self.device), labels[:, 0])
                if opt.plots:
                    state.confusion.process_batch(detections=None, labels=labels[:, 0])
            return torch.zeros((0, *input_shape), dtype=torch.bool, device=self.device)
        keep = torch.arange(npr, device=pred.device) if opt.save_json else candidate_mask_rows(pred, labels, plotted)
        process = process_mask_upsample if opt.plots else process_mask  # upstream: finer masks when plotting
        pred_masks = process(protos, pred[keep, 6:], pred[keep, :4], input_shape)
        predn = pred[:, :6].clone()
        scale_boxes(input_shape, predn[:, :4], shape0, ratio_pad)
        correct_b, correct_m = empty, empty.clone()
        if nl:
            label_boxes = xywh2xyxy(labels[:, 1:5])
            scale_boxes(input_shape, label_boxes, shape0, ratio_pad)
            labelsn = torch.cat((labels[:, 0:1], label_boxes), 1)
            correct_b = process_batch(predn, labelsn, iouv)
            correct_m[keep] = match_masks(predn[keep], labelsn, iouv, pred_masks, gt_masks, overlap=self.overlap)
            if opt.plots:
                state.confusion.process_batch(predn, labelsn)
        state.records.add(correct_m, correct_b, pred[:, 4], pred[:, 5], labels[:, 0])
        if opt.save_txt:
            save_txt_labels(predn, opt.save_conf, shape0, self.save_dir / "labels" / f"{path.stem}.txt")
        if opt.save_json:  # every row was kept: the JSON holds every detection's mask
            native = scale_image(input_shape, pred_masks.permute(1, 2, 0).to(torch.uint8).cpu().numpy(), shape0,
                                 ratio_pad)
            state.jdict.extend(predictions_to_coco(predn, path, self.class_map, masks=native))
        self.callbacks.run("on_val_image_end", pred[:, :6], predn, path, self.names, im[si])
        return pred_masks[:plotted] if plotted else pred_masks[:0]

    def _plot_mask_batch(self, batch_i: int, im: torch.Tensor, targets: torch.Tensor, masks: torch.Tensor,
                         paths: Sequence[str], preds: list, plot_masks: list) -> None:
        from utils.plotting.masks import plot_images_and_masks

        plot_images_and_masks(im, targets, masks, paths, self.save_dir / f"val_batch{batch_i}_labels.jpg",
                              self.names, overlap=self.overlap)
        shown = torch.cat(plot_masks, 0) if plot_masks else torch.zeros(0, *im.shape[2:])
        plot_images_and_masks(im, predictions_to_targets(preds, PLOTTED_PER_IMAGE), shown, paths,
                              self.save_dir / f"val_batch{batch_i}_pred.jpg", self.names, overlap=False)

    def _finish(self, state: ValPass) -> tuple:
        """Box and mask metrics, the table, plots and JSON of a finished pass; returns upstream's tuple."""
        opt = self.opt
        metrics, nt, results = state.records.segment_metrics(opt.plots, self.save_dir, self.names)
        speeds = tuple(x.t / max(state.seen, 1) * 1e3 for x in state.timers)
        LOGGER.info(SEG_ROW_FORMAT % ("all", state.seen, nt.sum(), *metrics.mean_results()))
        if nt.sum() == 0:
            LOGGER.warning(f"WARNING ⚠️ no labels found in {opt.task} set, can not compute metrics without labels")
        if (opt.verbose or (self.nc < 50 and self.standalone)) and self.nc > 1 and len(state.records) > 0:
            for i, c in enumerate(metrics.ap_class_index):
                LOGGER.info(SEG_ROW_FORMAT % (self.names[int(c)], state.seen, nt[int(c)], *metrics.class_result(i)))
        if self.standalone:
            log_speed(speeds, (opt.batch_size, 3, opt.imgsz, opt.imgsz))
        if opt.plots:
            state.confusion.plot(save_dir=self.save_dir, names=list(self.names.values()))
            box = results.get("boxes", {})
            self.callbacks.run("on_val_end", nt, box.get("tp", 0.0), box.get("fp", 0.0), metrics.metric_box.p,
                               metrics.metric_box.r, metrics.metric_box.f1, metrics.metric_box.ap,
                               metrics.metric_box.ap50, metrics.ap_class_index, state.confusion)
        mean = list(metrics.mean_results())
        if opt.save_json and state.jdict:
            mean = self._score_segment_json(state.jdict, mean)
        if self.standalone:
            log_saved(self.save_dir, opt.save_txt)
        losses = (state.loss.cpu() / max(len(self.dataloader), 1)).tolist()
        return (*mean, *losses), metrics.get_maps(self.nc), speeds

    def _score_segment_json(self, jdict: list[dict], mean: list[float]) -> list[float]:
        """Write the COCO results (boxes + RLE masks); pycocotools' bbox and segm mAPs replace ours when scored."""
        pred_json = self.save_dir / f"{self.json_stem}_predictions.json"
        LOGGER.info(f"\nEvaluating pycocotools mAP... saving {pred_json}...")
        save_predictions_json(jdict, pred_json)
        anno_json = find_annotations(self.data)
        if anno_json is None:
            LOGGER.info("pycocotools unable to run: no COCO annotations JSON found (set 'coco_annotations:' in the "
                        "data YAML, or place it at <path>/annotations/instances_val2017.json)")
            return mean
        for offset, iou_type in ((0, "bbox"), (4, "segm")):
            scores = score_with_pycocotools(anno_json, pred_json, iou_type=iou_type)
            if scores:
                mean[offset + 3], mean[offset + 2] = scores
        return mean


def candidate_mask_rows(pred: torch.Tensor, labels: torch.Tensor, first: int = 0) -> torch.Tensor:
    """Indices (ascending) of the detections whose masks matching needs: the first ``first`` (to draw) plus every
    one whose box touches a label box of its class (grown by :data:`MASK_MARGIN` px).

    A predicted mask lies inside its box and a label's mask inside the label's box, so any other detection has mask
    IoU 0 with every label of its class and matches nothing: leaving its mask out gives the same metrics as
    computing every mask. Args: pred (n, 6+) ``[x1, y1, x2, y2, conf, cls, ...]`` and labels (m, 5) ``[cls, x, y,
    w, h]``, both in input pixels.
    """
    n = pred.shape[0]
    if not len(labels):
        return torch.arange(min(first, n), device=pred.device)
    label_boxes = xywh2xyxy(labels[:, 1:5]) + labels.new_tensor([-1, -1, 1, 1]) * MASK_MARGIN
    top_left = torch.maximum(label_boxes[:, None, :2], pred[None, :, :2])
    bottom_right = torch.minimum(label_boxes[:, None, 2:], pred[None, :, 2:4])
    touch = (((bottom_right - top_left) > 0).all(2) & (labels[:, 0:1] == pred[:, 5])).any(0)  # (n,)
    touch[:first] = True
    return touch.nonzero().flatten()


def build_segment_val_loader(data: dict, options: SegValOptions, stride: int, rect: bool = True) -> Any:
    """The segmentation loader over ``data[options.split]`` (as :func:`build_val_loader`, with the options' masks)."""
    from utils.data.segment_dataset import create_dataloader

    return build_val_loader(data, options, stride, rect, create=create_dataloader,
                            mask_downsample_ratio=getattr(options, "mask_downsample_ratio", 1),
                            overlap_mask=getattr(options, "overlap", False))
