"""What a prediction run leaves behind, one small class per output, each fed one :class:`FrameResult` at a time.

Every writer has ``write(result)`` and ``close()`` (the :class:`engine.predictor.PredictWriter` protocol):

* :class:`LabelWriter`: ``labels/<stem>.txt`` lines ``cls x y w h [conf]`` (normalised; segmentation:
  ``cls x1 y1 x2 y2 ... [conf]`` mask outlines),
* :class:`CsvWriter`: ``predictions.csv`` rows (image name, class name, confidence),
* :class:`CropWriter`: ``crops/<class>/<stem>.jpg``,
* :class:`MediaWriter`: annotated images (same file names) and videos/streams as ``.mp4``,
* :class:`FrameViewer`: annotated frames in OpenCV windows (nothing on a headless machine).

Labels, CSV rows and crops are written from the lowest confidence up.
"""

from __future__ import annotations

import csv
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from utils.boxes import xyxy2xywh
from utils.files import atomic_write_bytes
from utils.logging import LOGGER
from utils.mask_ops import masks2segments
from utils.plotting.annotate import colors
from utils.plotting.classify import draw_top5, top5_text
from utils.plotting.crops import save_image, save_one_box
from utils.plotting.detections import draw_detections
from utils.plotting.masks import instance_index, overlay_masks

CSV_COLUMNS = ("Image Name", "Prediction", "Confidence")


@dataclass(frozen=True)
class BoxStyle:
    """How boxes are drawn: line width in pixels, and whether the ``name conf`` tab shows name and confidence."""

    line_thickness: int = 3
    hide_labels: bool = False
    hide_conf: bool = False


@dataclass
class FrameResult:
    """The detections of one frame, boxes (and, for segmentation models, masks) in the original frame's pixels.

    Attributes:
        path: the file (or stream) the frame came from. im0: the original frame, HWC BGR uint8.
        det: (n, 6) ``[x1, y1, x2, y2, conf, cls]``, pixels of ``im0`` rounded to whole pixels, conf descending.
        names: {class id: name}. mode: ``'image'``, ``'video'`` or ``'stream'``.
        frame: frame number within a video (1-based) or the stream batch count. index: the source slot of a
            stream batch (0 for files). input_shape: (h, w) of the letterboxed network input.
        prefix: the loader's log text (``'image 1/2 /abs/a.jpg: '``). vid_cap: the video's ``cv2.VideoCapture``.
        masks: segmentation models only: bool (n, h0, w0) instance masks aligned with ``det`` (else None).
        tracks: what a tracking stage attached for the writers after it (``engine.tracking.FrameTracks``), else None.
        probs: classification only: (nc,) class probabilities (``det`` is then empty); annotated images show the
            top-5 classes instead of boxes.
    """

    path: str
    im0: np.ndarray
    det: torch.Tensor
    names: dict
    mode: str = "image"
    frame: int = 0
    index: int = 0
    input_shape: tuple = ()
    prefix: str = ""
    vid_cap: Any = None
    masks: torch.Tensor | None = None
    tracks: Any = None
    probs: torch.Tensor | None = None
    _annotated: dict = field(default_factory=dict, repr=False)
    _segments: list | None = field(default=None, repr=False)

    @property
    def stem(self) -> str:
        """Label file stem: the file stem for images, ``<stem>_<frame>`` for video and stream frames."""
        p = Path(self.path)
        return p.stem if self.mode == "image" else f"{p.stem}_{self.frame}"

    @property
    def segments(self) -> list[np.ndarray]:
        """Segmentation: one (k, 2) outline per detection (largest external contour of its mask), normalised by the
        frame's width and height; [] without masks."""
        if self._segments is None:
            h0, w0 = self.im0.shape[:2]
            polygons = masks2segments(self.masks) if self.masks is not None and len(self.masks) else []
            self._segments = [p / np.array([w0, h0], dtype=np.float32) for p in polygons]
        return self._segments

    def annotated(self, style: BoxStyle) -> np.ndarray:
        """Return ``im0`` with the masks (in class colours) and boxes, or the top-5 classes of a classifier, drawn in
        ``style`` (BGR; computed once per style)."""
        if style not in self._annotated and self.probs is not None:
            self._annotated[style] = draw_top5(self.im0, top5_text(self.probs, self.names))
        elif style not in self._annotated:
            image = self.im0
            if self.masks is not None and len(self.masks):
                colours = np.array([colors(int(c), bgr=True) for c in self.det[:, 5].tolist()], dtype=np.float64)
                image = overlay_masks(self.im0, instance_index(self.masks.cpu().numpy()), colours)
            self._annotated[style] = draw_detections(image, self.det, self.names, style.line_thickness,
                                                     labels=not style.hide_labels, hide_conf=style.hide_conf)
        return self._annotated[style]


