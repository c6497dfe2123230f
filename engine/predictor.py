"""Prediction: one loop from a source (files, folders, globs, ``.txt`` lists, videos, cameras, streams, the screen,
lists of paths) through pre-processing, the model and NMS to per-frame results in original-image pixels.

``Predictor`` owns the loop and drives any number of writers (``write(result)``/``close()``); detect.py plugs in
the writers of :mod:`engine.predict_writers`, a tracker plugs in its own. :func:`predict` is the whole detect.py
run: model, run folder, writers, loop, summary.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Protocol

import torch

from engine.predict_writers import (
    BoxStyle,
    CropWriter,
    CsvWriter,
    FrameResult,
    FrameViewer,
    LabelWriter,
    MediaWriter,
    display_available,
)
from models.backends import DetectMultiBackend
from utils.checkpoint import strip_optimizer
from utils.data.sources import SourceType, classify_source, open_source
from utils.files import increment_path
from utils.inference import NmsSettings, class_counts, masks_to_original, scale_to_original, to_input_tensor
from utils.logging import LOGGER, colorstr
from utils.ops import check_img_size
from utils.profiling import Profile
from utils.torch_utils import select_device, smart_inference_mode

ROOT = Path(__file__).resolve().parents[1]

__all__ = ["PredictOptions", "PredictWriter", "Predictor", "FrameResult", "WriterKinds", "build_writers", "predict"]


@dataclass
class PredictOptions:
    """Every setting of a detect.py run, under detect.py's argument names and with its defaults.

    The :class:`Predictor` reads ``imgsz`` (int or (h, w) pixels), ``conf_thres``, ``iou_thres``, ``max_det``,
    ``classes``, ``agnostic_nms``, ``augment``, ``visualize`` and ``vid_stride``; :func:`build_writers` reads the
    ``save_*``/``view_img``/``nosave`` switches and the box style; :func:`predict` reads the rest.
    """

    weights: Any = ROOT / "yolov5s.pt"
    source: Any = ROOT / "data/images"
    data: Any = ROOT / "data/coco128.yaml"
    imgsz: Any = (640, 640)
    conf_thres: float = 0.25
    iou_thres: float = 0.45
    max_det: int = 1000
    device: str = ""
    view_img: bool = False
    save_txt: bool = False
    save_format: int = 0
    save_csv: bool = False
    save_conf: bool = False
    save_crop: bool = False
    nosave: bool = False
    classes: list[int] | None = None
    agnostic_nms: bool = False
    augment: bool = False
    visualize: bool = False
    update: bool = False
    project: Any = ROOT / "runs/detect"
    name: str = "exp"
    exist_ok: bool = False
    line_thickness: int = 3
    hide_labels: bool = False
    hide_conf: bool = False
    half: bool = False
    dnn: bool = False
    vid_stride: int = 1
    fp32: bool = False

    @property
    def nms(self) -> NmsSettings:
        """The NMS thresholds of these options."""
        return NmsSettings(self.conf_thres, self.iou_thres, self.classes, self.agnostic_nms, max_det=self.max_det)

    @property
    def style(self) -> BoxStyle:
        """How annotated images draw their boxes."""
        return BoxStyle(self.line_thickness, self.hide_labels, self.hide_conf)


class PredictWriter(Protocol):
    """An output of a prediction run: ``write`` gets every frame's result in order, ``close`` is called once."""

    def write(self, result: FrameResult) -> None:
        """Consume one frame's result (boxes in original pixels)."""

    def close(self) -> None:
        """Finish the output (flush files, release videos)."""


def _square(imgsz: Any) -> list[int]:
    """Return ``imgsz`` (int, [n] or [h, w]) as [h, w]."""
    return [imgsz, imgsz] if isinstance(imgsz, int) else list(imgsz) * (2 if len(imgsz) == 1 else 1)


