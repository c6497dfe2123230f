"""PyTorch Hub entry points (local only; nothing downloads).

Usage:
    import torch
    model = torch.hub.load('/path/to/this/repo', 'custom', path='best.pt', source='local')
    model = torch.hub.load('/path/to/this/repo', 'yolov5s', source='local')  # needs yolov5s.pt, see below
    results = model(['im1.jpg', 'im2.jpg'])                                  # -> Detections
    results.print(); results.pandas().xyxy[0]
    classifier = torch.hub.load('/path/to/this/repo', 'custom', path='best-cls.pt', source='local')
    classifier(['im1.jpg']).probs                                            # (n, nc) class probabilities

``pretrained=True`` loads ``<name>.pt`` from the folder named by the ``YOLOV5_WEIGHTS_DIR`` environment variable or
from this repository's root; when the file is in neither place the call fails at once, saying which file to put
where. The call works from any working directory and leaves the caller's ``sys.path`` as it was; if the caller has
imported other top-level ``models``/``utils`` packages, they are put back in ``sys.modules`` afterwards.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Any, Iterator, Union

REPO = Path(__file__).resolve().parent
_PACKAGES = ("models", "utils", "extensions")
WEIGHTS_ENV = "YOLOV5_WEIGHTS_DIR"


def _from_repo(module: Any) -> bool:
    location = getattr(module, "__file__", None) or next(iter(getattr(module, "__path__", [])), "")
    return bool(location) and Path(location).resolve().is_relative_to(REPO)


@contextlib.contextmanager
def _repo_imports() -> Iterator[None]:
    """Make this repository's packages importable for the block; restore ``sys.path`` and foreign modules after.

    Our modules stay in ``sys.modules`` (the returned model's classes and lazy imports need them) unless the caller
    had its own package of the same name loaded, which is then put back.
    """
    saved_path = list(sys.path)
    foreign = {name: mod for name, mod in sys.modules.items()
               if name.split(".")[0] in _PACKAGES and not _from_repo(mod)}
    for name in foreign:
        del sys.modules[name]
    sys.path.insert(0, str(REPO))
    try:
        yield
    finally:
        sys.path[:] = saved_path
        if foreign:
            for name in [n for n in sys.modules if n.split(".")[0] in _PACKAGES]:
                del sys.modules[name]
            sys.modules.update(foreign)


def _weights_file(name: Union[str, Path]) -> Path:
    """Return the local weights file for a hub model name or path, or raise FileNotFoundError saying where to put it."""
    path = Path(name)
    path = path if path.suffix or path.is_dir() else path.with_suffix(".pt")
    candidates = [path.expanduser()]
    if not path.is_absolute() and len(path.parts) == 1:
        weights_dir = os.environ.get(WEIGHTS_ENV)
        candidates += ([Path(weights_dir) / path] if weights_dir else []) + [REPO / path]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    where = f"{WEIGHTS_ENV}={os.environ[WEIGHTS_ENV]}" if os.environ.get(WEIGHTS_ENV) else f"{WEIGHTS_ENV} (unset)"
    raise FileNotFoundError(f"{path.name} not found (looked at {', '.join(map(str, candidates))}). This project never "
                            f"downloads weights: put {path.name} in {REPO} or in the folder named by {where}, or "
                            f"pass a full path.")


def _find_cfg(stem: str) -> Path:
    matches = sorted((REPO / "models").rglob(f"{stem}.yaml"))
    if not matches:
        raise FileNotFoundError(f"No model YAML '{stem}.yaml' under {REPO / 'models'}")
    return matches[0]


def _build(name: Union[str, Path], pretrained: bool, channels: int, classes: int, autoshape: bool,
           device: Any, fp32: bool = False) -> Any:
    from models.autoshape import AutoShape
    from models.backends import DetectMultiBackend
    from models.yolo import ClassificationModel, DetectionModel
    from utils.checkpoint import extract_model, torch_safe_load
    from utils.logging import LOGGER
    from utils.torch_utils import select_device

    device = select_device(device)
    if pretrained and channels == 3 and classes == 80:
        model = DetectMultiBackend(_weights_file(name), device=device, fuse=autoshape, fp32=fp32)
        inner = model.model if model.pt else None
        classifier = isinstance(inner, ClassificationModel) or (inner is not None and hasattr(inner, "transforms")
                                                                and not isinstance(inner, DetectionModel))
        if autoshape and classifier:
            from models.autoshape_cls import AutoShapeClassify

            model = AutoShapeClassify(model)  # images in, class probabilities out
        elif autoshape:
            model = AutoShape(model)
            model.fp32 = bool(fp32)
        return model.to(device)
    model = DetectionModel(_find_cfg(Path(name).stem), channels, classes)
    if pretrained:
        checkpoint_model = extract_model(torch_safe_load(_weights_file(name)), name).float()
        state = model.state_dict()
        matched = {k: v for k, v in checkpoint_model.state_dict().items()
                   if k in state and v.shape == state[k].shape and "anchors" not in k}
        model.load_state_dict(matched, strict=False)
        LOGGER.info(f"Transferred {len(matched)}/{len(state)} items from {name}")
        names = getattr(checkpoint_model, "names", None)
        if names is not None and len(names) == classes:
            model.names = names
    return model.to(device)


def _create(name: Union[str, Path], pretrained: bool = True, channels: int = 3, classes: int = 80,
            autoshape: bool = True, verbose: bool = True, device: Any = None, fp32: bool = False) -> Any:
    """Return a YOLOv5 model: ``name`` is a hub model name (``yolov5s``) or a path to a ``.pt``/export file.

    Args:
        pretrained: load weights (from a local file; see the module docstring).
        channels, classes: input channels and class count; anything but 3/80 builds the YAML and transfers weights.
        autoshape: wrap in AutoShape (file/PIL/numpy inputs, NMS, Detections results).
        verbose: log while building (False sets the project logger to WARNING for the call).
        device: device string or torch.device (None = CUDA if available).
        fp32: plain fp32 NCHW inference instead of the CPU fast path (bf16 autocast + channels_last where the CPU
            has native bf16); changeable later with ``model.fp32 = True/False`` on the returned AutoShape model.
            Models built from a YAML (``pretrained=False`` or other channels/classes) are plain PyTorch modules.
    """
    with _repo_imports():
        from utils.logging import LOGGER

        level = LOGGER.level
        if not verbose:
            LOGGER.setLevel(logging.WARNING)
        try:
            return _build(name, pretrained, channels, classes, autoshape, device, fp32)
        except Exception as e:
            raise RuntimeError(f"{e}. See {REPO / 'README.md'} (torch.hub section) for help.") from e
        finally:
            LOGGER.setLevel(level)


def custom(path: Union[str, Path] = "path/to/model.pt", autoshape: bool = True, _verbose: bool = True,
           device: Any = None, fp32: bool = False) -> Any:
    """Load a custom or local model file (``.pt``, ``.torchscript`` or ``.onnx``); ``fp32``: see ``_create``."""
    return _create(path, autoshape=autoshape, verbose=_verbose, device=device, fp32=fp32)


def yolov5n(pretrained: bool = True, channels: int = 3, classes: int = 80, autoshape: bool = True,
            _verbose: bool = True, device: Any | None = None, fp32: bool = False) -> Any:
    """YOLOv5-nano (``yolov5n.pt``)."""
    return _create("yolov5n", pretrained, channels, classes, autoshape, _verbose, device, fp32)


def yolov5s(pretrained: bool = True, channels: int = 3, classes: int = 80, autoshape: bool = True,
            _verbose: bool = True, device: Any | None = None, fp32: bool = False) -> Any:
    """YOLOv5-small (``yolov5s.pt``)."""
    return _create("yolov5s", pretrained, channels, classes, autoshape, _verbose, device, fp32)


def yolov5m(pretrained: bool = True, channels: int = 3, classes: int = 80, autoshape: bool = True,
            _verbose: bool = True, device: Any | None = None, fp32: bool = False) -> Any:
    """YOLOv5-medium (``yolov5m.pt``)."""
    return _create("yolov5m", pretrained, channels, classes, autoshape, _verbose, device, fp32)


def yolov5l(pretrained: bool = True, channels: int = 3, classes: int = 80, autoshape: bool = True,
            _verbose: bool = True, device: Any | None = None, fp32: bool = False) -> Any:
    """YOLOv5-large (``yolov5l.pt``)."""
    return _create("yolov5l", pretrained, channels, classes, autoshape, _verbose, device, fp32)


def yolov5x(pretrained: bool = True, channels: int = 3, classes: int = 80, autoshape: bool = True,
            _verbose: bool = True, device: Any | None = None, fp32: bool = False) -> Any:
    """YOLOv5-xlarge (``yolov5x.pt``)."""
    return _create("yolov5x", pretrained, channels, classes, autoshape, _verbose, device, fp32)


def yolov5n6(pretrained: bool = True, channels: int = 3, classes: int = 80, autoshape: bool = True,
             _verbose: bool = True, device: Any | None = None, fp32: bool = False) -> Any:
    """YOLOv5-nano-P6 (``yolov5n6.pt``)."""
    return _create("yolov5n6", pretrained, channels, classes, autoshape, _verbose, device, fp32)


def yolov5s6(pretrained: bool = True, channels: int = 3, classes: int = 80, autoshape: bool = True,
             _verbose: bool = True, device: Any | None = None, fp32: bool = False) -> Any:
    """YOLOv5-small-P6 (``yolov5s6.pt``)."""
    return _create("yolov5s6", pretrained, channels, classes, autoshape, _verbose, device, fp32)


def yolov5m6(pretrained: bool = True, channels: int = 3, classes: int = 80, autoshape: bool = True,
             _verbose: bool = True, device: Any | None = None, fp32: bool = False) -> Any:
    """YOLOv5-medium-P6 (``yolov5m6.pt``)."""
    return _create("yolov5m6", pretrained, channels, classes, autoshape, _verbose, device, fp32)


def yolov5l6(pretrained: bool = True, channels: int = 3, classes: int = 80, autoshape: bool = True,
             _verbose: bool = True, device: Any | None = None, fp32: bool = False) -> Any:
    """YOLOv5-large-P6 (``yolov5l6.pt``)."""
    return _create("yolov5l6", pretrained, channels, classes, autoshape, _verbose, device, fp32)


def yolov5x6(pretrained: bool = True, channels: int = 3, classes: int = 80, autoshape: bool = True,
             _verbose: bool = True, device: Any | None = None, fp32: bool = False) -> Any:
    """YOLOv5-xlarge-P6 (``yolov5x6.pt``)."""
    return _create("yolov5x6", pretrained, channels, classes, autoshape, _verbose, device, fp32)