class LabelWriter:
    """Append ``cls x y w h [conf]`` lines (``save_format=1``: ``cls x1 y1 x2 y2 [conf]``), normalised to [0, 1]."""

    def __init__(self, save_dir: Path, save_conf: bool = False, save_format: int = 0):
        self.folder, self.save_conf, self.save_format = Path(save_dir) / "labels", save_conf, save_format

    def lines(self, det: torch.Tensor, shape: tuple) -> list[str]:
        """Return one text line per row of ``det`` (n, 6) for an image of ``shape`` (h, w[, c])."""
        gain = torch.tensor(shape)[[1, 0, 1, 0]].to(det.device)
        boxes = (xyxy2xywh(det[:, :4]) if self.save_format == 0 else det[:, :4]) / gain
        lines = []
        for box, conf, cls in zip(boxes.tolist(), det[:, 4].tolist(), det[:, 5].tolist(), strict=False):
            values = (cls, *box, conf) if self.save_conf else (cls, *box)
            lines.append(("%g " * len(values)).rstrip() % values)
        return lines

    def polygon_lines(self, det: torch.Tensor, segments: list[np.ndarray]) -> list[str]:
        """Return ``cls x1 y1 x2 y2 ... [conf]`` lines (normalised polygon points) for ``det`` (n, 6) rows."""
        lines = []
        for polygon, conf, cls in zip(segments, det[:, 4].tolist(), det[:, 5].tolist(), strict=True):
            if len(polygon) < 3:  # a mask too small to outline: no valid polygon line
                continue
            values = (cls, *polygon.reshape(-1).tolist(), *((conf,) if self.save_conf else ()))
            lines.append(("%g " * len(values)).rstrip() % values)
        return lines

    def write(self, result: FrameResult) -> None:
        """Append the frame's lines to ``labels/<stem>.txt`` (read + atomic rewrite: files are always whole); a
        segmentation frame writes its mask outlines as YOLO polygon lines."""
        if not len(result.det):
            return
        file = self.folder / f"{result.stem}.txt"
        old = file.read_text(encoding="utf-8") if file.exists() else ""
        if result.masks is not None:
            lines = self.polygon_lines(result.det.flip(0), result.segments[::-1])
        else:
            lines = self.lines(result.det.flip(0), result.im0.shape)
        atomic_write_bytes(file, (old + "".join(f"{line}\n" for line in lines)).encode("utf-8"))

    def close(self) -> None:
        """Nothing to release (every write is complete)."""


class CsvWriter:
    """Append ``Image Name, Prediction, Confidence`` rows to ``predictions.csv`` (header on first write)."""

    def __init__(self, save_dir: Path):
        self.path = Path(save_dir) / "predictions.csv"

    def write(self, result: FrameResult) -> None:
        """Append one row per detection of the frame (confidence with two decimals)."""
        if not len(result.det):
            return
        det, name = result.det.flip(0), Path(result.path).name
        new_file = not self.path.exists()
        with open(self.path, "a", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(CSV_COLUMNS))
            if new_file:
                writer.writeheader()
            for conf, cls in zip(det[:, 4].tolist(), det[:, 5].tolist(), strict=False):
                writer.writerow(dict(zip(CSV_COLUMNS, (name, result.names[int(cls)], f"{conf:.2f}"), strict=False)))

    def close(self) -> None:
        """Nothing to release (the file is closed after every frame)."""


class ClassifyLabelWriter:
    """Classification: write ``labels/<stem>.txt`` with the top-5 ``probability name`` lines (upstream's format)."""

    def __init__(self, save_dir: Path):
        self.folder = Path(save_dir) / "labels"

    def write(self, result: FrameResult) -> None:
        """Write (video frames: append) the frame's top-5 lines, atomically."""
        values, indices = result.probs.float().topk(min(5, len(result.probs)))
        lines = "".join(f"{v:.2f} {result.names.get(int(j), j)}\n" for v, j in zip(values.tolist(), indices.tolist(),
                                                                                  strict=True))
        file = self.folder / f"{result.stem}.txt"
        old = file.read_text(encoding="utf-8") if file.exists() and result.mode != "image" else ""
        atomic_write_bytes(file, (old + lines).encode("utf-8"))

    def close(self) -> None:
        """Nothing to release (every write is complete)."""


class ClassifyCsvWriter:
    """Classification: append ``Image Name, Prediction, Confidence`` rows (the top-1 class) to ``predictions.csv``."""

    def __init__(self, save_dir: Path):
        self.path = Path(save_dir) / "predictions.csv"

    def write(self, result: FrameResult) -> None:
        """Append the frame's top-1 class and its probability (two decimals)."""
        conf, cls = result.probs.float().max(0)
        new_file = not self.path.exists()
        with open(self.path, "a", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(CSV_COLUMNS))
            if new_file:
                writer.writeheader()
            writer.writerow(dict(zip(CSV_COLUMNS, (Path(result.path).name, result.names.get(int(cls), int(cls)),
                                                   f"{float(conf):.2f}"), strict=True)))

    def close(self) -> None:
        """Nothing to release (the file is closed after every frame)."""


