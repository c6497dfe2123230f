"""``AutoShape`` (any-image-in, ``Detections``-out wrapper used by torch.hub), ``Detections``, and for
``model.track(frames)`` :class:`TrackedDetections`, whose boxes carry a track id as a 7th column: rows
``[x1, y1, x2, y2, conf, cls, id]`` in ``xyxy``/``pred`` (``xywh``, ``xyxyn``, ``xywhn`` likewise), so code reading
columns 0-5 keeps working; ``pandas()`` frames get an ``id`` column; ``render()``/``save()`` draw a stable colour and
the id per track. Only boxes of confirmed tracks are kept.

Not pickled; re-exported from ``models.common`` for upstream imports. Nothing here downloads: http(s) inputs are
refused with a clear error.
"""

from __future__ import annotations

import os
import sys
from copy import copy
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np
import torch
import torch.nn as nn
from PIL import Image, ImageOps

from utils.boxes import xyxy2xywh
from utils.data.augment import letterbox
from utils.files import increment_path
from utils.inference import NmsSettings, class_counts, masks_to_original, scale_to_original, to_input_tensor
from utils.logging import LOGGER, colorstr
from utils.ops import make_divisible
from utils.plotting.annotate import colors
from utils.plotting.crops import save_image, save_one_box
from utils.plotting.detections import draw_detections
from utils.plotting.masks import instance_index, overlay_masks
from utils.plotting.tracks import draw_tracks
from utils.precision import InferencePrecision, PrecisionPolicy, float_outputs
from utils.profiling import Profile
from utils.torch_utils import copy_attr, smart_inference_mode
from utils.tracking.tracker import MultiObjectTracker

ImageInput = Union[str, Path, Image.Image, np.ndarray]
XYXY_COLUMNS = ("xmin", "ymin", "xmax", "ymax", "confidence", "class", "name")
XYWH_COLUMNS = ("xcenter", "ycenter", "width", "height", "confidence", "class", "name")


def _detect_head(model: nn.Module) -> nn.Module | None:
    """Return the Detect layer of a DetectionModel (or of the one a DetectMultiBackend wraps), else None."""
    inner = getattr(model, "model", None)
    layers = getattr(inner, "model", None) if hasattr(model, "pt") else inner
    if isinstance(layers, nn.Sequential) and hasattr(type(layers[-1]), "export"):
        return layers[-1]
    return None


def load_image_input(im: ImageInput, index: int) -> tuple[np.ndarray, str]:
    """Return one AutoShape input as an HWC RGB uint8 array (3 channels) and its file name (``image{i}`` default).

    Accepts a path (str/Path), a PIL image, or a numpy array: HWC RGB, CHW (detected by ``shape[0] < 5``),
    2-D grayscale, or 4-channel RGBA (alpha dropped). PIL images and files are EXIF-transposed.
    """
    name = f"image{index}"
    if isinstance(im, (str, Path)):
        if str(im).lower().startswith(("http://", "https://")):
            raise ValueError(f"{im}: downloading images is not allowed in this project; download it yourself and "
                             f"pass the local path, a PIL image or an array.")
        if not Path(im).is_file():
            raise FileNotFoundError(f"Image not found: {im}")
        name = str(im)
        try:
            im = Image.open(im)
            im.load()
        except (OSError, SyntaxError) as e:
            raise ValueError(f"Image not readable (corrupt or unsupported): {name} ({e})") from None
    if isinstance(im, Image.Image):
        name = getattr(im, "filename", "") or name
        im = ImageOps.exif_transpose(im)
        im = np.asarray(im if im.mode in ("RGB", "L") else im.convert("RGB"))
    if not isinstance(im, np.ndarray):
        raise TypeError(f"Unsupported AutoShape input type {type(im).__name__} (index {index})")
    if im.ndim == 3 and im.shape[0] < 5:
        im = im.transpose((1, 2, 0))
    im = im[..., :3] if im.ndim == 3 else np.repeat(im[..., None], 3, axis=2)
    return np.ascontiguousarray(im), Path(name).with_suffix(".jpg").name


