"""Inference sources: image/video files, folders, globs, ``.txt`` lists, camera indices and stream URLs, screenshots.

Every loader yields upstream's 5-tuple ``(path, im, im0, vid_cap, s)``:

* ``im``: the letterboxed network input, uint8, CHW **RGB** (streams: BCHW), contiguous.
* ``im0``: the original frame, HWC **BGR** (streams: a list of them).
* ``vid_cap``: the ``cv2.VideoCapture`` of the current video, else None.
* ``s``: the log prefix, e.g. ``"image 1/2 /abs/a.jpg: "``.

Nothing here downloads: http(s) image or video files are refused with a clear error; camera and stream opens have
a time limit so a missing device or network never hangs.
"""

from __future__ import annotations

import glob
import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, Union

import cv2
import numpy as np

from utils.data.augment import letterbox
from utils.data.paths import IMG_FORMATS, VID_FORMATS
from utils.logging import LOGGER

__all__ = ["LoadImages", "LoadStreams", "LoadScreenshots", "SourceKind", "classify_source", "collect_source_files",
           "is_stream_source", "open_capture", "open_source"]

STREAM_PREFIXES = ("rtsp://", "rtmp://", "http://", "https://")
SourceType = Union[str, Path, Sequence[Union[str, Path]]]


def _suffix(path: Union[str, Path]) -> str:
    return os.path.splitext(str(path))[1][1:].lower()


def _list_file_entries(list_file: Path) -> list[str]:
    """Return the paths listed (whitespace separated) in a ``.txt`` file; relative ones fall back to its folder."""
    entries = list_file.read_text(encoding="utf-8").split()
    return [e if os.path.exists(e) or os.path.isabs(e) else str(list_file.parent / e) for e in entries]


def collect_source_files(source: SourceType) -> list[str]:
    """Expand a source (file, directory, glob, ``.txt`` list, or a list of these) to sorted absolute file paths.

    Raises:
        ValueError: an http(s) file URL (downloads are not allowed).
        FileNotFoundError: a path that does not exist (named in the message).
    """
    if isinstance(source, (str, Path)) and _suffix(source) == "txt":
        source = _list_file_entries(Path(source))
    items = sorted(map(str, source)) if isinstance(source, (list, tuple)) else [str(source)]
    files: list[str] = []
    for item in items:
        if item.lower().startswith(STREAM_PREFIXES):
            raise ValueError(f"{item}: downloading files from URLs is not allowed in this project; download it "
                             f"yourself and pass the local path (live streams are read with LoadStreams).")
        path = str(Path(item).expanduser().resolve()) if "*" not in item else item
        if "*" in path:
            files.extend(sorted(glob.glob(path, recursive=True)))
        elif os.path.isdir(path):
            files.extend(sorted(glob.glob(os.path.join(path, "*.*"))))
        elif os.path.isfile(path):
            files.append(path)
        else:
            raise FileNotFoundError(f"Source not found: {item} (resolved to {path})")
    return files


