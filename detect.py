"""Run a YOLOv5 model on images, videos, directories, globs, ``.txt`` lists, cameras and streams.

Usage:
    python detect.py --weights yolov5s.pt --source data/images        # a folder (or img.jpg, vid.mp4, 'dir/*.jpg')
    python detect.py --weights yolov5s.onnx --source video.mp4 --save-txt --save-conf
    python detect.py --weights yolov5s.torchscript --source 0          # camera 0 (clear error if there is none)

Outputs go to ``runs/detect/exp{N}``: annotated images (same file names), videos as ``.mp4``, ``labels/*.txt``
(``class x y w h [conf]``, normalised), ``predictions.csv`` and ``crops/<class>/``.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path
from typing import Any, Sequence

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import cv2
import numpy as np
import torch

from models.backends import DetectMultiBackend
from utils.boxes import scale_boxes, xyxy2xywh
from utils.plotting.crops import save_image, save_one_box
from utils.data.paths import IMG_FORMATS, VID_FORMATS
from utils.files import atomic_write_bytes, increment_path
from utils.data.sources import LoadImages, LoadScreenshots, LoadStreams, is_stream_source
from utils.logging import LOGGER, colorstr
from utils.nms import non_max_suppression
from utils.ops import check_img_size
from utils.plotting.annotate import Annotator, colors
from utils.profiling import Profile
from utils.torch_utils import select_device, smart_inference_mode

CSV_COLUMNS = ("Image Name", "Prediction", "Confidence")


def display_available() -> bool:
    """Return True when a window can be opened (a display is set and OpenCV was built with a GUI)."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    return "GUI:                           NONE" not in cv2.getBuildInformation()


class FrameViewer:
    """Show frames in OpenCV windows; on a headless machine warn once and do nothing."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and display_available()
        self.windows: list[str] = []
        if enabled and not self.enabled:
            LOGGER.warning("WARNING ⚠️ --view-img: no display available (headless machine or OpenCV without GUI); "
                           "results are saved but not shown")

    def show(self, name: str, im: np.ndarray) -> None:
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


class ResultWriter:
    """Write everything detect.py saves for one run: images, videos, txt labels, CSV rows and crops."""

    def __init__(self, save_dir: Path, opt: dict, save_img: bool):
        self.save_dir, self.opt, self.save_img = save_dir, opt, save_img
        self.videos: dict[int, tuple[str, cv2.VideoWriter, str]] = {}
        self.csv_path = save_dir / "predictions.csv"

    def label_lines(self, det: torch.Tensor, shape: Sequence[int]) -> list[str]:
        """Return txt lines ``cls x y w h [conf]`` (xywh, or xyxy with save_format=1; normalised) per detection."""
        gain = torch.tensor(shape)[[1, 0, 1, 0]].to(det.device)
        boxes = (xyxy2xywh(det[:, :4]) if self.opt["save_format"] == 0 else det[:, :4]) / gain
        lines = []
        for box, conf, cls in zip(boxes.tolist(), det[:, 4].tolist(), det[:, 5].tolist(), strict=False):
            values = (cls, *box, conf) if self.opt["save_conf"] else (cls, *box)
            lines.append(("%g " * len(values)).rstrip() % values)
        return lines

    def write_labels(self, stem: str, lines: list[str]) -> None:
        """Append lines to ``labels/<stem>.txt`` (read + atomic rewrite, so an interrupted run leaves whole files)."""
        file = self.save_dir / "labels" / f"{stem}.txt"
        old = file.read_text(encoding="utf-8") if file.exists() else ""
        atomic_write_bytes(file, (old + "".join(f"{line}\n" for line in lines)).encode("utf-8"))

    def write_csv(self, image_name: str, det: torch.Tensor, names: dict) -> None:
        new_file = not self.csv_path.exists()
        with open(self.csv_path, "a", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(CSV_COLUMNS))
            if new_file:
                writer.writeheader()
            for conf, cls in zip(det[:, 4].tolist(), det[:, 5].tolist(), strict=False):
                writer.writerow(dict(zip(CSV_COLUMNS, (image_name, names[int(cls)], f"{conf:.2f}"), strict=False)))

    def save_crops(self, det: torch.Tensor, im0: np.ndarray, stem: str, names: dict) -> None:
        for *xyxy, _, cls in det.tolist():
            save_one_box(xyxy, im0, file=self.save_dir / "crops" / names[int(cls)] / f"{stem}.jpg", BGR=True)

    def save_frame(self, index: int, mode: str, save_path: str, im0: np.ndarray, vid_cap: Any) -> None:
        """Save an annotated image, or append a frame to this source's ``.mp4`` (fourcc mp4v)."""
        if mode == "image":
            save_image(save_path, im0, bgr=True)
            return
        save_path = str(Path(save_path).with_suffix(".mp4"))
        current = self.videos.get(index)
        if current is None or current[0] != save_path:
            self._finish_video(index)
            fps = vid_cap.get(cv2.CAP_PROP_FPS) if vid_cap else 30
            fps = fps if fps and np.isfinite(fps) and fps > 0 else 30
            tmp = str(Path(save_path).with_name(f".{Path(save_path).stem}.partial.mp4"))
            writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*"mp4v"), fps, (im0.shape[1], im0.shape[0]))
            self.videos[index] = (save_path, writer, tmp)
        self.videos[index][1].write(im0)

    def _finish_video(self, index: int) -> None:
        current = self.videos.pop(index, None)
        if current is not None:
            current[1].release()
            os.replace(current[2], current[0])

    def close(self) -> None:
        for index in list(self.videos):
            self._finish_video(index)