class AutoShape(nn.Module):
    """Wrap a detection or segmentation model so it accepts images in any common format and returns
    :class:`Detections` (with ``masks`` for a segmentation model: a ``Segment`` head, or an export with prototypes).

    Settable class/instance attributes: ``conf`` (NMS confidence threshold), ``iou`` (NMS IoU threshold),
    ``agnostic`` (class-agnostic NMS), ``multi_label``, ``classes`` (list of class ids to keep, or None),
    ``max_det`` (per image), ``amp`` (CUDA autocast), ``fp32`` (True: plain fp32 NCHW inference instead of the CPU
    fast path of :mod:`utils.precision`, bf16 autocast + channels_last where the CPU has native bf16; also
    ``torch.hub.load(..., fp32=True)`` or env ``YOLOV5_FP32=1``). The choice is logged when it is made or changed.
    """

    conf = 0.25
    iou = 0.45
    agnostic = False
    multi_label = False
    classes = None
    max_det = 1000
    amp = False
    fp32 = False

    def __init__(self, model: nn.Module, verbose: bool = True):
        super().__init__()
        if verbose:
            LOGGER.info("Adding AutoShape... ")
        copy_attr(self, model, include=("yaml", "nc", "hyp", "names", "stride", "abc"), exclude=())
        self.dmb = hasattr(model, "pt") and hasattr(model, "warmup")  # a DetectMultiBackend
        self.pt = not self.dmb or model.pt
        self.model = model.eval()
        self._precision = InferencePrecision()
        if self.dmb and getattr(model, "fp32", False):
            self.fp32 = True  # a DetectMultiBackend built with fp32=True stays fp32
        head = _detect_head(model) if self.pt else None
        self.segment = getattr(model, "task", None) == "segment" if self.dmb else hasattr(head, "nm")
        if head is not None:
            head.inplace = False
            head.export = True  # instance attribute: forward returns the decoded (B, N, 5 + nc) tensor (and protos)

    @property
    def precision(self) -> PrecisionPolicy | None:
        """The inference precision policy now in use (follows ``fp32``); None for exported (non-PyTorch) models."""
        if self.dmb:
            self.model.fp32 = self.fp32
            return self.model.precision
        return self._precision.update(self.model, self._param().device, self.fp32) if self.pt else None

    def _run_model(self, x: torch.Tensor, augment: bool) -> Any:
        """Forward ``x`` under the precision policy (a DetectMultiBackend applies it itself); fp32 outputs."""
        policy = self.precision
        if self.dmb or policy is None:
            return self.model(x, augment=augment)
        with policy.autocast():
            return float_outputs(self.model(policy.prepare_input(x), augment=augment))

    def nms_settings(self) -> NmsSettings:
        """Return the NMS thresholds now set on this wrapper (``conf``, ``iou``, ``classes``, ...)."""
        return NmsSettings(self.conf, self.iou, self.classes, self.agnostic, self.multi_label, self.max_det)

    def _param(self) -> torch.Tensor:
        return next(self.model.parameters()) if self.pt else torch.empty(1, device=self.model.device)

    @smart_inference_mode()
    def forward(self, ims: Any, size: Union[int, Sequence[int]] = 640, augment: bool = False,
                profile: bool = False) -> Any:
        """Detect objects in ``ims``.

        Args:
            ims: a (B, 3, H, W) tensor in [0, 1] (returns the raw model output, no NMS), or one image or a
                list/tuple of images accepted by :func:`load_image_input` (HWC numpy arrays are RGB).
            size: inference size, int or (h, w); the batch shape is the largest image scaled so that its long side
                is ``max(size)``, rounded up to the stride.
            augment: test-time augmentation. profile: kept for upstream compatibility.

        Returns:
            :class:`Detections` (boxes in each original image's pixels), or the raw output for tensor input.
        """
        times = (Profile(), Profile(), Profile())
        with times[0]:
            size = (size, size) if isinstance(size, int) else tuple(size)
            p = self._param()
            autocast = self.amp and p.device.type != "cpu"
            if isinstance(ims, torch.Tensor):
                with torch.autocast(p.device.type, enabled=autocast):
                    return self._run_model(ims.to(p.device).type_as(p), augment)
            ims, files, shape0, x, shape1 = self._preprocess(ims, size, p)
        with torch.autocast(p.device.type, enabled=autocast):
            with times[1]:
                y = self._run_model(x, augment)
            with times[2]:
                if self.segment:
                    dets, masks = self._segment_results(y, shape1, shape0)
                    return Detections(ims, dets, files, times, self.names, x.shape, masks=masks)
                y = self.nms_settings().apply(y if self.dmb else y[0])
                for i in range(len(ims)):
                    scale_to_original(y[i], shape1, shape0[i])
        return Detections(ims, y, files, times, self.names, x.shape)

    def _segment_results(self, y: Any, shape1: Sequence[int],
                         shape0: Sequence[Sequence[int]]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """NMS with the mask coefficients, then per image (n, 6) boxes and bool (n, h0, w0) masks in its pixels."""
        protos = y[1]
        dets = self.nms_settings().apply(y[0], nm=protos.shape[1])
        results = [masks_to_original(det, protos[i], shape1, shape0[i]) for i, det in enumerate(dets)]
        return [r[0] for r in results], [r[1] for r in results]

    def track(self, frames: Any, tracker: Any = "bytetrack", persist: bool = False,
              size: Union[int, Sequence[int]] = 640, frame_rate: float = 30.0, augment: bool = False) -> Any:
        """Detect and track objects through consecutive ``frames``.

        Args:
            frames: the frames in order (a list of anything :meth:`forward` accepts), or one frame.
            tracker: ``'bytetrack'``, ``'botsort'``, ``'ocsort'``, a tracker YAML path or a ``TrackerConfig``.
            persist: continue the tracks of the previous call (feed a live source one frame per call); False starts
                new tracks with ids from 1.
            size, augment: as for :meth:`forward`. frame_rate: frames/s (scales the tracker's lost-track buffer).

        Returns:
            :class:`TrackedDetections`: Detections whose boxes have a 7th column, the track id
            (``xyxy[i]`` rows ``[x1, y1, x2, y2, conf, cls, id]``), and ``ids[i]``.
        """
        if not persist or getattr(self, "_tracker", None) is None:
            self._tracker = MultiObjectTracker(tracker, frame_rate=frame_rate)
        return track_frames(self, frames, self._tracker, size, augment)

    def _preprocess(self, ims: Any, size: tuple, p: torch.Tensor) -> tuple:
        """Return (RGB images, file names, original shapes, BCHW batch tensor, batch (h, w))."""
        items = list(ims) if isinstance(ims, (list, tuple)) else [ims]
        loaded = [load_image_input(im, i) for i, im in enumerate(items)]
        images, files = [im for im, _ in loaded], [f for _, f in loaded]
        shape0 = [im.shape[:2] for im in images]
        scaled = [[int(dim * max(size) / max(s)) for dim in s] for s in shape0]
        if self.pt:
            shape1 = [make_divisible(int(d), int(torch.as_tensor(self.stride).max())) for d in np.max(scaled, 0)]
        else:
            shape1 = list(size)
        batch = np.stack([letterbox(im, shape1, auto=False)[0] for im in images])
        x = to_input_tensor(np.ascontiguousarray(batch.transpose((0, 3, 1, 2))), p.device, p.dtype)
        return images, files, shape0, x, shape1


def _display_available() -> bool:
    return sys.platform in ("win32", "darwin") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


class Detections:
    """Results of :class:`AutoShape` for a batch of images.

    Attributes:
        ims: list of HWC RGB uint8 images. files: their file names.
        masks: segmentation models: per image bool (n, h, w) instance masks in its pixels, aligned with ``pred``
            (drawn by ``render``/``save``/``show``); None for detection models.
        pred / xyxy: list of (n, 6) tensors ``[x1, y1, x2, y2, conf, cls]`` in pixels.
        xywh: the same as centre x, centre y, width, height. xyxyn / xywhn: divided by the image w, h.
        names: {class id: name}. times: 3 Profile objects. n: number of images.
        t: (pre-process, inference, NMS) milliseconds per image. s: BCHW shape of the inference batch.
    """

    def __init__(self, ims: list[np.ndarray], pred: list[torch.Tensor], files: list[str],
                 times: Sequence[Profile] = (0, 0, 0), names: dict | None = None, shape: Sequence | None = None,
                 masks: list[torch.Tensor] | None = None):
        self.ims, self.pred, self.files, self.times = ims, pred, files, times
        self.masks = masks
        self.names = names if names is not None else {}
        device = pred[0].device if pred else torch.device("cpu")
        gains = [torch.tensor([im.shape[1], im.shape[0], im.shape[1], im.shape[0], 1, 1], device=device)
                 for im in ims]
        self.xyxy = pred
        self.xywh = [xyxy2xywh(x) for x in pred]
        self.xyxyn = [x / g for x, g in zip(self.xyxy, gains, strict=False)]
        self.xywhn = [x / g for x, g in zip(self.xywh, gains, strict=False)]
        self.n = len(self.pred)
        self.t = tuple(getattr(x, "t", x) / max(self.n, 1) * 1e3 for x in times)
        self.s = tuple(shape) if shape is not None else ()

    def _summary(self, i: int, pred: torch.Tensor) -> str:
        im = self.ims[i]
        s = f"image {i + 1}/{self.n}: {im.shape[0]}x{im.shape[1]} "
        if not pred.shape[0]:
            return s + "(no detections)"
        return s + ", ".join(class_counts(pred, self.names))

    def _annotate(self, i: int, labels: bool) -> np.ndarray:
        image = self.ims[i]
        if self.masks is not None and len(self.masks[i]):
            colours = np.array([colors(int(c)) for c in self.pred[i][:, 5].tolist()], dtype=np.float64)
            image = overlay_masks(image, instance_index(self.masks[i].cpu().numpy()), colours)
        return draw_detections(image, self.pred[i], self.names, labels=labels, bgr=False)

    def _crops(self, i: int, save: bool, save_dir: Path | None) -> list[dict]:
        crops = []
        for *box, conf, cls in reversed(self.pred[i]):
            name = self.names[int(cls)]
            file = save_dir / "crops" / name / self.files[i] if save else None
            crops.append({"box": box, "conf": conf, "cls": cls, "label": f"{name} {conf:.2f}",
                          "im": save_one_box(box, self.ims[i], file=file, save=save)})
        return crops

    def show(self, labels: bool = True) -> None:
        """Display the annotated images (PIL viewer); on a machine without a display, warn once and do nothing."""
        if not _display_available():
            LOGGER.warning("WARNING ⚠️ Detections.show(): no display available, use .save() or .render() instead")
            return
        for i in range(self.n):
            Image.fromarray(self._annotate(i, labels)).show(self.files[i])

    def save(self, labels: bool = True, save_dir: Union[str, Path] = "runs/detect/exp",
             exist_ok: bool = False) -> Path:
        """Save annotated images as ``save_dir/files[i]`` (``save_dir`` incremented: exp, exp2, ...); return it."""
        save_dir = increment_path(save_dir, exist_ok, mkdir=True)
        for i in range(self.n):
            save_image(save_dir / self.files[i], self._annotate(i, labels), bgr=False)
        LOGGER.info(f"Saved {self.n} image{'s' * (self.n > 1)} to {colorstr('bold', save_dir)}")
        return save_dir

    def crop(self, save: bool = True, save_dir: Union[str, Path] = "runs/detect/exp",
             exist_ok: bool = False) -> list[dict]:
        """Return a dict ``{box, conf, cls, label, im}`` per detection (``im`` BGR); save ``crops/<name>/<file>``."""
        save_dir = increment_path(save_dir, exist_ok, mkdir=True) if save else None
        crops = [c for i in range(self.n) for c in self._crops(i, save, save_dir)]
        if save:
            LOGGER.info(f"Saved results to {save_dir}\n")
        return crops

    def render(self, labels: bool = True) -> list[np.ndarray]:
        """Draw the boxes into ``self.ims`` (replacing them) and return the list."""
        self.ims = [self._annotate(i, labels) for i in range(self.n)]
        return self.ims

    def pandas(self) -> Detections:
        """Return a copy whose xyxy/xyxyn/xywh/xywhn are lists of DataFrames (upstream column names)."""
        import pandas as pd

        new = copy(self)
        for key, columns in zip(("xyxy", "xyxyn", "xywh", "xywhn"),
                                (XYXY_COLUMNS, XYXY_COLUMNS, XYWH_COLUMNS, XYWH_COLUMNS), strict=False):
            frames = []
            for boxes in getattr(self, key):
                rows = [[*r[:5], int(r[5]), self.names[int(r[5])]] for r in boxes.tolist()]
                frames.append(pd.DataFrame(rows, columns=list(columns)))
            setattr(new, key, frames)
        return new

    def tolist(self) -> list[Detections]:
        """Return one single-image Detections per image."""
        return [Detections([self.ims[i]], [self.pred[i]], [self.files[i]], self.times, self.names, self.s,
                           None if self.masks is None else [self.masks[i]]) for i in range(self.n)]

    def print(self) -> None:
        """Log the per-image summary and the speed line (``str(self)``)."""
        LOGGER.info(self.__str__())

    def __len__(self) -> int:
        return self.n

    def __str__(self) -> str:
        lines = [self._summary(i, pred) for i, pred in enumerate(self.pred)]
        pre, inference, nms = self.t
        speed = f"Speed: {pre:.1f}ms pre-process, {inference:.1f}ms inference, {nms:.1f}ms NMS per image at shape "
        return "\n".join(lines) + f"\n{speed}{self.s}"

    def __repr__(self) -> str:
        return f"YOLOv5 {self.__class__} instance\n" + self.__str__()


CHUNK = 16  # frames per inference batch


class TrackedDetections(Detections):
    """:class:`Detections` of consecutive frames with a track id per box (see the module docstring).

    Attributes:
        ids: per frame, an (n,) tensor of track ids (from 1). Other attributes as :class:`Detections`.
    """

    def __init__(self, ims: list[np.ndarray], pred: list[torch.Tensor], files: list[str],
                 times: Sequence[Any] = (0, 0, 0), names: dict | None = None, shape: Sequence | None = None):
        super().__init__(ims, [p[:, :6] for p in pred], files, times, names, shape)
        self.ids = [p[:, 6] for p in pred]
        for key in ("xyxy", "xywh", "xyxyn", "xywhn"):
            setattr(self, key, [torch.cat((x, i[:, None]), 1) for x, i in zip(getattr(self, key), self.ids,
                                                                                 strict=True)])
        self.pred = self.xyxy

    def _annotate(self, i: int, labels: bool) -> np.ndarray:
        rows = self.pred[i][:, [0, 1, 2, 3, 6, 4, 5]].cpu().numpy()
        return draw_tracks(self.ims[i], rows, self.names, labels=labels, bgr=False)

    def _crops(self, i: int, save: bool, save_dir: Any) -> list[dict]:
        crops = []
        for *box, conf, cls, track_id in reversed(self.pred[i].tolist()):
            name = self.names[int(cls)]
            file = save_dir / "crops" / f"{int(track_id)}" / self.files[i] if save else None
            crops.append({"box": box, "conf": conf, "cls": cls, "id": int(track_id),
                          "label": f"id:{int(track_id)} {name} {conf:.2f}",
                          "im": save_one_box(box, self.ims[i], file=file, save=save)})
        return crops

    def pandas(self) -> TrackedDetections:
        """Return a copy whose xyxy/xyxyn/xywh/xywhn are DataFrames with an ``id`` column after ``name``."""
        new = super().pandas()
        for key in ("xyxy", "xyxyn", "xywh", "xywhn"):
            for frame, boxes in zip(getattr(new, key), getattr(self, key), strict=True):
                frame["id"] = boxes[:, 6].long().tolist()
        return new

    def tolist(self) -> list[TrackedDetections]:
        """Return one single-frame TrackedDetections per frame."""
        return [TrackedDetections([self.ims[i]], [self.pred[i]], [self.files[i]], self.times, self.names, self.s)
                for i in range(self.n)]


def track_frames(model: Any, frames: Any, tracker: MultiObjectTracker, size: Any, augment: bool) -> TrackedDetections:
    """Detect with ``model`` (an AutoShape) on ``frames`` in batches of 16, in order, and track the boxes."""
    items = list(frames) if isinstance(frames, (list, tuple)) else [frames]
    ims, files, pred, totals, shape = [], [], [], [0.0, 0.0, 0.0], ()
    for start in range(0, len(items), CHUNK):
        chunk = model(items[start:start + CHUNK], size=size, augment=augment)
        for k, det in enumerate(chunk.pred):
            tracks = tracker.update(det, np.ascontiguousarray(chunk.ims[k][..., ::-1]))
            rows = torch.from_numpy(tracks[:, [0, 1, 2, 3, 5, 6, 4]]).to(det.device)
            pred.append(rows)
        ims += chunk.ims
        files += [f"frame{start + k + 1:06d}.jpg" for k in range(len(chunk.ims))]
        totals = [total + profile.t for total, profile in zip(totals, chunk.times, strict=True)]
        shape = chunk.s
    return TrackedDetections(ims, pred, files, tuple(Profile(t) for t in totals), model.names, shape)
