"""The validation loop: a built detection model and dataloader in, upstream's ``val.run`` result tuple out.

Flow per batch: uint8 images -> float [0, 1] (pre-process), model forward (inference, optionally the training loss
on the raw head outputs), ``non_max_suppression`` at conf 0.001 / IoU 0.6 with one detection per class above the
threshold (``multi_label``) and no time limit, then per image: predictions and labels are rescaled to the original
image (xyxy pixels) and matched at the 10 IoU thresholds 0.50:0.05:0.95 (``process_batch``); with ``voc_ap`` also
in PASCAL VOC's confidence order at IoU 0.5. :class:`engine.val_metrics.MatchRecords` turns the matches into P, R,
AP50 and AP50-95 per class; :mod:`engine.val_outputs` writes the table, label files and COCO JSON.

``Validator(...)()`` returns ``((mp, mr, map50, map, box_loss, obj_loss, cls_loss), maps (nc,), (t_pre, t_inf,
t_nms))`` with times in ms per image, exactly as upstream's ``val.run``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

from engine.val_metrics import MatchRecords, ValMetrics, iou_thresholds
from engine.val_model import borrowed_model
from engine.val_options import ValOptions
from engine.val_outputs import (
    TABLE_HEADER,
    finish_json,
    log_results,
    log_saved,
    log_speed,
    predictions_to_targets,
    save_txt_labels,
)
from models.backends import DetectMultiBackend
from utils.boxes import scale_boxes, xywh2xyxy
from utils.callbacks import Callbacks
from utils.coco_eval import coco80_to_coco91_class, predictions_to_coco
from utils.files import increment_path
from utils.logging import LOGGER, colorstr
from utils.nms import non_max_suppression
from utils.precision import PrecisionPolicy, float_outputs, inference_precision
from utils.profiling import Profile
from utils.torch_utils import de_parallel, select_device, smart_inference_mode

__all__ = ["TABLE_HEADER", "ValOptions", "Validator", "build_val_loader"]

BAR_FORMAT = "{l_bar}{bar:10}{r_bar}"
Results = tuple[tuple, np.ndarray, tuple[float, float, float]]


@dataclass
class ValPass:
    """What one ``Validator.__call__`` accumulates: images seen, match records, losses, COCO rows, timers."""

    records: MatchRecords
    loss: torch.Tensor
    timers: tuple[Profile, Profile, Profile]
    confusion: Any
    seen: int = 0
    jdict: list[dict] = field(default_factory=list)


class Validator:
    """One validation configuration; each call runs a pass over ``dataloader`` and returns upstream's tuple.

    Args:
        model: a built detection model (any ``nn.Module`` returning ``(inference, raw head outputs)`` in eval
            mode), or a ``DetectMultiBackend``. It is never changed: see :func:`engine.val_model.borrowed_model`.
        dataloader: yields ``(uint8 images (B, 3, H, W), targets (n, 6) [image, cls, xywh normalised], paths,
            shapes)`` as ``utils.data.loaders.create_dataloader`` builds them.
        options: the run's settings. ``half`` becomes fp16 weights on CUDA only.
        data: dataset dict (or YAML path, resolved with ``check_dataset``) giving ``nc``, ``names`` and the split.
        save_dir: folder for plots, ``labels/`` and the predictions JSON.
        callbacks: ``on_val_*`` hooks. compute_loss: ``(raw outputs, targets) -> (loss, (3,) items)`` to average
            over batches into the box/obj/cls results; needs a model returning raw outputs in eval mode.
        standalone: log as ``val.py`` does (per-class rows for fewer than 50 classes, the speed line and where the
            outputs went) instead of as the in-training validation.
        json_stem: name stem of ``<json_stem>_predictions.json``.
    """

    table_header = TABLE_HEADER
    loss_names = ("box_loss", "obj_loss", "cls_loss")

    def __init__(self, model: nn.Module, dataloader: Any, options: ValOptions | None = None, *,
                 data: Union[str, Path, dict], save_dir: Union[str, Path] = Path(""),
                 callbacks: Callbacks | None = None, compute_loss: Any = None, standalone: bool = False,
                 json_stem: str = "") -> None:
        options = options or ValOptions()
        self.model, self.dataloader, self.compute_loss = model, dataloader, compute_loss
        self.data = data if isinstance(data, dict) and "nc" in data else _check_dataset(data)
        self.save_dir, self.standalone, self.json_stem = Path(save_dir), standalone, json_stem
        self.callbacks = callbacks if callbacks is not None else Callbacks()
        self.policy: PrecisionPolicy | None = None
        self.backend = isinstance(model, DetectMultiBackend)  # it applies its own precision policy
        if self.backend:
            self.device, half = model.device, model.fp16
        else:
            self.device = model_device(model)
            half = bool(options.half) and self.device.type != "cpu"
            self.policy = inference_precision(self.device, force_fp32=options.fp32, log=False)
        self.opt = dataclasses.replace(options, half=half)
        self.nc = 1 if self.opt.single_cls else int(self.data["nc"])
        self.names = _names_dict(model, self.data)
        self.is_coco = is_coco_split(self.data)
        self.class_map = coco80_to_coco91_class() if self.is_coco else list(range(1000))

    @classmethod
    def from_weights(cls, weights: Any, options: ValOptions | None = None, *, data: Union[str, Path, dict],
                     callbacks: Callbacks | None = None, save_dir: Union[str, Path, None] = None) -> Validator:
        """Load ``weights`` (``.pt``/TorchScript/ONNX, or a list of ``.pt`` for an ensemble) with
        ``DetectMultiBackend`` on ``options.device`` and build a rect loader for ``data[options.split]``.

        Outputs go to ``save_dir``, by default a new ``options.project / options.name`` (incremented unless
        ``exist_ok``). The image size is rounded to the model stride; non-PyTorch backends run batch size 1.
        Raises ``ValueError`` when a PyTorch model's class count differs from the dataset's.
        """
        from utils.ops import check_img_size

        opt = options or ValOptions()
        if save_dir is None:
            save_dir = increment_path(Path(opt.project) / opt.name, exist_ok=opt.exist_ok)
        save_dir = Path(save_dir)
        (save_dir / "labels" if opt.save_txt else save_dir).mkdir(parents=True, exist_ok=True)
        device = select_device(opt.device, batch_size=opt.batch_size)
        half = bool(opt.half) and device.type != "cpu"  # the default half=True is silent on CPU
        model = DetectMultiBackend(weights, device=device, dnn=opt.dnn, data=data, fp16=half, fp32=opt.fp32)
        opt = dataclasses.replace(opt, imgsz=check_img_size(opt.imgsz, s=model.stride))
        if not (model.pt or model.jit):
            opt = dataclasses.replace(opt, batch_size=1)
            LOGGER.info(f"Forcing --batch-size 1 square inference (1,3,{opt.imgsz},{opt.imgsz}) for non-PyTorch "
                        f"models")
        data = _check_dataset(data)
        if model.pt and not opt.single_cls:
            _check_class_count(model, data, weights)
        model.warmup(imgsz=(1 if model.pt else opt.batch_size, 3, opt.imgsz, opt.imgsz))
        loader = cls.build_loader(data, opt, model.stride, rect=model.pt)
        first = weights[0] if isinstance(weights, (list, tuple)) else weights
        return cls(model, loader, opt, data=data, save_dir=save_dir, callbacks=callbacks, standalone=True,
                   json_stem=Path(first).stem if first is not None else "")

    @staticmethod
    def build_loader(data: dict, options: ValOptions, stride: int, rect: bool = True) -> Any:
        """The loader :meth:`from_weights` validates on (:func:`build_val_loader`)."""
        return build_val_loader(data, options, stride, rect)

    def __call__(self) -> Results:
        """Run one pass; return ``((mp, mr, map50, map, *val_losses), maps (nc,), speeds ms/image)``."""
        opt = self.opt
        if opt.plots or opt.save_json or opt.save_txt:
            (self.save_dir / "labels" if opt.save_txt else self.save_dir).mkdir(parents=True, exist_ok=True)
        dtype = None if self.backend else torch.float16 if opt.half else torch.float32
        with borrowed_model(self.model, dtype, self.policy) as model:
            return self._run(model)

    @smart_inference_mode()
    def _run(self, model: nn.Module) -> Results:
        from utils.metrics import ConfusionMatrix

        state = ValPass(records=self.new_records(), loss=torch.zeros(len(self.loss_names), device=self.device),
                      timers=tuple(Profile(device=self.device) for _ in range(3)),
                      confusion=ConfusionMatrix(nc=self.nc))
        iouv = iou_thresholds(self.device)
        _warmup_nms(self.device)
        self.callbacks.run("on_val_start")
        for batch_i, batch in enumerate(tqdm(self.dataloader, desc=self.table_header, bar_format=BAR_FORMAT)):
            self.callbacks.run("on_val_batch_start")
            self._batch(model, state, iouv, batch_i, *batch)
        return self._finish(state)

    def new_records(self) -> MatchRecords:
        """The per-detection match store of one pass."""
        return MatchRecords(self.nc, iou_thresholds().numel())

    def _finish(self, state: ValPass) -> Results:
        """Metrics, logs, plots and JSON of a finished pass; returns upstream's result tuple."""
        opt = self.opt
        metrics = state.records.metrics(voc_ap=opt.voc_ap, plot=opt.plots, save_dir=self.save_dir, names=self.names)
        speeds = tuple(x.t / max(state.seen, 1) * 1e3 for x in state.timers)
        per_class = (opt.verbose or (self.nc < 50 and self.standalone)) and self.nc > 1 and len(state.records) > 0
        log_results(metrics, state.seen, self.names, opt.task, per_class, voc_ap=opt.voc_ap)
        if self.standalone:
            log_speed(speeds, (opt.batch_size, 3, opt.imgsz, opt.imgsz))
        if opt.plots:
            state.confusion.plot(save_dir=self.save_dir, names=list(self.names.values()))
            self.callbacks.run("on_val_end", metrics.nt, metrics.tp, metrics.fp, metrics.p, metrics.r, metrics.f1,
                               metrics.ap, metrics.ap50, metrics.ap_class, state.confusion)
        if opt.save_json and state.jdict:
            self._score_json(state.jdict, metrics)
        if self.standalone:
            log_saved(self.save_dir, opt.save_txt)
        losses = (state.loss.cpu() / max(len(self.dataloader), 1)).tolist()
        return (metrics.mp, metrics.mr, metrics.map50, metrics.map, *losses), metrics.class_maps(self.nc), speeds

    def _batch(self, model: nn.Module, state: ValPass, iouv: torch.Tensor, batch_i: int, im: torch.Tensor,
               targets: torch.Tensor, paths: Sequence[str], shapes: Sequence[Any]) -> None:
        """Pre-process, infer, suppress and score one batch; plot the first three when plotting."""
        opt = self.opt
        with state.timers[0]:
            im = im.to(self.device, non_blocking=True)
            targets = targets.to(self.device)
            im = (im.half() if opt.half else im.float()) / 255
            nb, _, height, width = im.shape
        with state.timers[1]:
            preds, train_out = self._infer(model, im)
        if self.compute_loss is not None and train_out is not None:
            state.loss += self.compute_loss(train_out, targets)[1]
        targets[:, 2:] *= torch.tensor((width, height, width, height), device=self.device)
        hybrid = [targets[targets[:, 0] == i, 1:] for i in range(nb)] if opt.save_hybrid else []
        with state.timers[2]:
            preds = non_max_suppression(preds, opt.conf_thres, opt.iou_thres, labels=hybrid, multi_label=True,
                                        agnostic=opt.single_cls, max_det=opt.max_det)
        for si, pred in enumerate(preds):
            self._image(state, iouv, pred, targets[targets[:, 0] == si, 1:], im, si, Path(paths[si]), shapes[si])
        if opt.plots and batch_i < 3:
            self._plot_batch(batch_i, im, targets, paths, preds)
        self.callbacks.run("on_val_batch_end", batch_i, im, targets, paths, shapes, preds)

    def _infer(self, model: nn.Module, im: torch.Tensor) -> tuple[Any, list | None]:
        """Return ``(inference output, raw head outputs or None)``, floating tensors as fp32 (for NMS, metrics
        and the loss); raw outputs only when a loss is computed."""
        policy = self.policy
        x = policy.prepare_input(im) if policy is not None else im
        with policy.autocast() if policy is not None else contextlib.nullcontext():
            out = model(x, augment=True) if self.opt.augment and self.compute_loss is None else model(x)
        out = float_outputs(out)
        if self.compute_loss is not None:
            return (out[0], out[1]) if isinstance(out, (list, tuple)) and len(out) > 1 else (out, None)
        return out, None

    def _image(self, state: ValPass, iouv: torch.Tensor, pred: torch.Tensor, labels: torch.Tensor, im: torch.Tensor,
               si: int, path: Path, shapes: Any) -> None:
        """Match image ``si``'s detections (n, 6) to its labels (m, 5) ``[cls, xywh px]``; record and write them."""
        from utils.metrics import match_detections_voc, process_batch

        opt = self.opt
        if opt.single_cls:  # also when the dataloader was built without single_cls
            labels = torch.cat((torch.zeros_like(labels[:, :1]), labels[:, 1:]), 1)
        nl, npr = labels.shape[0], pred.shape[0]
        shape0, ratio_pad = (shapes[0], shapes[1]) if shapes is not None else (im.shape[2:], None)
        correct = torch.zeros(npr, iouv.numel(), dtype=torch.bool, device=self.device)
        voc_correct = correct[:, 0]
        state.seen += 1
        if npr == 0:
            if nl:
                state.records.add(correct, *torch.zeros((2, 0), device=self.device), labels[:, 0], correct[:, 0])
                if opt.plots:
                    state.confusion.process_batch(detections=None, labels=labels[:, 0])
            return
        if opt.single_cls:
            pred[:, 5] = 0
        predn = pred.clone()
        scale_boxes(im[si].shape[1:], predn[:, :4], shape0, ratio_pad)
        if nl:
            label_boxes = xywh2xyxy(labels[:, 1:5])
            scale_boxes(im[si].shape[1:], label_boxes, shape0, ratio_pad)
            labelsn = torch.cat((labels[:, 0:1], label_boxes), 1)
            correct = process_batch(predn, labelsn, iouv)
            if opt.voc_ap:
                voc_correct = match_detections_voc(predn, labelsn, iou_thres=0.5)
            if opt.plots:
                state.confusion.process_batch(predn, labelsn)
        state.records.add(correct, pred[:, 4], pred[:, 5], labels[:, 0], voc_correct)
        if opt.save_txt:
            save_txt_labels(predn, opt.save_conf, shape0, self.save_dir / "labels" / f"{path.stem}.txt")
        if opt.save_json:
            state.jdict.extend(predictions_to_coco(predn, path, self.class_map))
        self.callbacks.run("on_val_image_end", pred, predn, path, self.names, im[si])

    def _plot_batch(self, batch_i: int, im: torch.Tensor, targets: torch.Tensor, paths: Sequence[str],
                    preds: list) -> None:
        from utils.plotting.annotate import plot_images

        plot_images(im, targets, paths, self.save_dir / f"val_batch{batch_i}_labels.jpg", self.names)
        plot_images(im, predictions_to_targets(preds, self.opt.max_det), paths,
                    self.save_dir / f"val_batch{batch_i}_pred.jpg", self.names)

    def _score_json(self, jdict: list[dict], metrics: ValMetrics) -> None:
        """Write the COCO predictions; pycocotools' mAP50-95 and mAP50 replace ours when it can score them."""
        dataset = getattr(self.dataloader, "dataset", None)
        image_files = dataset.im_files if self.is_coco and dataset is not None else None
        scores = finish_json(jdict, self.save_dir, self.json_stem, self.data, image_files)
        if scores:
            metrics.map, metrics.map50 = scores["map"], scores["map50"]


