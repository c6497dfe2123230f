"""``DetectMultiBackend``: one inference interface over PyTorch ``.pt``, TorchScript and ONNX model files.

Not pickled; re-exported from ``models.common`` for upstream imports. ``.pt`` files are read only through the safe
loader (``attempt_load``). Class names and stride of exported models come from the metadata export.py embeds:
TorchScript ``config.txt`` (JSON ``{shape, stride, names}``) and ONNX metadata props ``stride`` and ``names``
(``str(dict)``, parsed with ``ast.literal_eval``, never ``eval``).
"""

from __future__ import annotations

import ast
import json
import warnings
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np
import torch
import torch.nn as nn

from utils.files import yaml_load
from utils.logging import LOGGER
from utils.precision import InferencePrecision, PrecisionPolicy, float_outputs

# Format, --include argument, file suffix, CPU, GPU (upstream's export_formats() table); the supported ones here
# are PyTorch, TorchScript and ONNX.
EXPORT_FORMATS = (
    ("PyTorch", "-", ".pt", True, True),
    ("TorchScript", "torchscript", ".torchscript", True, True),
    ("ONNX", "onnx", ".onnx", True, True),
    ("OpenVINO", "openvino", "_openvino_model", True, False),
    ("TensorRT", "engine", ".engine", False, True),
    ("CoreML", "coreml", ".mlpackage", True, False),
    ("TensorFlow SavedModel", "saved_model", "_saved_model", True, True),
    ("TensorFlow GraphDef", "pb", ".pb", True, True),
    ("TensorFlow Lite", "tflite", ".tflite", True, False),
    ("TensorFlow Edge TPU", "edgetpu", "_edgetpu.tflite", False, False),
    ("TensorFlow.js", "tfjs", "_web_model", False, False),
    ("PaddlePaddle", "paddle", "_paddle_model", True, True),
)
BACKEND_FLAGS = ("pt", "jit", "onnx", "xml", "engine", "coreml", "saved_model", "pb", "tflite", "edgetpu", "tfjs",
                 "paddle")
SUPPORTED_BACKENDS = ("pt", "jit", "onnx")


def model_type(path: Union[str, Path] = "path/to/model.pt") -> dict[str, bool]:
    """Return ``{flag: bool}`` for the backend flags plus ``triton`` (an http/grpc URL), from the file name."""
    name = Path(str(path)).name.lower()
    suffixes = [row[2] for row in EXPORT_FORMATS]
    hits = [name.endswith(s) for s in suffixes]
    hits[8] &= not hits[9]  # a *_edgetpu.tflite file is Edge TPU, not plain TFLite
    flags = dict(zip(BACKEND_FLAGS, hits, strict=False))
    flags["coreml"] |= name.endswith(".mlmodel")
    flags["xml"] |= name.endswith(".xml")
    flags["triton"] = not any(hits) and str(path).lower().startswith(("http://", "https://", "grpc://"))
    return flags


def _int_keys(d: dict) -> dict:
    return {int(k) if isinstance(k, str) and k.isdigit() else k: v for k, v in d.items()}


def _names_dict(names: Any) -> dict[int, str]:
    return dict(enumerate(names)) if isinstance(names, (list, tuple)) else {int(k): v for k, v in names.items()}


def _names_from_data(data: Any) -> dict[int, str] | None:
    """Return class names from a dataset YAML, or None (with a warning) when it is missing or has none."""
    if not data:
        return None
    if not Path(data).is_file():
        LOGGER.warning(f"WARNING ⚠️ --data {data} not found; using default class names class0, class1, ...")
        return None
    names = yaml_load(data).get("names")
    return _names_dict(names) if names else None


