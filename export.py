"""Export a YOLOv5 ``.pt`` model to TorchScript and/or ONNX, embed its metadata and verify it against PyTorch.

Usage:
    python export.py --weights yolov5s.pt --include torchscript onnx
    python export.py --weights best.pt --include onnx --dynamic --opset 17
    python detect.py --weights yolov5s.onnx                          # run the export

Formats (``--include``): torchscript (``.torchscript``, ``config.txt`` extra file = JSON ``{shape, stride,
names}``; ``--optimize`` saves a mobile lite-interpreter file) and onnx (``.onnx``, input ``images``, output
``output0``, metadata props ``stride`` and ``names``). The other upstream formats (openvino, engine, coreml,
saved_model, pb, tflite, edgetpu, tfjs, paddle) need toolchains this project does not install; asking for one is
an error that says so. Every export is run once on a random input and its output compared with PyTorch's (the
maximum absolute difference is logged and returned). The work is done by :mod:`engine.exporter`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from engine.exporter import (
    SUPPORTED_FORMATS,
    ExportOptions,
    export_formats,
    export_model,
    export_onnx,
    export_torchscript,
    prepare_model,
    run_exported,
    verify_export,
)
from utils.logging import LOGGER

__all__ = ["SUPPORTED_FORMATS", "export_formats", "export_onnx", "export_torchscript", "main", "parse_opt",
           "prepare_model", "run", "run_exported", "verify_export"]


def run(data: Any = ROOT / "data/coco128.yaml", weights: Any = ROOT / "yolov5s.pt", imgsz: Sequence[int] = (640, 640),
        batch_size: int = 1, device: str = "cpu", include: Sequence[str] = ("torchscript", "onnx"),
        half: bool = False, inplace: bool = False, keras: bool = False, optimize: bool = False, int8: bool = False,
        per_tensor: bool = False, dynamic: bool = False, cache: str = "", simplify: bool = False,
        mlmodel: bool = False, opset: int = 12, verbose: bool = False, workspace: int = 4, nms: bool = False,
        agnostic_nms: bool = False, topk_per_class: int = 100, topk_all: int = 100, iou_thres: float = 0.45,
        conf_thres: float = 0.25) -> list[str]:
    """Export ``weights`` to the ``include`` formats; return the exported file paths (verified against PyTorch).

    The arguments are those of :class:`engine.exporter.ExportOptions`; the work is :func:`engine.exporter.export_model`.
    """
    return export_model(ExportOptions(**locals()))


def parse_opt(known: bool = False, argv: list[str] | None = None) -> argparse.Namespace:
    """Parse export.py's command line (``argv``, default ``sys.argv[1:]``; ``known``: ignore unknown flags)."""
    parser = argparse.ArgumentParser(description="Turn a .pt model into TorchScript and/or ONNX files and check them "
                                                 "against PyTorch")
    add = parser.add_argument
    add("--data", type=str, default=ROOT / "data/coco128.yaml", help="dataset YAML (accepted, unused by these formats)")
    add("--weights", nargs="+", type=str, default=ROOT / "yolov5s.pt",
        help=".pt file(s) to convert; the exports are written next to each")
    add("--imgsz", "--img", "--img-size", nargs="+", type=int, default=[640, 640],
        help="input height and width in pixels the export is traced at (one value: square)")
    add("--batch-size", type=int, default=1, help="batch dimension of the traced input")
    add("--device", default="cpu", help="where to trace: 'cpu' or a CUDA index such as 0")
    add("--half", action="store_true", help="store the export in FP16 (needs a CUDA --device)")
    add("--inplace", action="store_true", help="let the Detect head decode its boxes in place")
    add("--keras", action="store_true", help="TensorFlow Keras model (format not available here)")
    add("--optimize", action="store_true", help="TorchScript: write a mobile-optimised lite-interpreter file (CPU)")
    add("--int8", action="store_true", help="INT8 quantisation for CoreML/TF/OpenVINO (formats not available here)")
    add("--per-tensor", action="store_true", help="per-tensor TF quantisation (format not available here)")
    add("--dynamic", action="store_true", help="ONNX: batch, height and width may change at run time")
    add("--cache", type=str, default="", help="TensorRT timing cache file (format not available here)")
    add("--simplify", action="store_true", help="ONNX: slim the graph afterwards (needs onnxslim or onnxsim)")
    add("--mlmodel", action="store_true", help="CoreML: the older *.mlmodel file type (format not available here)")
    add("--opset", type=int, default=17, help="ONNX: operator set version to target")
    add("--verbose", action="store_true", help="TensorRT: detailed build log (format not available here)")
    add("--workspace", type=int, default=4, help="TensorRT: builder memory limit in GB (format not available here)")
    add("--nms", action="store_true", help="TF: build NMS into the graph (format not available here)")
    add("--agnostic-nms", action="store_true", help="TF: class-blind NMS in the graph (format not available here)")
    add("--topk-per-class", type=int, default=100, help="TF.js NMS: boxes kept per class (format not available here)")
    add("--topk-all", type=int, default=100, help="TF.js NMS: boxes kept in total (format not available here)")
    add("--iou-thres", type=float, default=0.45, help="TF.js NMS: overlap limit (format not available here)")
    add("--conf-thres", type=float, default=0.25, help="TF.js NMS: score limit (format not available here)")
    add("--include", nargs="+", default=["torchscript"], help="formats to write: torchscript and/or onnx")
    return parser.parse_known_args(argv)[0] if known else parser.parse_args(argv)


def main(opt: argparse.Namespace) -> list[str]:
    """Export every ``--weights`` file; a bad request ends the process with status 1 and a one-line error."""
    files = []
    weights = opt.weights if isinstance(opt.weights, list) else [opt.weights]
    try:
        for w in weights:
            files.extend(run(**{**vars(opt), "weights": w}))
    except (FileNotFoundError, ValueError) as e:
        LOGGER.error(f"export.py: error: {e}")
        sys.exit(1)
    return files


if __name__ == "__main__":
    main(parse_opt())