def build_val_loader(data: dict, options: ValOptions, stride: int, rect: bool = True, create: Any = None,
                     **loader_args: Any) -> Any:
    """Return the dataloader over ``data[options.split]``: rect batches padded 0.5 stride, or for ``speed`` square
    unpadded ones; ``stride`` is the model's largest stride (pixels). ``create`` (default
    ``utils.data.loaders.create_dataloader``) builds it, with ``loader_args`` (e.g. the mask format)."""
    from utils.data.loaders import create_dataloader

    pad, rect = (0.0, False) if options.task == "speed" else (0.5, rect)
    split = options.split
    if not data.get(split):
        raise ValueError(f"dataset has no '{split}:' split to validate on (--task {options.task})")
    return (create or create_dataloader)(data[split], options.imgsz, options.batch_size, stride, options.single_cls,
                                         pad=pad, rect=rect, workers=options.workers, prefix=colorstr(f"{split}: "),
                                         nc=int(data["nc"]), **loader_args)[0]


def is_coco_split(data: dict) -> bool:
    """True when the dataset's ``val`` split is COCO's ``val2017.txt`` (COCO category ids, pycocotools ids)."""
    val_path = data.get("val")
    return isinstance(val_path, str) and val_path.endswith(f"coco{os.sep}val2017.txt")


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter (CPU for a model without parameters)."""
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def model_stride(model: nn.Module) -> int:
    """The model's largest stride in pixels, at least 32 (32 when it has none)."""
    stride = getattr(de_parallel(model), "stride", None)
    return max(int(stride.max()) if isinstance(stride, torch.Tensor) else int(stride or 32), 32)