class LoadImages:
    """Iterate the images, then the videos (frame by frame, every ``vid_stride``-th frame) of a source.

    Args:
        path: file, directory, glob, ``.txt`` list of paths, or a list of these.
        img_size: letterbox target, int or (h, w). stride: model stride for ``auto`` padding.
        auto: pad only to the next stride multiple (PyTorch models) instead of the full ``img_size``.
        transforms: optional callable HWC BGR -> network input, replacing letterbox + HWC->CHW.
        vid_stride: keep every ``vid_stride``-th video frame.

    Unreadable images are skipped with a warning naming the file when the source has several files; a source that
    is a single unreadable file raises ``ValueError``.
    """

    def __init__(self, path: SourceType, img_size: Union[int, Sequence[int]] = 640, stride: int = 32,
                 auto: bool = True, transforms: Callable | None = None, vid_stride: int = 1):
        files = collect_source_files(path)
        images = [f for f in files if _suffix(f) in IMG_FORMATS]
        videos = [f for f in files if _suffix(f) in VID_FORMATS]
        self.img_size, self.stride, self.auto, self.transforms = img_size, stride, auto, transforms
        self.vid_stride = max(int(vid_stride), 1)
        self.files = images + videos
        self.nf = len(self.files)
        self.video_flag = [False] * len(images) + [True] * len(videos)
        self.mode, self.count, self.frame, self.frames, self.cap = "image", 0, 0, 0, None
        if not self.nf:
            raise FileNotFoundError(f"No images or videos found in {path}. Supported formats are:\n"
                                    f"images: {IMG_FORMATS}\nvideos: {VID_FORMATS}")
        if videos:
            self._new_video(videos[0])

    def __iter__(self) -> LoadImages:
        self.count = 0
        return self

    def __next__(self) -> tuple[str, np.ndarray, np.ndarray, Any, str]:
        while self.count < self.nf:
            path = self.files[self.count]
            if self.video_flag[self.count]:
                item = self._next_video_frame(path)
            else:
                item = self._next_image(path)
            if item is not None:
                return item
        raise StopIteration

    def _next_image(self, path: str) -> tuple[str, np.ndarray, np.ndarray, Any, str] | None:
        self.mode = "image"
        self.count += 1
        im0 = cv2.imread(path)
        if im0 is None:
            message = f"Image not readable (missing, corrupt or unsupported): {path}"
            if self.nf == 1:
                raise ValueError(message)
            LOGGER.warning(f"WARNING ⚠️ {message}, skipping")
            return None
        s = f"image {self.count}/{self.nf} {path}: "
        return path, self._to_input(im0), im0, None, s

    def _next_video_frame(self, path: str) -> tuple[str, np.ndarray, np.ndarray, Any, str] | None:
        self.mode = "video"
        if self.cap is None or self.cap_path != path:
            self._new_video(path)
        ok = self.cap.isOpened()
        for _ in range(self.vid_stride):
            ok = ok and self.cap.grab()
        ok, im0 = self.cap.retrieve() if ok else (False, None)
        if not ok:
            if self.frame == 0:
                LOGGER.warning(f"WARNING ⚠️ Video not readable (corrupt or unsupported codec): {path}, skipping")
            self.cap.release()
            self.cap = None
            self.count += 1
            return None
        self.frame += 1
        s = f"video {self.count + 1}/{self.nf} ({self.frame}/{self.frames}) {path}: "
        return path, self._to_input(im0), im0, self.cap, s

    def _new_video(self, path: str) -> None:
        self.frame = 0
        self.cap_path = path
        self.cap = cv2.VideoCapture(path)
        self.frames = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT) / self.vid_stride)
        self.orientation = int(self.cap.get(cv2.CAP_PROP_ORIENTATION_META))

    def _to_input(self, im0: np.ndarray) -> np.ndarray:
        if self.transforms:
            return self.transforms(im0)
        im = letterbox(im0, self.img_size, stride=self.stride, auto=self.auto)[0]
        return np.ascontiguousarray(im.transpose((2, 0, 1))[::-1])

    def __len__(self) -> int:
        return self.nf


def is_stream_source(source: str) -> bool:
    """Return True for a camera index (``'0'``), a ``*.streams`` list, or an rtsp/rtmp/http URL that is no file."""
    source = str(source)
    is_url = source.lower().startswith(STREAM_PREFIXES)
    is_file = _suffix(source) in (IMG_FORMATS + VID_FORMATS)
    return source.isnumeric() or source.endswith(".streams") or (is_url and not is_file)


def open_capture(source: Union[str, int], timeout: float = 10.0) -> cv2.VideoCapture:
    """Open a camera index or stream URL within ``timeout`` seconds.

    Raises:
        TimeoutError: the open did not finish in time (the attempt is abandoned in a daemon thread).
        ConnectionError: the device or stream could not be opened.
    """
    result: dict[str, cv2.VideoCapture] = {}
    msec = int(timeout * 1000)

    def _open() -> None:
        if isinstance(source, int):
            result["cap"] = cv2.VideoCapture(source)
        else:
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, msec, cv2.CAP_PROP_READ_TIMEOUT_MSEC, msec]
            result["cap"] = cv2.VideoCapture(source, cv2.CAP_ANY, params)

    worker = threading.Thread(target=_open, daemon=True)
    worker.start()
    worker.join(timeout + 1.0)
    what = f"camera {source}" if isinstance(source, int) else f"stream {source}"
    if worker.is_alive():
        raise TimeoutError(f"Timed out after {timeout:.0f}s opening {what}; check the device or network.")
    cap = result.get("cap")
    if cap is None or not cap.isOpened():
        hint = "no camera with that index on this machine" if isinstance(source, int) else "unreachable or invalid"
        raise ConnectionError(f"Failed to open {what} ({hint}).")
    return cap