class Predictor:
    """Run a built model over a source and yield one :class:`FrameResult` per frame.

    Args:
        model: a :class:`DetectMultiBackend` (``stride``, ``names``, ``pt``, ``fp16``, ``device``, ``warmup``,
            ``task``: a ``'segment'`` model yields frames with masks).
        opt: the prediction settings; ``imgsz`` is rounded up to a multiple of the model stride.
        writers: outputs driven for every frame, in order, before the frame is yielded; all closed at the end.

    Attributes:
        imgsz: [h, w] inference size. times: (pre-process, inference, NMS) :class:`Profile` timers. seen: frames.
    """

    def __init__(self, model: DetectMultiBackend, opt: PredictOptions | None = None,
                 writers: Iterable[PredictWriter] = ()):
        self.model, self.opt = model, opt or PredictOptions()
        self.writers = list(writers)
        self.imgsz = check_img_size(_square(self.opt.imgsz), s=model.stride)
        self.nms = self.opt.nms
        self.times = (Profile(device=model.device), Profile(device=model.device), Profile(device=model.device))
        self.seen = 0

    def load_source(self, source: SourceType) -> Any:
        """Return the loader for a source string/path or a list of paths, at this predictor's size and stride."""
        return open_source(source, img_size=self.imgsz, stride=self.model.stride, auto=self.model.pt,
                           vid_stride=self.opt.vid_stride)

    def warmup(self, dataset: Any) -> None:
        """Run the model's warm-up at the batch shape ``dataset`` produces."""
        batch = 1 if self.model.pt else len(getattr(dataset, "sources", [0]))
        self.model.warmup(imgsz=(batch, 3, *self.imgsz))

    @smart_inference_mode()
    def stream(self, source: Any, save_dir: Path | None = None) -> Iterator[FrameResult]:
        """Yield the result of every frame of ``source`` (a loader from :meth:`load_source`, or a source).

        Each result has gone through every writer before it is yielded. ``save_dir`` is where ``visualize``
        feature maps go. The loop runs under ``torch.inference_mode``: the yielded tensors are inference tensors
        (read them, or ``clone()`` before changing them in place). Writers and the loader are closed when the
        source is exhausted or the generator is closed.
        """
        dataset = self.load_source(source) if isinstance(source, (str, Path, list, tuple)) else source
        self.warmup(dataset)
        if (self.opt.augment or self.opt.visualize) and not self.model.pt:
            LOGGER.warning("WARNING ⚠️ --augment and --visualize need a PyTorch .pt model; ignored for this backend")
        try:
            for path, im, im0s, vid_cap, s in dataset:
                for result in self._predict_batch(path, im, im0s, vid_cap, s, dataset, save_dir):
                    self.seen += 1
                    for writer in self.writers:
                        writer.write(result)
                    LOGGER.info(self._log_line(result))
                    yield result
        finally:
            for writer in self.writers:
                writer.close()
            if hasattr(dataset, "close"):
                dataset.close()  # stop stream reader threads

    def run(self, source: Any, save_dir: Path | None = None) -> int:
        """Drive the writers over the whole source; return the number of frames."""
        for _ in self.stream(source, save_dir):
            pass
        return self.seen

    def _predict_batch(self, path: Any, im: Any, im0s: Any, vid_cap: Any, s: str, dataset: Any,
                       save_dir: Path | None) -> list[FrameResult]:
        """Pre-process, infer and NMS one loader batch; return its frames with boxes in original pixels."""
        model, opt = self.model, self.opt
        with self.times[0]:
            x = to_input_tensor(im, model.device, torch.half if model.fp16 else torch.float32)
        with self.times[1]:
            visualize = opt.visualize and model.pt and save_dir is not None
            vis = increment_path(Path(save_dir) / Path(str(path)).stem, mkdir=True) if visualize else False
            pred = model(x, augment=opt.augment, visualize=vis)
        segment = getattr(model, "task", "detect") == "segment"
        with self.times[2]:
            protos = pred[1] if segment else None
            pred = self.nms.apply(pred[0], nm=protos.shape[1]) if segment else self.nms.apply(pred)
        shape = tuple(x.shape[2:])
        names = model.names
        if isinstance(im0s, list):  # streams: one frame per source
            frames = [dict(path=path[i], im0=im0s[i], mode="stream", frame=dataset.count, index=i,
                           prefix=f"{s}{i}: ") for i in range(len(im0s))]
        else:
            frames = [dict(path=path, im0=im0s, mode=dataset.mode, frame=getattr(dataset, "frame", 0), index=0,
                           prefix=s)]
        results = []
        for i, (det, frame) in enumerate(zip(pred, frames, strict=False)):
            masks = None
            if segment:
                det, masks = masks_to_original(det, protos[i], shape, frame["im0"].shape,
                                               getattr(opt, "retina_masks", False))
            else:
                scale_to_original(det, shape, frame["im0"].shape, round_boxes=True)
            results.append(FrameResult(det=det, names=names, input_shape=shape, vid_cap=vid_cap, masks=masks,
                                       **frame))
        return results

    def _log_line(self, result: FrameResult) -> str:
        """Return ``'<prefix>HxW 2 persons, 1 tie, 12.3ms'`` for one frame (the last inference time)."""
        h, w = result.input_shape
        counts = "".join(f"{c}, " for c in class_counts(result.det, result.names))
        found = counts if len(result.det) else "(no detections), "
        return f"{result.prefix}{h}x{w} {found}{self.times[1].dt * 1e3:.1f}ms"

    def log_speed(self) -> None:
        """Log the mean pre-process, inference and NMS milliseconds per frame."""
        speeds = tuple(t.t / max(self.seen, 1) * 1e3 for t in self.times)
        LOGGER.info(f"Speed: {speeds[0]:.1f}ms pre-process, {speeds[1]:.1f}ms inference, {speeds[2]:.1f}ms NMS per "
                    f"image at shape {(1, 3, *self.imgsz)}")