class CropWriter:
    """Save each detection's crop as ``crops/<class name>/<file stem>.jpg`` (numbered when the name is taken)."""

    def __init__(self, save_dir: Path):
        self.folder = Path(save_dir) / "crops"

    def write(self, result: FrameResult) -> None:
        """Save the crops of one frame."""
        stem = Path(result.path).stem
        for *xyxy, _, cls in result.det.flip(0).tolist():
            save_one_box(xyxy, result.im0, file=self.folder / result.names[int(cls)] / f"{stem}.jpg", BGR=True)

    def close(self) -> None:
        """Nothing to release."""


class MediaWriter:
    """Save annotated frames: images under their own file name, videos and streams as ``<name>.mp4`` (mp4v).

    A video is written to a hidden ``.<stem>.partial.mp4`` and renamed when it is complete (next video of the same
    source slot, or ``close()``), so an interrupted run never leaves a truncated file under the final name.
    """

    def __init__(self, save_dir: Path, style: BoxStyle = BoxStyle()):
        self.save_dir, self.style = Path(save_dir), style
        self.videos: dict[int, tuple[str, cv2.VideoWriter, str]] = {}

    def render(self, result: FrameResult) -> np.ndarray:
        """Return the frame to save (BGR): ``im0`` with the detections drawn in this writer's style."""
        return result.annotated(self.style)

    def write(self, result: FrameResult) -> None:
        """Save the annotated frame (image file, or one more frame of its source's video)."""
        im = self.render(result)
        save_path = str(self.save_dir / Path(result.path).name)
        if result.mode == "image":
            save_image(save_path, im, bgr=True)
            return
        save_path = str(Path(save_path).with_suffix(".mp4"))
        current = self.videos.get(result.index)
        if current is None or current[0] != save_path:
            self._finish_video(result.index)
            fps = result.vid_cap.get(cv2.CAP_PROP_FPS) if result.vid_cap else 30
            fps = fps if fps and np.isfinite(fps) and fps > 0 else 30
            tmp = str(Path(save_path).with_name(f".{Path(save_path).stem}.partial.mp4"))
            writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*"mp4v"), fps, (im.shape[1], im.shape[0]))
            self.videos[result.index] = (save_path, writer, tmp)
        self.videos[result.index][1].write(im)

    def _finish_video(self, index: int) -> None:
        current = self.videos.pop(index, None)
        if current is not None:
            current[1].release()
            os.replace(current[2], current[0])

    def close(self) -> None:
        """Finish every open video (release and rename to its final name)."""
        for index in list(self.videos):
            self._finish_video(index)


def display_available() -> bool:
    """Return True when a window can be opened (a display is set and OpenCV was built with a GUI)."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    return "GUI:                           NONE" not in cv2.getBuildInformation()


class FrameViewer:
    """Show annotated frames in one OpenCV window per source; on a headless machine warn once and do nothing."""

    def __init__(self, enabled: bool, style: BoxStyle = BoxStyle()):
        self.enabled, self.style = enabled and display_available(), style
        self.windows: list[str] = []
        if enabled and not self.enabled:
            LOGGER.warning("WARNING ⚠️ --view-img: no display available (headless machine or OpenCV without GUI); "
                           "results are saved but not shown")

    def render(self, result: FrameResult) -> np.ndarray:
        """Return the frame to show (BGR): ``im0`` with the detections drawn in this viewer's style."""
        return result.annotated(self.style)

    def write(self, result: FrameResult) -> None:
        """Show the annotated frame (a no-op when disabled)."""
        if self.enabled:
            self.show(str(Path(result.path)), self.render(result))

    def show(self, name: str, im: np.ndarray) -> None:
        """Show ``im`` (HWC BGR) in the window ``name``; disable the viewer if OpenCV cannot open windows."""
        if not self.enabled:
            return
        try:
            if name not in self.windows:
                self.windows.append(name)
                cv2.namedWindow(name, cv2.WINDOW_NORMAL | cv2.WINDOW_KEEPRATIO)
                cv2.resizeWindow(name, im.shape[1], im.shape[0])
            cv2.imshow(name, im)
            cv2.waitKey(1)
        except cv2.error as e:
            self.enabled = False
            LOGGER.warning(f"WARNING ⚠️ --view-img disabled, OpenCV cannot open a window: {e}")

    def close(self) -> None:
        """Leave the windows open (as OpenCV does at exit)."""
