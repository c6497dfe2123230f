"""Validation engine behind ``val.py`` and the per-epoch validation of training (upstream ``val.run`` semantics).

Flow per batch: uint8 images -> float [0, 1] (pre-process), model forward (inference, optionally the training loss
on the raw head outputs), ``non_max_suppression`` at conf 0.001 / IoU 0.6 with one detection per class above the
threshold (``multi_label``) and no time limit, then per image: predictions and labels are rescaled to the original
image (xyxy pixels) and matched at the 10 IoU thresholds 0.50:0.05:0.95 (``process_batch``). At the end,
``ap_per_class`` turns the matches into P, R, AP50 and AP50-95 per class (101-point interpolated AP). With
``voc_ap=True`` the AP50 column is PASCAL VOC's instead: detections matched in confidence order at IoU 0.5 and
all-point interpolated AP (``utils.metrics.ap_per_class_voc``).

``run`` returns ``((mp, mr, map50, map, box_loss, obj_loss, cls_loss), maps (nc,), (t_pre, t_inf, t_nms))`` with
times in ms per image, exactly as upstream's ``val.run``.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

from utils.boxes import scale_boxes, xywh2xyxy
from utils.callbacks import Callbacks
from utils.coco_eval import coco80_to_coco91_class, predictions_to_coco
from utils.files import ROOT, increment_path
from utils.logging import LOGGER, colorstr
from utils.nms import non_max_suppression
from utils.precision import PrecisionPolicy, float_outputs, inference_precision
from utils.profiling import Profile
from utils.torch_utils import de_parallel, select_device, smart_inference_mode
from engine.val_outputs import finish_json, log_results, log_saved, predictions_to_targets, save_txt_labels

TABLE_HEADER = ("%22s" + "%11s" * 6) % ("Class", "Images", "Instances", "P", "R", "mAP50", "mAP50-95")
BAR_FORMAT = "{l_bar}{bar:10}{r_bar}"
IOU_THRESHOLDS = (0.5, 0.95, 10)  # linspace(start, stop, num) of the matching thresholds


@dataclass
class ValOptions:
    """Settings of one validation run (upstream ``val.run`` keyword names; see :func:`run`)."""

    batch_size: int = 32
    imgsz: int = 640
    conf_thres: float = 0.001
    iou_thres: float = 0.6
    max_det: int = 300
    task: str = "val"
    workers: int = 8
    single_cls: bool = False
    augment: bool = False
    verbose: bool = False
    save_txt: bool = False
    save_hybrid: bool = False
    save_conf: bool = False
    save_json: bool = False
    half: bool = True
    plots: bool = True
    voc_ap: bool = False
    fp32: bool = False


class Validator:
    """One validation pass over a dataset; ``__call__`` runs it and returns upstream's result tuple.

    When ``model`` is given (in-training validation) it is used as is, on its device, with its dataloader; otherwise
    ``weights`` are loaded with ``DetectMultiBackend`` and a rect dataloader is built for ``data[task]``.
    """

    def __init__(self, data: Union[str, Path, dict], weights: Any = None, options: ValOptions | None = None,
                 device: str = "", dnn: bool = False, model: nn.Module | None = None,
                 dataloader: Any = None, save_dir: Path = Path(""), callbacks: Callbacks | None = None,
                 compute_loss: Any = None) -> None:
        self.opt = options or ValOptions()
        self.data, self.weights, self.dataloader = data, weights, dataloader
        self.save_dir, self.compute_loss = Path(save_dir), compute_loss
        if self.opt.plots or self.opt.save_json or self.opt.save_txt:
            (self.save_dir / "labels" if self.opt.save_txt else self.save_dir).mkdir(parents=True, exist_ok=True)
        self.callbacks = callbacks if callbacks is not None else Callbacks()
        self.training = model is not None
        self.iouv: torch.Tensor = torch.empty(0)
        self._setup_model(model, device, dnn)
        self._setup_data()
        self.seen = 0
        self.stats: list[tuple[torch.Tensor, ...]] = []
        self.jdict: list[dict] = []
        self.loss = torch.zeros(3, device=self.device)
        self.timers = tuple(Profile(device=self.device) for _ in range(3))

    def _setup_model(self, model: nn.Module | None, device: str, dnn: bool) -> None:
        """Use the training model (fp16 only on CUDA) or load ``weights`` through the multi-backend loader.

        Precision (:func:`utils.precision.inference_precision`): a given model runs under the policy chosen here
        (not logged: the trainer logged its own, identical choice) and is moved to its memory format; a loaded one
        under ``DetectMultiBackend``'s (logged there). ``fp32`` forces plain fp32 NCHW either way.
        """
        opt = self.opt
        self.policy: PrecisionPolicy | None = None
        if self.training:
            self.device = _model_device(model)
            opt.half = bool(opt.half) and self.device.type != "cpu"
            self.model = model.half() if opt.half else model.float()
            self.pt, self.stride = True, _model_stride(model)
            self.policy = inference_precision(self.device, force_fp32=opt.fp32, log=False)
            self.policy.prepare_model(self.model)
        else:
            from models.backends import DetectMultiBackend
            from utils.ops import check_img_size

            self.device = select_device(device, batch_size=opt.batch_size)
            half = bool(opt.half) and self.device.type != "cpu"  # run()'s default half=True is silent on CPU
            self.model = DetectMultiBackend(self.weights, device=self.device, dnn=dnn, data=self.data, fp16=half,
                                            fp32=opt.fp32)
            self.pt, self.stride = self.model.pt, self.model.stride
            opt.imgsz = check_img_size(opt.imgsz, s=self.stride)
            opt.half = self.model.fp16
            if not (self.pt or getattr(self.model, "jit", False)):
                opt.batch_size = 1
                LOGGER.info(f"Forcing --batch-size 1 square inference (1,3,{opt.imgsz},{opt.imgsz}) for "
                            f"non-PyTorch models")
        self.model.eval()

    def _setup_data(self) -> None:
        """Resolve the dataset dict, class names/count, COCO mapping and (standalone) the dataloader."""
        from utils.data.dataset_yaml import check_dataset

        opt = self.opt
        if not (self.training and isinstance(self.data, dict) and "nc" in self.data):
            self.data = check_dataset(self.data)
        val_path = self.data.get("val")
        self.is_coco = isinstance(val_path, str) and val_path.endswith(f"coco{os.sep}val2017.txt")
        self.nc = 1 if opt.single_cls else int(self.data["nc"])
        self.iouv = torch.linspace(*IOU_THRESHOLDS, device=self.device)
        self.names = _names_dict(self.model, self.data)
        self.class_map = coco80_to_coco91_class() if self.is_coco else list(range(1000))
        if not self.training:
            self._check_class_count()
            self.model.warmup(imgsz=(1 if self.pt else opt.batch_size, 3, opt.imgsz, opt.imgsz))
        if self.dataloader is None:
            self.dataloader = self._make_dataloader()

    def _check_class_count(self) -> None:
        model_nc = _model_nc(getattr(self.model, "model", self.model))
        if self.pt and not self.opt.single_cls and model_nc is not None and model_nc != self.nc:
            raise ValueError(f"{self.weights} ({model_nc} classes) trained on different --data than what you passed "
                             f"({self.nc} classes). Pass correct combination of --weights and --data that are "
                             f"trained together.")

    def _make_dataloader(self) -> Any:
        from utils.data.loaders import create_dataloader

        opt = self.opt
        pad, rect = (0.0, False) if opt.task == "speed" else (0.5, self.pt)
        split = opt.task if opt.task in ("train", "val", "test") else "val"
        if not self.data.get(split):
            raise ValueError(f"dataset has no '{split}:' split to validate on (--task {opt.task})")
        return create_dataloader(self.data[split], opt.imgsz, opt.batch_size, self.stride, opt.single_cls,
                                 pad=pad, rect=rect, workers=opt.workers, prefix=colorstr(f"{split}: "),
                                 nc=int(self.data["nc"]))[0]

    @smart_inference_mode()
    def __call__(self) -> tuple[tuple, np.ndarray, tuple[float, float, float]]:
        """Run validation; return ``((mp, mr, map50, map, *val_losses), maps, speeds_ms_per_image)``."""
        from utils.metrics import ConfusionMatrix

        self.confusion_matrix = ConfusionMatrix(nc=self.nc)
        _warmup_nms(self.device)
        self.callbacks.run("on_val_start")
        for batch_i, batch in enumerate(tqdm(self.dataloader, desc=TABLE_HEADER, bar_format=BAR_FORMAT)):
            self.callbacks.run("on_val_batch_start")
            self._batch(batch_i, *batch)
        metrics = self._metrics()
        speeds = tuple(x.t / max(self.seen, 1) * 1e3 for x in self.timers)
        log_results(self, metrics, speeds)
        if self.opt.plots:
            self.confusion_matrix.plot(save_dir=self.save_dir, names=list(self.names.values()))
            self.callbacks.run("on_val_end", metrics["nt"], *[metrics[k] for k in ("tp", "fp", "p", "r", "f1")],
                               metrics["ap"], metrics["ap50"], metrics["ap_class"], self.confusion_matrix)
        if self.opt.save_json and self.jdict:
            metrics.update(finish_json(self, metrics))
        self.model.float()
        log_saved(self)
        maps = np.zeros(self.nc) + metrics["map"]
        for i, c in enumerate(metrics["ap_class"]):
            maps[int(c)] = metrics["ap"][i]
        losses = (self.loss.cpu() / max(len(self.dataloader), 1)).tolist()
        return (metrics["mp"], metrics["mr"], metrics["map50"], metrics["map"], *losses), maps, speeds

    def _batch(self, batch_i: int, im: torch.Tensor, targets: torch.Tensor, paths: Any, shapes: Any) -> None:
        """Pre-process, infer, suppress and score one batch; plot the first three when plotting."""
        with self.timers[0]:
            im = im.to(self.device, non_blocking=True)
            targets = targets.to(self.device)
            im = (im.half() if self.opt.half else im.float()) / 255
            nb, _, height, width = im.shape
        with self.timers[1]:
            preds, train_out = self._infer(im)
        if self.compute_loss is not None and train_out is not None:
            self.loss += self.compute_loss(train_out, targets)[1]
        targets[:, 2:] *= torch.tensor((width, height, width, height), device=self.device)
        hybrid = [targets[targets[:, 0] == i, 1:] for i in range(nb)] if self.opt.save_hybrid else []
        with self.timers[2]:
            preds = non_max_suppression(preds, self.opt.conf_thres, self.opt.iou_thres, labels=hybrid,
                                        multi_label=True, agnostic=self.opt.single_cls, max_det=self.opt.max_det)
        for si, pred in enumerate(preds):
            self._image(si, pred, targets[targets[:, 0] == si, 1:], im, Path(paths[si]), shapes[si])
        if self.opt.plots and batch_i < 3:
            self._plot_batch(batch_i, im, targets, paths, preds)
        self.callbacks.run("on_val_batch_end", batch_i, im, targets, paths, shapes, preds)

    def _infer(self, im: torch.Tensor) -> tuple[Any, list | None]:
        """Return ``(inference output, raw head outputs or None)``, floating tensors as fp32 (for NMS, metrics
        and the loss); raw outputs only when a loss is computed."""
        policy = self.policy
        x = policy.prepare_input(im) if policy is not None else im
        with policy.autocast() if policy is not None else contextlib.nullcontext():
            out = self.model(x, augment=True) if self.opt.augment and self.compute_loss is None else self.model(x)
        out = float_outputs(out)
        if self.compute_loss is not None:
            return (out[0], out[1]) if isinstance(out, (list, tuple)) and len(out) > 1 else (out, None)
        return out, None

    def _image(self, si: int, pred: torch.Tensor, labels: torch.Tensor, im: torch.Tensor, path: Path,
               shapes: Any) -> None:
        """Match one image's detections (n, 6) to its labels (m, 5) ``[cls, xywh px]``; record stats and outputs."""
        if self.opt.single_cls:  # also when the dataloader was built without single_cls
            labels = torch.cat((torch.zeros_like(labels[:, :1]), labels[:, 1:]), 1)
        nl, npr = labels.shape[0], pred.shape[0]
        shape0, ratio_pad = (shapes[0], shapes[1]) if shapes is not None else (im.shape[2:], None)
        correct = torch.zeros(npr, self.iouv.numel(), dtype=torch.bool, device=self.device)
        voc_correct = correct[:, 0]
        self.seen += 1
        if npr == 0:
            if nl:
                self.stats.append((correct, *torch.zeros((2, 0), device=self.device), labels[:, 0], correct[:, 0]))
                if self.opt.plots:
                    self.confusion_matrix.process_batch(detections=None, labels=labels[:, 0])
            return
        if self.opt.single_cls:
            pred[:, 5] = 0
        predn = pred.clone()
        scale_boxes(im[si].shape[1:], predn[:, :4], shape0, ratio_pad)
        if nl:
            from utils.metrics import match_detections_voc, process_batch

            label_boxes = xywh2xyxy(labels[:, 1:5])
            scale_boxes(im[si].shape[1:], label_boxes, shape0, ratio_pad)
            labelsn = torch.cat((labels[:, 0:1], label_boxes), 1)
            correct = process_batch(predn, labelsn, self.iouv)
            if self.opt.voc_ap:
                voc_correct = match_detections_voc(predn, labelsn, iou_thres=0.5)
            if self.opt.plots:
                self.confusion_matrix.process_batch(predn, labelsn)
        self.stats.append((correct, pred[:, 4], pred[:, 5], labels[:, 0], voc_correct))
        if self.opt.save_txt:
            save_txt_labels(predn, self.opt.save_conf, shape0, self.save_dir / "labels" / f"{path.stem}.txt")
        if self.opt.save_json:
            self.jdict.extend(predictions_to_coco(predn, path, self.class_map))
        self.callbacks.run("on_val_image_end", pred, predn, path, self.names, im[si])

    def _plot_batch(self, batch_i: int, im: torch.Tensor, targets: torch.Tensor, paths: Any, preds: list) -> None:
        from utils.plotting.annotate import plot_images

        plot_images(im, targets, paths, self.save_dir / f"val_batch{batch_i}_labels.jpg", self.names)
        plot_images(im, predictions_to_targets(preds, self.opt.max_det), paths,
                    self.save_dir / f"val_batch{batch_i}_pred.jpg", self.names)

    def _metrics(self) -> dict[str, Any]:
        """Return P, R, AP per class and their means from the accumulated matches (zeros when nothing matched)."""
        from utils.metrics import ap_per_class, ap_per_class_voc

        stats = [torch.cat(x, 0).cpu().numpy() for x in zip(*self.stats, strict=True)] if self.stats else \
            [np.zeros((0, self.iouv.numel()), bool), np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0, bool)]
        out: dict[str, Any] = {k: 0.0 for k in ("tp", "fp", "mp", "mr", "map50", "map")}
        out.update(p=np.zeros(0), r=np.zeros(0), f1=np.zeros(0), ap=np.zeros(0), ap50=np.zeros(0),
                   ap_class=np.zeros(0, int))
        if len(stats) and stats[0].any():
            tp, fp, p, r, f1, ap, ap_class = ap_per_class(*stats[:4], plot=self.opt.plots, save_dir=self.save_dir,
                                                          names=self.names)
            ap50, ap = ap[:, 0], ap.mean(1)
            if self.opt.voc_ap:  # VOC matching and all-point AP at IoU 0.5 replace the mAP50 column
                ap50 = ap_per_class_voc(stats[4], *stats[1:4])[0]
            out.update(tp=tp, fp=fp, p=p, r=r, f1=f1, ap=ap, ap50=ap50, ap_class=ap_class, mp=p.mean(),
                       mr=r.mean(), map50=ap50.mean(), map=ap.mean())
        out["nt"] = np.bincount(stats[3].astype(int), minlength=self.nc)
        return out


