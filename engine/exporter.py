"""Model export: TorchScript and ONNX files with embedded metadata, each checked against PyTorch on a random input.

TorchScript files carry a ``config.txt`` extra file (JSON ``{shape, stride, names[, task]}``; ``optimize`` writes
a mobile lite-interpreter file); ONNX files have input ``images``, output ``output0`` (segmentation models also
``output1``, the mask prototypes) and metadata props ``stride``, ``names`` (and ``task`` = ``segment`` for those).
The other upstream formats need toolchains this project does not install: asking for one raises ``ValueError``
saying so. Files are written atomically next to the weights.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from models.backends import EXPORT_FORMATS
from models.experimental import attempt_load
from models.yolo import Detect
from utils.files import file_size
from utils.logging import LOGGER, colorstr
from utils.ops import check_img_size
from utils.torch_utils import select_device, smart_inference_mode

ROOT = Path(__file__).resolve().parents[1]

__all__ = ["ExportOptions", "SUPPORTED_FORMATS", "export_formats", "export_model", "export_onnx", "export_torchscript",
           "prepare_model", "run_exported", "run_exported_outputs", "verify_export"]

SUPPORTED_FORMATS = ("torchscript", "onnx")
VERIFY_TOLERANCE = {torch.float32: 1e-2, torch.float16: 1.0}  # max abs diff (pixels) before a warning


def export_formats() -> Any:
    """Return upstream's format table as a pandas DataFrame (Format, Argument, Suffix, CPU, GPU)."""
    import pandas as pd

    return pd.DataFrame(list(EXPORT_FORMATS), columns=["Format", "Argument", "Suffix", "CPU", "GPU"])