def classify_source(source: str, nosave: bool) -> dict[str, bool]:
    """Return the source kind flags upstream uses: is_file, is_url, webcam, screenshot, save_img."""
    lower = source.lower()
    is_file = Path(source).suffix[1:].lower() in (IMG_FORMATS + VID_FORMATS)
    is_url = lower.startswith(("rtsp://", "rtmp://", "http://", "https://"))
    if is_url and is_file:
        raise ValueError(f"--source {source}: downloading files is not allowed in this project; download it yourself "
                         f"and pass the local path")
    return {"is_file": is_file, "is_url": is_url, "webcam": is_stream_source(source),
            "screenshot": lower.startswith("screen"), "save_img": not nosave and not source.endswith(".txt")}


def build_loader(source: str, kinds: dict, imgsz: Sequence[int], model: DetectMultiBackend, vid_stride: int):
    if kinds["webcam"]:
        return LoadStreams(source, img_size=imgsz, stride=model.stride, auto=model.pt, vid_stride=vid_stride)
    if kinds["screenshot"]:
        return LoadScreenshots(source, img_size=imgsz, stride=model.stride, auto=model.pt)
    return LoadImages(source, img_size=imgsz, stride=model.stride, auto=model.pt, vid_stride=vid_stride)


def preprocess(im: np.ndarray, model: DetectMultiBackend) -> torch.Tensor:
    """Return a uint8 CHW/BCHW array as a float (or half) BCHW tensor in [0, 1] on the model's device."""
    x = torch.from_numpy(im).to(model.device)
    x = (x.half() if model.fp16 else x.float()) / 255
    return x[None] if x.ndim == 3 else x


def describe(det: torch.Tensor, names: dict) -> str:
    """Return ``'2 persons, 1 tie, '`` for a detection tensor (n, 6)."""
    classes, counts = det[:, 5].unique(return_counts=True)
    pairs = zip(classes.tolist(), counts.tolist(), strict=True)
    return "".join(f"{n} {names[int(c)]}{'s' * (n > 1)}, " for c, n in pairs)


def annotate(im0: np.ndarray, det: torch.Tensor, names: dict, opt: dict) -> np.ndarray:
    """Draw boxes (and ``name conf`` labels unless hidden) on a copy of a BGR image; return it."""
    annotator = Annotator(im0.copy(), line_width=opt["line_thickness"], example=str(names))
    for *xyxy, conf, cls in reversed(det.tolist()):
        c = int(cls)
        label = None if opt["hide_labels"] else (names[c] if opt["hide_conf"] else f"{names[c]} {conf:.2f}")
        annotator.box_label(xyxy, label, color=colors(c, True))
    return np.asarray(annotator.result())


def process_image(det: torch.Tensor, item: dict, model: DetectMultiBackend, writer: ResultWriter,
                  viewer: FrameViewer, opt: dict) -> str:
    """Scale one image's detections to its original size, write every requested output; return its log text."""
    im0, p, im_shape = item["im0"], Path(item["path"]), item["shape"]
    det[:, :4] = scale_boxes(im_shape, det[:, :4], im0.shape).round()
    stem = p.stem if item["mode"] == "image" else f"{p.stem}_{item['frame']}"
    s = f"{item['s']}{im_shape[0]}x{im_shape[1]} {describe(det, model.names)}"
    ascending = det.flip(0)  # upstream writes labels, CSV rows and crops from the lowest confidence up
    if opt["save_txt"] and len(det):
        writer.write_labels(stem, writer.label_lines(ascending, im0.shape))
    if opt["save_csv"] and len(det):
        writer.write_csv(p.name, ascending, model.names)
    if opt["save_crop"] and len(det):
        writer.save_crops(ascending, im0, p.stem, model.names)
    if writer.save_img or viewer.enabled:
        annotated = annotate(im0, det, model.names, opt)
        viewer.show(str(p), annotated)
        if writer.save_img:
            writer.save_frame(item["index"], item["mode"], str(writer.save_dir / p.name), annotated, item["vid_cap"])
    return s


