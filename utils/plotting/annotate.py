"""Plotting: colour palette, box annotator, training-batch mosaics (``train_batch*.jpg``) and label statistics.

Nothing here downloads fonts or changes matplotlib's global backend: figures are ``matplotlib.figure.Figure``
objects rendered with the Agg canvas, and text uses OpenCV's Hershey font (or, for non-ASCII text, the DejaVu
Sans font that ships with matplotlib, else PIL's built-in bitmap font). Every file is written atomically.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Sequence, Union

import cv2
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from utils.boxes import xywh2xyxy
from utils.files import atomic_write_bytes
from utils.logging import LOGGER

PALETTE_HEX = ("FF3838", "FF9D97", "FF701F", "FFB21D", "CFD231", "48F90A", "92CC17", "3DDB86", "1A9334", "00D4BB",
               "2C99A8", "00C2FF", "344593", "6473FF", "0018EC", "8438FF", "520085", "CB38FF", "FF95C8", "FF37C7")


class Colors:
    """A 20-colour palette; ``colors(i)`` returns an RGB tuple (BGR with ``bgr=True``), cycling over the palette."""

    def __init__(self) -> None:
        self.palette = [self.hex2rgb(f"#{code}") for code in PALETTE_HEX]
        self.n = len(self.palette)

    def __call__(self, i: int, bgr: bool = False) -> tuple[int, int, int]:
        """Colour ``i`` of the palette (cycling) as an RGB, or with ``bgr`` a BGR, tuple of 0-255 ints."""
        colour = self.palette[int(i) % self.n]
        return (colour[2], colour[1], colour[0]) if bgr else colour

    @staticmethod
    def hex2rgb(code: str) -> tuple[int, int, int]:
        """Convert '#RRGGBB' to an (r, g, b) tuple of ints."""
        return tuple(int(code[1 + i:1 + i + 2], 16) for i in (0, 2, 4))


colors = Colors()


def is_ascii(text: object) -> bool:
    """True if ``str(text)`` contains only ASCII characters."""
    return all(ord(char) < 128 for char in str(text))


def _pil_font(size: int) -> ImageFont.ImageFont:
    """DejaVu Sans from matplotlib's data folder if available, else PIL's built-in font (no downloads)."""
    try:
        import matplotlib

        return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts/ttf/DejaVuSans.ttf"), size)
    except (ImportError, OSError):
        return ImageFont.load_default()


class Annotator:
    """Draw boxes, labels and text on an image (in place for contiguous uint8 HWC arrays in OpenCV mode).

    Args:
        im: HWC uint8 array (channel order is the caller's: colours are used as given) or a PIL image.
        line_width: box line width in pixels (default from the image size).
        font_size: text size in pixels for PIL mode.
        font: accepted for API compatibility; no font files are fetched.
        pil: draw with PIL (forced when ``example`` text is not ASCII).
        example: sample label text used to pick the mode.
    """

    def __init__(self, im, line_width: int | None = None, font_size: int | None = None,
                 font: str = "Arial.ttf", pil: bool = False, example: object = "abc") -> None:
        self.pil = pil or not is_ascii(example) or isinstance(im, Image.Image)
        if self.pil:
            self.im = im if isinstance(im, Image.Image) else Image.fromarray(np.ascontiguousarray(im))
            self.draw = ImageDraw.Draw(self.im)
            self.font = _pil_font(font_size or max(round(sum(self.im.size) / 2 * 0.035), 12))
            size = self.im.size
        else:
            if not im.flags.c_contiguous:
                raise ValueError("Annotator needs a contiguous image; pass np.ascontiguousarray(im)")
            self.im = im
            size = im.shape[:2]
        self.lw = line_width or max(round(sum(size) / 2 * 0.003), 2)

    def box_label(self, box: Sequence[float], label: str = "", color: Sequence[int] = (128, 128, 128),
                  txt_color: Sequence[int] = (255, 255, 255)) -> None:
        """Draw an xyxy pixel box and, if given, its label on a filled tab above (or inside) the box."""
        x1, y1, x2, y2 = (int(v) for v in box[:4])
        color, txt_color = tuple(int(c) for c in color), tuple(int(c) for c in txt_color)
        if self.pil:
            self.draw.rectangle((x1, y1, x2, y2), width=self.lw, outline=color)
            if label:
                left, top, right, bottom = self.font.getbbox(label)
                w, h = right - left, bottom - top
                outside = y1 - h >= 0
                self.draw.rectangle((x1, y1 - h if outside else y1, x1 + w + 1, y1 + 1 if outside else y1 + h + 1),
                                    fill=color)
                self.draw.text((x1, y1 - h if outside else y1), label, fill=txt_color, font=self.font)
            return
        cv2.rectangle(self.im, (x1, y1), (x2, y2), color, thickness=self.lw, lineType=cv2.LINE_AA)
        if label:
            thickness = max(self.lw - 1, 1)
            (w, h), _ = cv2.getTextSize(label, 0, fontScale=self.lw / 3, thickness=thickness)
            outside = y1 - h >= 3
            tab_bottom = y1 - h - 3 if outside else y1 + h + 3
            cv2.rectangle(self.im, (x1, y1), (x1 + w, tab_bottom), color, -1, cv2.LINE_AA)
            cv2.putText(self.im, label, (x1, y1 - 2 if outside else y1 + h + 2), 0, self.lw / 3, txt_color,
                        thickness=thickness, lineType=cv2.LINE_AA)

    def rectangle(self, xy: Sequence[float], fill=None, outline=None, width: int = 1) -> None:
        """Draw a rectangle given as [x1, y1, x2, y2] pixels (optionally filled)."""
        if self.pil:
            self.draw.rectangle([int(v) for v in xy], fill=fill, outline=outline, width=width)
            return
        p1, p2 = (int(xy[0]), int(xy[1])), (int(xy[2]), int(xy[3]))
        if fill is not None:
            cv2.rectangle(self.im, p1, p2, tuple(fill), -1)
        if outline is not None:
            cv2.rectangle(self.im, p1, p2, tuple(outline), width)

    def text(self, xy: Sequence[float], text: str, txt_color: Sequence[int] = (255, 255, 255),
             anchor: str = "top") -> None:
        """Write ``text`` with its top-left (``anchor='top'``) or bottom-left (``'bottom'``) corner at ``xy``."""
        x, y = int(xy[0]), int(xy[1])
        if self.pil:
            if anchor == "bottom":
                y -= self.font.getbbox(text)[3]
            self.draw.text((x, y), text, fill=tuple(txt_color), font=self.font)
            return
        thickness = max(self.lw - 1, 1)
        (_, h), _ = cv2.getTextSize(text, 0, fontScale=self.lw / 3, thickness=thickness)
        baseline_y = y if anchor == "bottom" else y + h
        cv2.putText(self.im, text, (x, baseline_y), 0, self.lw / 3, tuple(txt_color), thickness, cv2.LINE_AA)

    def fromarray(self, im: np.ndarray) -> None:
        """Replace the image being annotated (PIL mode converts it)."""
        self.im = Image.fromarray(im) if self.pil else im
        if self.pil:
            self.draw = ImageDraw.Draw(self.im)

    def result(self) -> np.ndarray:
        """Return the annotated image as a HWC uint8 array."""
        return np.asarray(self.im)


def write_image_atomic(path: Union[str, Path], image_rgb: np.ndarray, quality: int = 95) -> Path:
    """Encode an RGB HWC uint8 image by the file's suffix and write it via a temp file + rename."""
    path = Path(path)
    ok, encoded = cv2.imencode(path.suffix or ".jpg", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"cannot encode an image as {path.suffix}")
    atomic_write_bytes(path, encoded.tobytes())
    return path


def _as_numpy(x) -> np.ndarray:
    return x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)