@dataclass(frozen=True)
class WriterKinds:
    """The writer classes of one prediction task: text labels (built from the options and folder), CSV, crops, the
    viewer and annotated images/videos."""

    labels: Callable[[Any, Path], PredictWriter]
    csv: Callable[[Path], PredictWriter]
    crop: Callable[[Path], PredictWriter]
    viewer: Callable[[bool, Any], Any]
    media: Callable[[Path, Any], PredictWriter]


DETECT_WRITERS = WriterKinds(labels=lambda opt, folder: LabelWriter(folder, opt.save_conf, opt.save_format),
                             csv=CsvWriter, crop=CropWriter, viewer=FrameViewer, media=MediaWriter)


def build_writers(opt: PredictOptions, save_dir: Path, save_img: bool, webcam: bool = False,
                  kinds: WriterKinds = DETECT_WRITERS, labels: bool | None = None) -> list[PredictWriter]:
    """Return the writers for ``opt`` (detect.py's by default, another task's ``kinds``): labels (``save_txt``, or
    ``labels`` when given), CSV, crops, the viewer, then annotated images/videos."""
    writers: list[PredictWriter] = []
    if opt.save_txt if labels is None else labels:
        writers.append(kinds.labels(opt, save_dir))
    if opt.save_csv:
        writers.append(kinds.csv(save_dir))
    if opt.save_crop:
        writers.append(kinds.crop(save_dir))
    viewer = kinds.viewer(opt.view_img or webcam and display_available(), opt.style)
    if viewer.enabled:
        writers.append(viewer)
    if save_img:
        writers.append(kinds.media(save_dir, opt.style))
    return writers


def predict(opt: PredictOptions) -> Path:
    """Run detection as detect.py does: load the model, open the source, write the outputs; return the run folder.

    The run folder (``project/name``, incremented unless ``exist_ok``) is created only once the weights and the
    source have been opened, so a failed start leaves nothing behind. ``fp32`` forces plain fp32 NCHW inference of
    a ``.pt`` model instead of the CPU fast path (:mod:`utils.precision`).
    """
    source = str(opt.source)
    kind = classify_source(source)
    save_img = not opt.nosave and not kind.list_file
    model = DetectMultiBackend(opt.weights, device=select_device(opt.device), dnn=opt.dnn, data=opt.data,
                               fp16=opt.half, fp32=opt.fp32)
    predictor = Predictor(model, opt)
    dataset = predictor.load_source(source)
    save_dir = increment_path(Path(opt.project) / opt.name, exist_ok=opt.exist_ok)
    (save_dir / "labels" if opt.save_txt else save_dir).mkdir(parents=True, exist_ok=True)
    predictor.writers = build_writers(opt, save_dir, save_img, kind.webcam)
    predictor.run(dataset, save_dir)
    predictor.log_speed()
    if opt.save_txt or save_img:
        n = len(list(save_dir.glob("labels/*.txt")))
        labels = f"\n{n} labels saved to {save_dir / 'labels'}" if opt.save_txt else ""
        LOGGER.info(f"Results saved to {colorstr('bold', save_dir)}{labels}")
    if opt.update:
        strip_weights_copy(opt.weights, save_dir)
    return save_dir


def strip_weights_copy(weights: Any, save_dir: Path) -> None:
    """Write optimizer-stripped copies of the ``.pt`` weights into ``save_dir`` (the originals stay untouched)."""
    for w in weights if isinstance(weights, (list, tuple)) else [weights]:
        if str(w).endswith(".pt"):
            strip_optimizer(w, save_dir / Path(w).name)