def batch_items(path: Any, im: torch.Tensor, im0s: Any, vid_cap: Any, s: str, dataset: Any) -> list[dict]:
    """Split one loader batch into per-image dicts (path, im0, mode, frame, log prefix, ...)."""
    if isinstance(im0s, list):  # streams: one frame per source
        return [{"index": i, "path": path[i], "im0": im0s[i], "mode": "stream", "frame": dataset.count,
                 "s": f"{s}{i}: ", "vid_cap": vid_cap, "shape": im.shape[2:]} for i in range(len(im0s))]
    return [{"index": 0, "path": path, "im0": im0s, "mode": dataset.mode, "frame": getattr(dataset, "frame", 0),
             "s": s, "vid_cap": vid_cap, "shape": im.shape[2:]}]


def summarize(seen: int, times: Sequence[Profile], imgsz: Sequence[int], save_dir: Path, opt: dict,
              save_img: bool) -> None:
    speeds = tuple(t.t / max(seen, 1) * 1e3 for t in times)
    LOGGER.info(f"Speed: {speeds[0]:.1f}ms pre-process, {speeds[1]:.1f}ms inference, {speeds[2]:.1f}ms NMS per image "
                f"at shape {(1, 3, *imgsz)}")
    if opt["save_txt"] or save_img:
        n = len(list(save_dir.glob("labels/*.txt")))
        labels = f"\n{n} labels saved to {save_dir / 'labels'}" if opt["save_txt"] else ""
        LOGGER.info(f"Results saved to {colorstr('bold', save_dir)}{labels}")


@smart_inference_mode()
def run(weights: Any = ROOT / "yolov5s.pt", source: Any = ROOT / "data/images", data: Any = ROOT / "data/coco128.yaml",
        imgsz: Any = (640, 640), conf_thres: float = 0.25, iou_thres: float = 0.45, max_det: int = 1000,
        device: str = "", view_img: bool = False, save_txt: bool = False, save_format: int = 0,
        save_csv: bool = False, save_conf: bool = False, save_crop: bool = False, nosave: bool = False,
        classes: list[int] | None = None, agnostic_nms: bool = False, augment: bool = False,
        visualize: bool = False, update: bool = False, project: Any = ROOT / "runs/detect", name: str = "exp",
        exist_ok: bool = False, line_thickness: int = 3, hide_labels: bool = False, hide_conf: bool = False,
        half: bool = False, dnn: bool = False, vid_stride: int = 1, fp32: bool = False) -> Path:
    """Detect objects in ``source`` with ``weights`` and save the results; returns the run directory.

    ``fp32=True`` (``--fp32``) forces plain fp32 NCHW inference of a ``.pt`` model instead of the CPU fast path
    (bf16 autocast + channels_last where the CPU has native bf16; see :mod:`utils.precision`).
    """
    opt = dict(locals())
    source = str(source)
    kinds = classify_source(source, nosave)
    model = DetectMultiBackend(weights, device=select_device(device), dnn=dnn, data=data, fp16=half, fp32=fp32)
    imgsz = [imgsz, imgsz] if isinstance(imgsz, int) else list(imgsz) * (2 if len(imgsz) == 1 else 1)
    imgsz = check_img_size(imgsz, s=model.stride)
    dataset = build_loader(source, kinds, imgsz, model, vid_stride)
    save_dir = increment_path(Path(project) / name, exist_ok=exist_ok)  # created only once the inputs are valid
    (save_dir / "labels" if save_txt else save_dir).mkdir(parents=True, exist_ok=True)
    model.warmup(imgsz=(1 if model.pt else len(getattr(dataset, "sources", [0])), 3, *imgsz))
    writer = ResultWriter(save_dir, opt, kinds["save_img"])
    viewer = FrameViewer(view_img or kinds["webcam"] and display_available())
    if (augment or visualize) and not model.pt:
        LOGGER.warning("WARNING ⚠️ --augment and --visualize need a PyTorch .pt model; ignored for this backend")
    seen, times = 0, (Profile(device=model.device), Profile(device=model.device), Profile(device=model.device))
    try:
        for path, im, im0s, vid_cap, s in dataset:
            with times[0]:
                x = preprocess(im, model)
            with times[1]:
                vis = increment_path(save_dir / Path(str(path)).stem, mkdir=True) if visualize and model.pt else False
                pred = model(x, augment=augment, visualize=vis)
            with times[2]:
                pred = non_max_suppression(pred, conf_thres, iou_thres, classes, agnostic_nms, max_det=max_det)
            for det, item in zip(pred, batch_items(path, x, im0s, vid_cap, s, dataset), strict=False):
                seen += 1
                log = process_image(det, item, model, writer, viewer, opt)
                LOGGER.info(f"{log}{'' if len(det) else '(no detections), '}{times[1].dt * 1e3:.1f}ms")
    finally:
        writer.close()
        if hasattr(dataset, "close"):
            dataset.close()  # stop stream reader threads
    summarize(seen, times, imgsz, save_dir, opt, kinds["save_img"])
    if update:
        strip_weights_copy(weights, save_dir)
    return save_dir