class LoadStreams:
    """Read camera indices or stream URLs in background threads and yield their latest frames as one batch.

    Args:
        sources: a camera index (``'0'``), a URL, or a ``*.streams``/text file with one source per line.
        img_size, stride, auto, transforms, vid_stride: as for :class:`LoadImages`.
        timeout: seconds allowed for opening each source and reading its first frame.
    """

    def __init__(self, sources: str = "file.streams", img_size: Union[int, Sequence[int]] = 640, stride: int = 32,
                 auto: bool = True, transforms: Callable | None = None, vid_stride: int = 1,
                 timeout: float = 10.0):
        self.mode = "stream"
        self.img_size, self.stride, self.transforms = img_size, stride, transforms
        self.vid_stride = max(int(vid_stride), 1)
        sources = str(sources)
        is_list = os.path.isfile(sources) and _suffix(sources) not in (IMG_FORMATS + VID_FORMATS)
        entries = Path(sources).read_text(encoding="utf-8").split() if is_list else [sources]
        self.sources = entries
        self.imgs: list[np.ndarray] = []
        self.fps: list[float] = []
        self.frames: list[float] = []
        self.threads: list[threading.Thread] = []
        self.caps: list[cv2.VideoCapture] = []
        self._stop = threading.Event()
        for i, entry in enumerate(entries):
            self._start_source(i, entry, timeout)
        self.count = -1
        shapes = [x.shape for x in self.imgs]
        self.rect = len(set(shapes)) == 1
        self.auto = auto and self.rect
        if not self.rect:
            LOGGER.warning("WARNING ⚠️ Stream shapes differ. For optimal performance supply similarly-shaped streams.")

    def _start_source(self, i: int, entry: str, timeout: float) -> None:
        prefix = f"{i + 1}/{len(self.sources)}: {entry}... "
        if "youtube.com/" in entry or "youtu.be/" in entry:
            raise ValueError(f"{prefix}YouTube sources are not supported (they need network downloads).")
        cap = open_capture(int(entry) if entry.isnumeric() else entry, timeout)
        ok, frame = cap.read()
        if not ok or frame is None:
            cap.release()
            raise ConnectionError(f"{prefix}opened but no frame could be read.")
        width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.frames.append(max(int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), 0) or float("inf"))
        self.fps.append(max((fps if math.isfinite(fps) else 0) % 100, 0) or 30)
        self.imgs.append(frame)
        self.caps.append(cap)
        thread = threading.Thread(target=self._update, args=(i, cap, entry), daemon=True)
        self.threads.append(thread)
        LOGGER.info(f"{prefix}Success ({self.frames[i]} frames {width}x{height} at {self.fps[i]:.2f} FPS)")
        thread.start()

    def _update(self, i: int, cap: cv2.VideoCapture, entry: str) -> None:
        n = 1  # the first frame was read while opening
        while cap.isOpened() and n < self.frames[i] and not self._stop.is_set():
            n += 1
            if not cap.grab():
                break
            if n % self.vid_stride == 0:
                ok, frame = cap.retrieve()
                if ok:
                    self.imgs[i] = frame
                else:
                    LOGGER.warning(f"WARNING ⚠️ Stream {entry} unresponsive, please check the camera connection.")
                    self.imgs[i] = np.zeros_like(self.imgs[i])
            time.sleep(0.0)

    def __iter__(self) -> Iterator:
        self.count = -1
        return self

    def __next__(self) -> tuple[list[str], np.ndarray, list[np.ndarray], None, str]:
        self.count += 1
        if self.count > 0 and not all(t.is_alive() for t in self.threads):
            self.close()
            raise StopIteration
        im0 = [x.copy() for x in self.imgs]
        if self.transforms:
            im = np.stack([self.transforms(x) for x in im0])
        else:
            im = np.stack([letterbox(x, self.img_size, stride=self.stride, auto=self.auto)[0] for x in im0])
            im = np.ascontiguousarray(im[..., ::-1].transpose((0, 3, 1, 2)))
        return self.sources, im, im0, None, ""

    def close(self) -> None:
        """Stop the reader threads and release the captures."""
        self._stop.set()
        for thread in self.threads:
            thread.join(timeout=1.0)
        for cap in self.caps:
            cap.release()

    def __len__(self) -> int:
        return len(self.sources)


