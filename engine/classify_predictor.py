"""Classification prediction (``classify/predict.py``): the detection :class:`engine.predictor.Predictor` loop with
the centre-crop transform instead of the letterbox, softmax instead of NMS, and classification writers.

Every source the detector reads works (images, folders, globs, ``.txt`` lists, videos, cameras, streams, the
screen). Each frame yields a :class:`engine.predict_writers.FrameResult` whose ``probs`` holds the (nc,) class
probabilities; the log line lists the top-5 classes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from engine.predict_writers import ClassifyCsvWriter, ClassifyLabelWriter, FrameResult, FrameViewer, MediaWriter
from engine.predictor import PredictOptions, Predictor
from models.backends import DetectMultiBackend
from utils.data.classify_augment import classify_transforms
from utils.data.sources import SourceType, classify_source, open_source
from utils.files import ROOT, increment_path
from utils.logging import LOGGER, colorstr
from utils.plotting.classify import top5_text
from utils.torch_utils import select_device

DEFAULT_PROJECT = ROOT / "runs" / "predict-cls"


def classify_predict_options(**kwargs: Any) -> PredictOptions:
    """Return :class:`PredictOptions` with classification defaults (224 px, ``runs/predict-cls``) and ``kwargs``."""
    defaults = {"imgsz": (224, 224), "project": DEFAULT_PROJECT, "weights": ROOT / "yolov5s-cls.pt"}
    return PredictOptions(**{**defaults, **kwargs})


class ClassifyPredictor(Predictor):
    """A :class:`Predictor` for classifiers: frames are centre-cropped to ``imgsz``, outputs softmaxed."""

    def load_source(self, source: SourceType) -> Any:
        """Return the loader for a source, producing centre-cropped, normalised network inputs."""
        return open_source(source, img_size=self.imgsz, stride=self.model.stride, auto=False,
                           vid_stride=self.opt.vid_stride, transforms=classify_transforms(self.imgsz[0]))

    def _predict_batch(self, path: Any, im: Any, im0s: Any, vid_cap: Any, s: str, dataset: Any,
                       save_dir: Path | None) -> list[FrameResult]:
        """Pre-process, infer and softmax one loader batch; return its frames with class probabilities."""
        model = self.model
        with self.times[0]:
            x = torch.as_tensor(im).to(model.device)
            x = (x[None] if x.ndim == 3 else x).to(torch.half if model.fp16 else torch.float32)
        with self.times[1]:
            logits = model(x)
        with self.times[2]:
            probs = torch.softmax(logits.float() if isinstance(logits, torch.Tensor) else logits[0].float(), 1)
        shape = tuple(x.shape[2:])
        if isinstance(im0s, list):
            frames = [dict(path=path[i], im0=im0s[i], mode="stream", frame=dataset.count, index=i,
                           prefix=f"{s}{i}: ") for i in range(len(im0s))]
        else:
            frames = [dict(path=path, im0=im0s, mode=dataset.mode, frame=getattr(dataset, "frame", 0), index=0,
                           prefix=s)]
        empty = torch.zeros((0, 6), device=probs.device)
        return [FrameResult(det=empty, names=model.names, input_shape=shape, vid_cap=vid_cap, probs=p, **frame)
                for p, frame in zip(probs, frames, strict=False)]

    def _log_line(self, result: FrameResult) -> str:
        """Return ``'<prefix>224x224 star 0.91, ring 0.05, ..., 12.3ms'``."""
        h, w = result.input_shape
        return f"{result.prefix}{h}x{w} {', '.join(top5_text(result.probs, result.names))}, " \
               f"{self.times[1].dt * 1e3:.1f}ms"

    def log_speed(self) -> None:
        """Log the mean pre-process, inference and softmax milliseconds per frame."""
        speeds = tuple(t.t / max(self.seen, 1) * 1e3 for t in self.times)
        LOGGER.info(f"Speed: {speeds[0]:.1f}ms pre-process, {speeds[1]:.1f}ms inference, {speeds[2]:.1f}ms "
                    f"post-process per image at shape {(1, 3, *self.imgsz)}")


def predict_classes(opt: PredictOptions) -> Path:
    """Run ``classify/predict.py``: load the classifier, open the source, write outputs; returns the run folder.

    Outputs: annotated images/videos (top-5 text), ``labels/<stem>.txt`` with ``--save-txt``, ``predictions.csv``
    with ``--save-csv``; the run folder is created only once the weights and the source have opened.
    """
    source = str(opt.source)
    kind = classify_source(source)
    save_img = not opt.nosave and not kind.list_file
    model = DetectMultiBackend(opt.weights, device=select_device(opt.device), dnn=opt.dnn, data=opt.data,
                               fp16=opt.half, fuse=True, fp32=opt.fp32)
    predictor = ClassifyPredictor(model, opt)
    dataset = predictor.load_source(source)
    save_dir = increment_path(Path(opt.project) / opt.name, exist_ok=opt.exist_ok)
    (save_dir / "labels" if opt.save_txt else save_dir).mkdir(parents=True, exist_ok=True)
    writers: list = [ClassifyLabelWriter(save_dir)] if opt.save_txt else []
    writers += [ClassifyCsvWriter(save_dir)] if opt.save_csv else []
    viewer = FrameViewer(opt.view_img, opt.style)
    writers += [viewer] if viewer.enabled else []
    writers += [MediaWriter(save_dir, opt.style)] if save_img else []
    predictor.writers = writers
    predictor.run(dataset, save_dir)
    predictor.log_speed()
    if opt.save_txt or save_img:
        LOGGER.info(f"Results saved to {colorstr('bold', save_dir)}")
    return save_dir