class DetectMultiBackend(nn.Module):
    """Run a detection model stored as ``.pt``, ``.torchscript`` or ``.onnx`` (onnxruntime, or OpenCV DNN).

    Args:
        weights: model file (a list of ``.pt`` files makes an ensemble).
        device: torch device for inputs and outputs.
        dnn: run ONNX with OpenCV DNN instead of onnxruntime.
        data: dataset YAML whose ``names`` are used when the model carries none.
        fp16: half precision (CUDA only; ignored with a warning on CPU).
        fuse: fuse Conv+BN of ``.pt`` models.
        threads: onnxruntime intra-op threads (0 = onnxruntime's default).
        fp32: force plain fp32 NCHW for ``.pt`` models. Otherwise a ``.pt`` model on CPU uses the CPU fast path of
            :mod:`utils.precision` (bf16 autocast + channels_last where the CPU has native bf16, else fp32
            channels_last); outputs are fp32 either way. The ``fp32`` attribute may be changed later (hub models).

    Attributes:
        task: ``'detect'`` or ``'segment'`` (a ``Segment`` head: ``forward`` returns ``[detections (B, N, 5 + nc +
        32), prototypes (B, 32, H/4, W/4)]``, plus the raw levels for ``.pt``; exports name them output0, output1).
        stride (int), names (dict), device, fp16, fp32, precision (the current ``PrecisionPolicy`` of a ``.pt``
        model, None otherwise), nhwc, model (the PyTorch/TorchScript module, or the onnxruntime session), and one
        bool per format (``pt``, ``jit``, ``onnx``, ``xml``, ``engine``, ...).
        ``forward(im)`` takes BCHW float input in [0, 1] and returns a tensor (or a list of tensors) on ``device``.
    """

    def __init__(self, weights: Union[str, Path, Sequence[Union[str, Path]]] = "yolov5s.pt",
                 device: Union[str, torch.device] = torch.device("cpu"), dnn: bool = False, data: Any = None,
                 fp16: bool = False, fuse: bool = True, threads: int = 0, fp32: bool = False):
        super().__init__()
        w = str(weights[0] if isinstance(weights, (list, tuple)) else weights)
        flags = model_type(w)
        for key, value in flags.items():
            setattr(self, key, value)
        self._check_supported(w, flags)
        self.device = torch.device(device)
        if fp16 and self.device.type == "cpu":
            LOGGER.warning("WARNING ⚠️ --half is only supported on CUDA devices; running FP32 on CPU")
        self.fp16 = bool(fp16) and self.device.type != "cpu"
        self.fp32, self._precision = bool(fp32), InferencePrecision()
        self.nhwc, self.dnn, self.stride, self.names = False, bool(dnn and self.onnx), 32, None
        self.task = "detect"  # "segment" for models with a Segment head: outputs (detections, prototypes[, raw])
        if self.pt:
            self._load_pytorch(weights, fuse)
        elif self.jit:
            self._load_torchscript(w)
        elif self.dnn:
            self._load_opencv_dnn(w)
        else:
            self._load_onnxruntime(w, threads)
        self.names = _names_dict(self.names) if self.names else (_names_from_data(data) or
                                                                 {i: f"class{i}" for i in range(999)})
        if self.pt:
            layers = getattr(self.model, "model", None)  # None for an Ensemble (detection only)
            self.task = "segment" if layers is not None and hasattr(layers[-1], "nm") else "detect"
            self._precision.update(self.model, self.device, self.fp32)

    @property
    def precision(self) -> PrecisionPolicy | None:
        """The inference precision policy of a ``.pt`` model (follows ``fp32``), else None."""
        return self._precision.update(self.model, self.device, self.fp32) if self.pt else None

    @staticmethod
    def _check_supported(w: str, flags: dict[str, bool]) -> None:
        kind = next((k for k, v in flags.items() if v), None)
        if kind not in SUPPORTED_BACKENDS:
            what = f"format '{kind}'" if kind else "an unrecognised format"
            raise ValueError(f"{w}: {what} is not supported by this build; supported model files are .pt, "
                             f".torchscript and .onnx (export with: python export.py --include torchscript onnx)")
        if not Path(w).is_file():
            raise FileNotFoundError(f"Weights file not found: {w}. Nothing is downloaded at run time: put the file "
                                    f"at {Path(w).resolve()} or pass the path of a local one with --weights")

    def _load_pytorch(self, weights: Any, fuse: bool) -> None:
        from models.experimental import attempt_load

        model = attempt_load(weights, device=self.device, inplace=True, fuse=fuse)
        self.stride = max(int(model.stride.max()), 32)
        self.names = model.module.names if hasattr(model, "module") else model.names
        self.model = model.half() if self.fp16 else model

    def _load_torchscript(self, w: str) -> None:
        LOGGER.info(f"Loading {w} for TorchScript inference...")
        extra_files = {"config.txt": ""}
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)  # torch.jit.load deprecation notice
            model = torch.jit.load(w, _extra_files=extra_files, map_location=self.device)
        self.model = model.half() if self.fp16 else model.float()
        if extra_files["config.txt"]:
            meta = json.loads(extra_files["config.txt"], object_hook=_int_keys)
            self.stride, self.names = int(meta["stride"]), meta["names"]
            self.task = meta.get("task", "detect")

    def _load_onnxruntime(self, w: str, threads: int) -> None:
        import onnxruntime

        LOGGER.info(f"Loading {w} for ONNX Runtime inference...")
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        cuda = self.device.type == "cuda" and "CUDAExecutionProvider" in onnxruntime.get_available_providers()
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda else ["CPUExecutionProvider"]
        self.session = self.model = onnxruntime.InferenceSession(w, options, providers=providers)
        self.input_name = self.session.get_inputs()[0].name
        self.input_dtype = np.float16 if "float16" in self.session.get_inputs()[0].type else np.float32
        self.output_names = [x.name for x in self.session.get_outputs()]
        self.task = "segment" if len(self.output_names) > 1 else "detect"  # output0, output1 (prototypes)
        meta = self.session.get_modelmeta().custom_metadata_map
        if "stride" in meta:
            self.stride = int(meta["stride"])
        if "names" in meta:
            self.names = ast.literal_eval(meta["names"])

    def _load_opencv_dnn(self, w: str) -> None:
        import cv2
        import onnx

        LOGGER.info(f"Loading {w} for ONNX OpenCV DNN inference...")
        self.model = cv2.dnn.readNetFromONNX(w)
        graph = onnx.load(w, load_external_data=False)
        meta = {p.key: p.value for p in graph.metadata_props}
        self.task = "segment" if len(graph.graph.output) > 1 else "detect"
        self.stride = int(meta.get("stride", 32))
        self.names = ast.literal_eval(meta["names"]) if "names" in meta else None

    def forward(self, im: torch.Tensor, augment: bool = False, visualize: Any = False):
        """Run the model on ``im`` (B, 3, H, W) float in [0, 1]; return the prediction(s) as tensors on ``device``."""
        if self.fp16 and im.dtype != torch.float16:
            im = im.half()
        if self.pt:
            policy = self.precision
            im = policy.prepare_input(im)
            with policy.autocast():
                y = self.model(im, augment=augment, visualize=visualize) if augment or visualize else self.model(im)
            y = float_outputs(y) if policy.amp else y
        elif self.jit:
            y = self.model(im)
        elif self.dnn:
            self.model.setInput(im.cpu().numpy())
            y = self.model.forward()
        else:
            y = self.session.run(self.output_names, {self.input_name: im.cpu().numpy().astype(self.input_dtype)})
        if isinstance(y, (list, tuple)):
            return self.from_numpy(y[0]) if len(y) == 1 else [self.from_numpy(x) for x in y]
        return self.from_numpy(y)

    def from_numpy(self, x: Any) -> Any:
        """Return a numpy array as a tensor on ``device``; anything else unchanged."""
        return torch.from_numpy(x).to(self.device) if isinstance(x, np.ndarray) else x

    def warmup(self, imgsz: tuple[int, int, int, int] = (1, 3, 640, 640)) -> None:
        """Run one dry inference (two for TorchScript) on CUDA devices so the first real call is not slow."""
        if self.device.type != "cpu" and (self.pt or self.jit or self.onnx):
            im = torch.empty(*imgsz, dtype=torch.half if self.fp16 else torch.float, device=self.device)
            for _ in range(2 if self.jit else 1):
                self.forward(im)