@contextlib.contextmanager
def _quiet_tracing() -> Iterator[None]:
    """Silence tracer/deprecation warnings for the duration of an export only."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=UserWarning)
        yield


@contextlib.contextmanager
def _atomic_target(file: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``file`` (same suffix); move it onto ``file`` if the block succeeds."""
    fd, tmp = tempfile.mkstemp(prefix=f".{file.stem}.", suffix=file.suffix, dir=file.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        if file.exists():
            LOGGER.info(f"Overwriting existing {file}")
        os.replace(tmp, file)
    finally:
        Path(tmp).unlink(missing_ok=True)


def export_torchscript(model: torch.nn.Module, im: torch.Tensor, file: Path, optimize: bool,
                       metadata: dict) -> Path:
    """Trace ``model`` on ``im`` and save ``file.torchscript`` with a ``config.txt`` = JSON {shape, stride, names}."""
    prefix = colorstr("TorchScript:")
    LOGGER.info(f"\n{prefix} starting export with torch {torch.__version__}...")
    f = file.with_suffix(".torchscript")
    extra_files = {"config.txt": json.dumps({"shape": list(im.shape), **metadata})}
    with _quiet_tracing():
        ts = torch.jit.trace(model, im, strict=False)
        with _atomic_target(f) as tmp:
            if optimize:
                from torch.utils.mobile_optimizer import optimize_for_mobile

                optimize_for_mobile(ts)._save_for_lite_interpreter(str(tmp), _extra_files=extra_files)
            else:
                ts.save(str(tmp), _extra_files=extra_files)
    LOGGER.info(f"{prefix} export success, saved as {f} ({file_size(f):.1f} MB)")
    return f


def export_onnx(model: torch.nn.Module, im: torch.Tensor, file: Path, opset: int, dynamic: bool, simplify: bool,
                metadata: dict) -> Path:
    """Export ``file.onnx`` (input ``images``, output ``output0``, metadata props ``stride``/``names``)."""
    import onnx

    prefix = colorstr("ONNX:")
    LOGGER.info(f"\n{prefix} starting export with onnx {onnx.__version__} (opset {opset})...")
    f = file.with_suffix(".onnx")
    segment = metadata.get("task") == "segment"
    outputs = ["output0", "output1"] if segment else ["output0"]
    axes = {"images": {0: "batch", 2: "height", 3: "width"}, "output0": {0: "batch", 1: "anchors"}}
    if segment:
        axes["output1"] = {0: "batch", 2: "mask_height", 3: "mask_width"}
    with _quiet_tracing(), _atomic_target(f) as tmp:
        torch.onnx.export(model.cpu() if dynamic else model, (im.cpu() if dynamic else im,), str(tmp),
                          verbose=False, opset_version=opset, do_constant_folding=True, input_names=["images"],
                          output_names=outputs, dynamic_axes=axes if dynamic else None, dynamo=False)
        model_onnx = onnx.load(str(tmp))
        onnx.checker.check_model(model_onnx)
        model_onnx = _simplify_onnx(model_onnx, prefix) if simplify else model_onnx
        for key, value in metadata.items():
            prop = model_onnx.metadata_props.add()
            prop.key, prop.value = key, str(value)
        onnx.save(model_onnx, str(tmp))
    LOGGER.info(f"{prefix} export success, saved as {f} ({file_size(f):.1f} MB)")
    return f


def _simplify_onnx(model_onnx: Any, prefix: str) -> Any:
    """Return the model simplified with onnxslim (or onnxsim); unchanged with a warning when neither is installed."""
    try:
        import onnxslim

        LOGGER.info(f"{prefix} slimming with onnxslim {onnxslim.__version__}...")
        return onnxslim.slim(model_onnx)
    except ImportError:
        pass
    try:
        import onnxsim

        LOGGER.info(f"{prefix} simplifying with onnxsim {onnxsim.__version__}...")
        simplified, ok = onnxsim.simplify(model_onnx)
        if not ok:
            raise RuntimeError("onnxsim check failed")
        return simplified
    except ImportError:
        LOGGER.warning(f"{prefix} WARNING ⚠️ --simplify needs onnxslim or onnxsim (pip install onnxslim); "
                       f"exported without simplification")
        return model_onnx


def run_exported(f: Path, im: torch.Tensor) -> torch.Tensor:
    """Run an exported ``.torchscript`` / ``.onnx`` file on ``im`` and return its (B, N, 5 + nc [+ nm]) output."""
    return run_exported_outputs(f, im)[0]


def run_exported_outputs(f: Path, im: torch.Tensor) -> list[torch.Tensor]:
    """Run an exported file on ``im`` and return every output on the CPU (segmentation: detections, prototypes)."""
    if f.suffix == ".onnx":
        import onnxruntime

        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if im.is_cuda else ["CPUExecutionProvider"]
        session = onnxruntime.InferenceSession(str(f), providers=providers)
        dtype = np.float16 if "float16" in session.get_inputs()[0].type else np.float32
        outputs = session.run([o.name for o in session.get_outputs()], {"images": im.cpu().numpy().astype(dtype)})
        return [torch.from_numpy(y) for y in outputs]
    try:
        with _quiet_tracing():
            module = torch.jit.load(str(f), map_location=im.device)
    except RuntimeError:  # an --optimize (lite interpreter) file
        from torch.jit.mobile import _load_for_lite_interpreter

        module = _load_for_lite_interpreter(str(f))
    y = module(im)
    return [t.cpu() for t in y] if isinstance(y, (list, tuple)) else [y.cpu()]


def verify_export(f: Path, model: torch.nn.Module, im: torch.Tensor) -> float:
    """Compare an export with PyTorch on a random input shaped like ``im``; log and return the max abs diff (over
    every output: a segmentation export's detections and prototypes)."""
    x = torch.rand(im.shape, generator=torch.Generator().manual_seed(0)).to(im.device, im.dtype)
    reference = model(x)
    reference = [r.float().cpu() for r in (reference if isinstance(reference, (list, tuple)) else [reference])]
    exported = [y.float() for y in run_exported_outputs(f, x)]
    if [y.shape for y in exported] != [r.shape for r in reference]:
        raise RuntimeError(f"{f}: exported output shapes {[tuple(y.shape) for y in exported]} != PyTorch "
                           f"{[tuple(r.shape) for r in reference]}")
    diff = max(float((y - r).abs().max()) for y, r in zip(exported, reference, strict=True))
    tolerance = VERIFY_TOLERANCE.get(im.dtype, 1e-2)
    message = f"{colorstr('Verify:')} {f.name} vs PyTorch on {tuple(x.shape)}: max abs diff {diff:.3g}"
    if diff > tolerance:
        LOGGER.warning(f"{message} ⚠️ exceeds {tolerance:g}; check the export")
    else:
        LOGGER.info(f"{message} (OK, tolerance {tolerance:g})")
    return diff


def _check_request(include: Sequence[str], half: bool, dynamic: bool, device: torch.device) -> tuple[str, ...]:
    """Return the requested formats (lower case); raise ``ValueError`` for unknown, unavailable or conflicting ones."""
    requested = tuple(x.lower() for x in include)
    known = tuple(row[1] for row in EXPORT_FORMATS[1:])
    unknown = [x for x in requested if x not in known]
    if unknown:
        raise ValueError(f"--include {unknown} invalid, choose from {list(known)}")
    unsupported = [x for x in requested if x not in SUPPORTED_FORMATS]
    if unsupported:
        raise ValueError(f"--include {unsupported}: not available in this project (their toolchains are not "
                         f"installed); supported formats are {list(SUPPORTED_FORMATS)}")
    if half and device.type == "cpu":
        raise ValueError("--half only compatible with GPU export, i.e. use --device 0")
    if half and dynamic:
        raise ValueError("--half not compatible with --dynamic, i.e. use either --half or --dynamic but not both")
    return requested


def prepare_model(weights: Any, device: torch.device, imgsz: Sequence[int], batch_size: int, inplace: bool,
                  dynamic: bool, half: bool) -> tuple[torch.nn.Module, torch.Tensor, dict]:
    """Load (fused) and configure the model for export; return (model, dummy input, metadata {stride, names})."""
    model = attempt_load(weights, device=device, inplace=True, fuse=True)
    if not hasattr(model, "model") or isinstance(model, torch.nn.ModuleList):
        raise ValueError(f"{weights}: export needs one detection model (not an ensemble)")
    stride = int(max(model.stride))
    imgsz = [check_img_size(x, stride) for x in (list(imgsz) * 2 if len(imgsz) == 1 else imgsz)]
    im = torch.zeros(batch_size, 3, *imgsz, device=device)
    model.eval()
    for m in model.modules():
        if isinstance(m, Detect) or hasattr(type(m), "export"):  # Detect and extension heads with the same contract
            m.inplace, m.dynamic, m.export = inplace, dynamic, True  # instance attributes: (B, N, 5 + nc) output
    if half:
        im, model = im.half(), model.half()
    for _ in range(2):
        y = model(im)  # dry runs (also cache the grids, so tracing records one consistent graph)
    names = model.names if isinstance(model.names, dict) else dict(enumerate(model.names))
    shape = tuple((y[0] if isinstance(y, (list, tuple)) else y).shape)
    LOGGER.info(f"\n{colorstr('PyTorch:')} starting from {weights} with output shape {shape} "
                f"({file_size(weights):.1f} MB)")
    metadata = {"stride": stride, "names": names}
    if hasattr(model.model[-1], "nm"):
        metadata["task"] = "segment"  # detection exports keep upstream's exact metadata
    return model, im, metadata


@dataclass
class ExportOptions:
    """Every setting of an export.py run, under export.py's argument names and with its defaults.

    Only ``weights, imgsz, batch_size, device, include, half, inplace, optimize, dynamic, simplify, opset`` apply to
    the supported formats; the other upstream options are accepted and have no effect.
    """

    data: Any = ROOT / "data/coco128.yaml"
    weights: Any = ROOT / "yolov5s.pt"
    imgsz: Sequence[int] = (640, 640)
    batch_size: int = 1
    device: str = "cpu"
    include: Sequence[str] = ("torchscript", "onnx")
    half: bool = False
    inplace: bool = False
    keras: bool = False
    optimize: bool = False
    int8: bool = False
    per_tensor: bool = False
    dynamic: bool = False
    cache: str = ""
    simplify: bool = False
    mlmodel: bool = False
    opset: int = 12
    verbose: bool = False
    workspace: int = 4
    nms: bool = False
    agnostic_nms: bool = False
    topk_per_class: int = 100
    topk_all: int = 100
    iou_thres: float = 0.45
    conf_thres: float = 0.25


@smart_inference_mode()
def export_model(opt: ExportOptions) -> list[str]:
    """Export ``opt.weights`` to the ``opt.include`` formats next to it; return the file paths, each verified.

    Every export is run once on a random input (and, with ``dynamic``, on a taller one) and compared with PyTorch.
    """
    t0 = time.time()
    device = select_device(opt.device)
    include = _check_request(opt.include, opt.half, opt.dynamic, device)
    if opt.optimize and device.type != "cpu":
        raise ValueError("--optimize not compatible with cuda devices, i.e. use --device cpu")
    file = Path(opt.weights)
    model, im, metadata = prepare_model(file, device, opt.imgsz, opt.batch_size, opt.inplace, opt.dynamic, opt.half)
    segment = metadata.get("task") == "segment"
    script, val_script = ("segment/predict.py", "segment/val.py") if segment else ("detect.py", "val.py")
    exported = []
    if "torchscript" in include:
        exported.append(export_torchscript(model, im, file, opt.optimize, metadata))
    if "onnx" in include:
        exported.append(export_onnx(model, im, file, opt.opset, opt.dynamic, opt.simplify, metadata))
    model.to(device)
    shapes = [im] + ([torch.zeros(*im.shape[:2], im.shape[2] + 2 * metadata["stride"], im.shape[3], device=device)]
                     if opt.dynamic else [])
    for f in exported:
        for x in shapes if f.suffix == ".onnx" else shapes[:1]:
            verify_export(f, model, x)
    _log_summary(exported, time.time() - t0, script, val_script)
    return [str(f) for f in exported]


def _log_summary(exported: Sequence[Path], seconds: float, script: str = "detect.py",
                 val_script: str = "val.py") -> None:
    """Log where the exports went and how to run them."""
    if not exported:
        return
    f = exported[-1]
    LOGGER.info(f"\nExport complete ({seconds:.1f}s)\nResults saved to {colorstr('bold', f.parent.resolve())}"
                f"\nPredict:         python {script} --weights {f}"
                f"\nValidate:        python {val_script} --weights {f}"
                f"\nPyTorch Hub:     model = torch.hub.load('{ROOT}', 'custom', '{f}', source='local')")