def _check_dataset(data: Union[str, Path, dict]) -> dict:
    from utils.data.dataset_yaml import check_dataset

    return check_dataset(data)


def _check_class_count(model: nn.Module, data: dict, weights: Any) -> None:
    inner = getattr(model, "model", model)
    nc = getattr(inner, "nc", None)
    if nc is None and hasattr(inner, "model") and len(getattr(inner, "model", [])):
        nc = getattr(inner.model[-1], "nc", None)
    if nc is not None and int(nc) != int(data["nc"]):
        raise ValueError(f"{weights} ({int(nc)} classes) trained on different --data than what you passed "
                         f"({int(data['nc'])} classes). Pass correct combination of --weights and --data that are "
                         f"trained together.")


def _warmup_nms(device: torch.device) -> None:
    """Run NMS once on one box so lazy imports (torchvision) are not counted in the first batch's NMS time."""
    non_max_suppression(torch.tensor([[[8.0, 8.0, 4.0, 4.0, 1.0, 1.0]]], device=device))


def _names_dict(model: nn.Module, data: dict) -> dict[int, str]:
    names = getattr(model, "names", None) or getattr(getattr(model, "module", None), "names", None) or data["names"]
    return dict(enumerate(names)) if isinstance(names, (list, tuple)) else dict(names)