def strip_weights_copy(weights: Any, save_dir: Path) -> None:
    """``--update``: write optimizer-stripped copies of the .pt weights into the run folder (originals untouched)."""
    from utils.checkpoint import strip_optimizer

    for w in weights if isinstance(weights, (list, tuple)) else [weights]:
        if str(w).endswith(".pt"):
            strip_optimizer(w, save_dir / Path(w).name)


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="YOLOv5 inference on images, videos, folders, cameras, streams")
    parser.add_argument("--weights", nargs="+", type=str, default=ROOT / "yolov5s.pt", help="model path(s)")
    parser.add_argument("--source", type=str, default=ROOT / "data/images", help="file/dir/glob/.txt/video/0/URL")
    parser.add_argument("--data", type=str, default=ROOT / "data/coco128.yaml", help="(optional) dataset.yaml path")
    parser.add_argument("--imgsz", "--img", "--img-size", nargs="+", type=int, default=[640], help="inference size h,w")
    parser.add_argument("--conf-thres", type=float, default=0.25, help="confidence threshold")
    parser.add_argument("--iou-thres", type=float, default=0.45, help="NMS IoU threshold")
    parser.add_argument("--max-det", type=int, default=1000, help="maximum detections per image")
    parser.add_argument("--device", default="", help="cuda device, i.e. 0 or 0,1,2,3 or cpu")
    parser.add_argument("--view-img", action="store_true", help="show results")
    parser.add_argument("--save-txt", action="store_true", help="save results to *.txt")
    parser.add_argument("--save-format", type=int, default=0, help="txt boxes: 0 YOLO xywh, 1 Pascal-VOC xyxy (norm.)")
    parser.add_argument("--save-csv", action="store_true", help="save results in CSV format")
    parser.add_argument("--save-conf", action="store_true", help="save confidences in --save-txt labels")
    parser.add_argument("--save-crop", action="store_true", help="save cropped prediction boxes")
    parser.add_argument("--nosave", action="store_true", help="do not save images/videos")
    parser.add_argument("--classes", nargs="+", type=int, help="filter by class: --classes 0, or --classes 0 2 3")
    parser.add_argument("--agnostic-nms", action="store_true", help="class-agnostic NMS")
    parser.add_argument("--augment", action="store_true", help="augmented inference")
    parser.add_argument("--visualize", action="store_true", help="visualize features")
    parser.add_argument("--update", action="store_true", help="write optimizer-stripped copies of the weights")
    parser.add_argument("--project", default=ROOT / "runs/detect", help="save results to project/name")
    parser.add_argument("--name", default="exp", help="save results to project/name")
    parser.add_argument("--exist-ok", action="store_true", help="existing project/name ok, do not increment")
    parser.add_argument("--line-thickness", default=3, type=int, help="bounding box thickness (pixels)")
    parser.add_argument("--hide-labels", default=False, action="store_true", help="hide labels")
    parser.add_argument("--hide-conf", default=False, action="store_true", help="hide confidences")
    parser.add_argument("--half", action="store_true", help="use FP16 half-precision inference")
    parser.add_argument("--dnn", action="store_true", help="use OpenCV DNN for ONNX inference")
    parser.add_argument("--vid-stride", type=int, default=1, help="video frame-rate stride")
    parser.add_argument("--fp32", action="store_true", help="force plain fp32 NCHW inference (no CPU bf16/"
                        "channels_last fast path); also env YOLOV5_FP32=1")
    opt = parser.parse_args(argv)
    opt.imgsz *= 2 if len(opt.imgsz) == 1 else 1
    return opt


def main(opt: argparse.Namespace) -> None:
    try:
        run(**vars(opt))
    except (FileNotFoundError, ValueError, ConnectionError, TimeoutError, ImportError) as e:
        LOGGER.error(f"detect.py: error: {e}")
        sys.exit(1)


if __name__ == "__main__":
    main(parse_opt())