def _tile_grid(images: np.ndarray, count: int, max_size: int) -> tuple[np.ndarray, int, int, int, float]:
    """Tile the first ``count`` CHW images into a square RGB grid; returns (grid, columns, tile h, tile w, scale)."""
    _, _, h, w = images.shape
    columns = math.ceil(count**0.5)
    grid = np.full((columns * h, columns * w, 3), 255, dtype=np.uint8)
    for i in range(count):
        x, y = w * (i % columns), h * (i // columns)
        grid[y:y + h, x:x + w] = images[i].transpose(1, 2, 0)
    scale = max_size / columns / max(h, w)
    if scale < 1:
        h, w = math.ceil(scale * h), math.ceil(scale * w)
        grid = cv2.resize(grid, (columns * w, columns * h))
    return grid, columns, h, w, scale


def _class_name(names, cls: int) -> object:
    """Name of class ``cls`` from a dict or list of names, or the id itself when unknown."""
    if isinstance(names, dict):
        return names.get(cls, cls)
    return names[cls] if names is not None and 0 <= cls < len(names) else cls


def _draw_targets(annotator: Annotator, targets: np.ndarray, origin: tuple[int, int], tile: tuple[int, int],
                  scale: float, names) -> None:
    """Draw one image's targets [batch, cls, x, y, w, h(, conf)] (normalised or pixels) offset to its tile."""
    boxes = xywh2xyxy(targets[:, 2:6])
    has_conf = targets.shape[1] > 6
    if len(boxes) and boxes.max() <= 1.01:  # normalised
        boxes[:, [0, 2]] *= tile[1]
        boxes[:, [1, 3]] *= tile[0]
    elif scale < 1:
        boxes *= scale
    boxes[:, [0, 2]] += origin[0]
    boxes[:, [1, 3]] += origin[1]
    for j, box in enumerate(boxes.tolist()):
        cls = int(targets[j, 1])
        if has_conf and targets[j, 6] <= 0.25:
            continue
        name = _class_name(names, cls)
        label = f"{name} {targets[j, 6]:.1f}" if has_conf else f"{name}"
        annotator.box_label(box, label, color=colors(cls))


def plot_images(images, targets, paths: Sequence[str] | None = None, fname: Union[str, Path] = "images.jpg",
                names=None, max_size: int = 1920, max_subplots: int = 16) -> Path:
    """Save a grid of up to 16 images with their boxes, class names and (for predictions) confidences.

    Args:
        images: (B, 3, H, W) RGB, uint8 range or 0-1 floats (tensor or array).
        targets: (N, 6) [image_idx, cls, x, y, w, h] or (N, 7) with a trailing confidence (only > 0.25 drawn);
            boxes normalised or in pixels of the (H, W) images.
        paths: file names written on each tile.
        names: class names (list or dict).

    Returns:
        The written file path.
    """
    images, targets = _as_numpy(images), _as_numpy(targets)
    targets = targets.reshape(-1, targets.shape[-1] if targets.ndim == 2 else 6)
    if images.size and images.max() <= 1:
        images = images * 255
    count = min(len(images), max_subplots)
    grid, columns, h, w, scale = _tile_grid(images.clip(0, 255).astype(np.uint8), count, max_size)
    font_size = max(int((h + w) * columns * 0.01), 8)
    names_text = list(names.values()) if isinstance(names, dict) else names
    annotator = Annotator(grid, line_width=max(round(font_size / 10), 1), font_size=font_size,
                          example=names_text or "abc")
    for i in range(count):
        x, y = w * (i % columns), h * (i // columns)
        annotator.rectangle([x, y, x + w, y + h], None, (255, 255, 255), width=2)
        if paths is not None and i < len(paths):
            annotator.text([x + 5, y + 5], Path(paths[i]).name[:40], txt_color=(220, 220, 220))
        if len(targets):
            _draw_targets(annotator, targets[targets[:, 0] == i], (x, y), (h, w), scale, names)
    return write_image_atomic(fname, np.ascontiguousarray(annotator.result()))


def _figure(rows: int, cols: int, size: tuple[float, float]):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=size)  # fixed margins: tight_layout costs seconds for a 4x4 grid
    FigureCanvasAgg(figure)
    figure.subplots_adjust(left=0.08, right=0.98, bottom=0.08, top=0.98, wspace=0.25, hspace=0.25)
    return figure, figure.subplots(rows, cols)


def _save_figure(figure, path: Path, dpi: int = 200) -> None:
    buffer = io.BytesIO()
    figure.savefig(buffer, format=path.suffix.lstrip(".") or "jpg", dpi=dpi)
    atomic_write_bytes(path, buffer.getvalue())


def _box_overlay(labels: np.ndarray, canvas: int = 2000, limit: int = 1000) -> np.ndarray:
    """White canvas with the first ``limit`` boxes drawn centred, to compare box shapes (RGB uint8)."""
    image = np.full((canvas, canvas, 3), 255, dtype=np.uint8)
    centred = np.concatenate((np.full((len(labels), 2), 0.5), labels[:, 3:5]), 1)
    boxes = (xywh2xyxy(centred) * canvas).astype(int)
    for cls, box in zip(labels[:limit, 0].astype(int).tolist(), boxes[:limit].tolist(), strict=True):
        cv2.rectangle(image, tuple(box[:2]), tuple(box[2:]), colors(cls), 1)
    return image


def plot_labels(labels, names=(), save_dir: Union[str, Path] = Path(""), correlogram: bool = True) -> Path:
    """Save ``labels.jpg`` (class histogram, overlaid box shapes, centre and size 2-D histograms) and optionally
    ``labels_correlogram.jpg`` for labels (N, 5) [cls, x, y, w, h] normalised. Returns the labels.jpg path."""
    labels = _as_numpy(labels).reshape(-1, 5)
    save_dir = Path(save_dir)
    LOGGER.info(f"Plotting labels to {save_dir / 'labels.jpg'}... ")
    names_list = list(names.values()) if isinstance(names, dict) else list(names)
    nc = int(labels[:, 0].max()) + 1 if len(labels) else max(len(names_list), 1)
    counts = np.bincount(labels[:, 0].astype(int), minlength=nc)
    figure, axes = _figure(2, 2, (8, 8))
    if 0 < len(names_list) < 30:  # room for the rotated class names under the histogram
        longest = max(len(str(name)) for name in names_list)
        figure.subplots_adjust(hspace=min(0.15 + 0.025 * longest, 0.6))
    axes = axes.ravel()
    axes[0].bar(range(nc), counts, color=[np.array(colors(i)) / 255 for i in range(nc)])
    axes[0].set_ylabel("instances")
    if 0 < len(names_list) < 30:
        axes[0].set_xticks(range(len(names_list)), labels=names_list, rotation=90, fontsize=10)
    else:
        axes[0].set_xlabel("classes")
    axes[1].imshow(_box_overlay(labels))
    axes[1].axis("off")
    for axis, (a, b, xlabel, ylabel) in zip(axes[2:], ((1, 2, "x", "y"), (3, 4, "width", "height")), strict=True):
        axis.hist2d(labels[:, a], labels[:, b], bins=50, range=[[0, 1], [0, 1]], cmap="Blues")
        axis.set_xlabel(xlabel)
        axis.set_ylabel(ylabel)
    _save_figure(figure, save_dir / "labels.jpg")
    if correlogram:
        _plot_correlogram(labels, save_dir / "labels_correlogram.jpg")
    return save_dir / "labels.jpg"


def _plot_correlogram(labels: np.ndarray, path: Path) -> None:
    """Pairwise 2-D histograms of x, y, width, height with 1-D histograms on the diagonal."""
    columns = ("x", "y", "width", "height")
    figure, axes = _figure(4, 4, (8, 8))
    for row in range(4):
        for col in range(4):
            axis = axes[row, col]
            if row == col:
                axis.hist(labels[:, 1 + row], bins=50, range=(0, 1), color="#3b75af")
            else:
                axis.hist2d(labels[:, 1 + col], labels[:, 1 + row], bins=40, range=[[0, 1], [0, 1]], cmap="Blues")
            axis.set_xlabel(columns[col] if row == 3 else "")
            axis.set_ylabel(columns[row] if col == 0 else "")
            if row < 3:
                axis.set_xticks([])
            if col > 0:
                axis.set_yticks([])
    _save_figure(figure, path, dpi=100)


from utils.plotting.crops import save_one_box  # noqa: E402,F401  (upstream import path)
from utils.plotting.features import feature_visualization  # noqa: E402,F401