def _warmup_nms(device: torch.device) -> None:
    """Run NMS once on one box so lazy imports (torchvision) are not counted in the first batch's NMS time."""
    non_max_suppression(torch.tensor([[[8.0, 8.0, 4.0, 4.0, 1.0, 1.0]]], device=device))


def _model_device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _model_stride(model: nn.Module) -> int:
    stride = getattr(de_parallel(model), "stride", None)
    return max(int(stride.max()) if isinstance(stride, torch.Tensor) else int(stride or 32), 32)


def _model_nc(model: nn.Module) -> int | None:
    nc = getattr(model, "nc", None)
    if nc is None and hasattr(model, "model") and len(getattr(model, "model", [])):
        nc = getattr(model.model[-1], "nc", None)
    return int(nc) if nc is not None else None


def _names_dict(model: nn.Module, data: dict) -> dict[int, str]:
    names = getattr(model, "names", None) or getattr(getattr(model, "module", None), "names", None) or data["names"]
    return dict(enumerate(names)) if isinstance(names, (list, tuple)) else dict(names)


def run(data: Union[str, Path, dict], weights: Any = None, batch_size: int = 32, imgsz: int = 640,
        conf_thres: float = 0.001, iou_thres: float = 0.6, max_det: int = 300, task: str = "val", device: str = "",
        workers: int = 8, single_cls: bool = False, augment: bool = False, verbose: bool = False,
        save_txt: bool = False, save_hybrid: bool = False, save_conf: bool = False, save_json: bool = False,
        project: Union[str, Path] = ROOT / "runs/val", name: str = "exp", exist_ok: bool = False, half: bool = True,
        dnn: bool = False, model: nn.Module | None = None, dataloader: Any = None, save_dir: Path = Path(""),
        plots: bool = True, callbacks: Callbacks | None = None, compute_loss: Any = None,
        voc_ap: bool = False, fp32: bool = False) -> tuple[tuple, np.ndarray, tuple[float, float, float]]:
    """Validate a model on a dataset split; upstream ``val.run`` arguments and return value.

    Returns:
        ``((P, R, mAP50, mAP50-95, box_loss, obj_loss, cls_loss), maps, (t_pre, t_inf, t_nms))``: mean precision
        and recall over classes at the max-mean-F1 confidence, mAPs, mean validation losses (zeros without
        ``compute_loss``), maps (nc,) per-class AP50-95 (the overall mAP for classes absent from the split) and
        milliseconds per image. ``fp32=True`` forces plain fp32 NCHW inference (no CPU bf16/channels_last fast path,
        see :mod:`utils.precision`); ``half`` stays upstream's CUDA-only fp16 switch.
    """
    if model is None:
        save_dir = increment_path(Path(project) / name, exist_ok=exist_ok)
        (save_dir / "labels" if save_txt else save_dir).mkdir(parents=True, exist_ok=True)
    options = ValOptions(batch_size=batch_size, imgsz=imgsz, conf_thres=conf_thres, iou_thres=iou_thres,
                         max_det=max_det, task=task, workers=workers, single_cls=single_cls, augment=augment,
                         verbose=verbose, save_txt=save_txt or save_hybrid, save_hybrid=save_hybrid,
                         save_conf=save_conf, save_json=save_json, half=half, plots=plots, voc_ap=voc_ap, fp32=fp32)
    validator = Validator(data, weights, options, device=device, dnn=dnn, model=model, dataloader=dataloader,
                          save_dir=save_dir, callbacks=callbacks, compute_loss=compute_loss)
    return validator()