class LoadScreenshots:
    """Grab the screen (``'screen [number [left top width height]]'``) with the optional ``mss`` package."""

    def __init__(self, source: str, img_size: Union[int, Sequence[int]] = 640, stride: int = 32, auto: bool = True,
                 transforms: Callable | None = None):
        try:
            import mss
        except ImportError:
            raise ImportError("Screen capture needs the optional 'mss' package (pip install mss).") from None
        parts = [int(x) for x in str(source).split()[1:]]
        screen = parts[0] if parts else 0
        self.sct = mss.mss()
        if not 0 <= screen < len(self.sct.monitors):
            raise ValueError(f"Screen {screen} does not exist; this machine has {len(self.sct.monitors) - 1}.")
        monitor = self.sct.monitors[screen]
        left, top, width, height = parts[1:5] if len(parts) >= 5 else (0, 0, monitor["width"], monitor["height"])
        self.monitor = {"left": monitor["left"] + left, "top": monitor["top"] + top, "width": width, "height": height}
        self.screen, self.img_size, self.stride, self.auto, self.transforms = screen, img_size, stride, auto, transforms
        self.mode, self.frame = "stream", 0

    def __iter__(self) -> LoadScreenshots:
        return self

    def __next__(self) -> tuple[str, np.ndarray, np.ndarray, None, str]:
        im0 = np.ascontiguousarray(np.array(self.sct.grab(self.monitor))[:, :, :3])
        m = self.monitor
        s = f"screen {self.screen} (LTWH): {m['left']},{m['top']},{m['width']},{m['height']}: "
        if self.transforms:
            im = self.transforms(im0)
        else:
            im = letterbox(im0, self.img_size, stride=self.stride, auto=self.auto)[0]
            im = np.ascontiguousarray(im.transpose((2, 0, 1))[::-1])
        self.frame += 1
        return str(self.screen), im, im0, None, s


@dataclass(frozen=True)
class SourceKind:
    """What a source string names: an image/video file, a URL, a camera/stream, the screen, or a ``.txt`` list."""

    is_file: bool
    is_url: bool
    webcam: bool
    screenshot: bool
    list_file: bool


def classify_source(source: str) -> SourceKind:
    """Return the kind of ``source``; an http(s)/rtsp/rtmp URL of an image or video file raises ``ValueError``."""
    lower = source.lower()
    is_file = Path(source).suffix[1:].lower() in (IMG_FORMATS + VID_FORMATS)
    is_url = lower.startswith(STREAM_PREFIXES)
    if is_url and is_file:
        raise ValueError(f"--source {source}: downloading files is not allowed in this project; download it yourself "
                         f"and pass the local path")
    return SourceKind(is_file=is_file, is_url=is_url, webcam=is_stream_source(source),
                      screenshot=lower.startswith("screen"), list_file=source.endswith(".txt"))


def open_source(source: SourceType, img_size: Union[int, Sequence[int]] = 640, stride: int = 32, auto: bool = True,
                vid_stride: int = 1, transforms: Callable | None = None) -> LoadImages | LoadStreams | LoadScreenshots:
    """Return the loader for ``source``: streams/cameras, the screen, or files (also a list of paths).

    ``transforms`` (HWC BGR frame -> network input, e.g. a classification centre crop) replaces the letterbox.
    """
    common = dict(img_size=img_size, stride=stride, auto=auto, transforms=transforms)
    if isinstance(source, (list, tuple)):
        return LoadImages(source, vid_stride=vid_stride, **common)
    kind = classify_source(str(source))
    if kind.webcam:
        return LoadStreams(str(source), vid_stride=vid_stride, **common)
    if kind.screenshot:
        return LoadScreenshots(str(source), **common)
    return LoadImages(source, vid_stride=vid_stride, **common)
