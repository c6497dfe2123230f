"""Upstream YOLOv5's checkpoint format, and safe loading and saving of it.

Loading never executes code from the file: ``torch.load(weights_only=True)`` runs with an explicit allow-list of
the globals a YOLOv5 checkpoint legitimately contains: the model classes registered here, the torch.nn layers
YOLOv5 models use, ``collections.OrderedDict``, ``pathlib`` paths, ``argparse.Namespace`` and the numpy pieces
upstream stores ``best_fitness`` with. Anything else is refused with a message naming the offending global(s).

This module knows no model class. Model packages register theirs when they are imported
(:func:`allow_module_classes`, :func:`allow_model_classes`, :func:`register_safe_globals`). A checkpoint names
its classes by module path (``models.yolo.DetectionModel``), so before loading, the modules it names inside the
project's own packages (:data:`TRUSTED_PACKAGES`) are imported, which registers their classes; a name outside
them, or one its module did not register, is refused. This keeps ``strip_optimizer`` and ``torch_safe_load``
working in a process that has not imported any model code yet. Turning the loaded object into a ready model
(legacy fixes, fusing) belongs to the model package (``models.loading``).
"""

from __future__ import annotations

import argparse
import collections
import importlib
import inspect
import io
import pathlib
import pickle
import sys
from copy import deepcopy
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Optional, Union

import numpy as np
import torch
import torch.nn as nn

from utils.files import atomic_write_bytes
from utils.logging import LOGGER
from utils.torch_utils import de_parallel

PathLike = Union[str, Path]

_TORCH_NN_LAYERS = (
    nn.Sequential, nn.ModuleList, nn.ModuleDict, nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d, nn.SyncBatchNorm,
    nn.LayerNorm, nn.GroupNorm, nn.Linear, nn.modules.linear.NonDynamicallyQuantizableLinear, nn.Identity,
    nn.Dropout, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Upsample, nn.ZeroPad2d, nn.MultiheadAttention,
    nn.SiLU, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.GELU, nn.Mish,
    nn.Softmax, nn.Flatten,
)
_PLUMBING = (collections.OrderedDict, set, pathlib.Path, pathlib.PosixPath, pathlib.WindowsPath,
             pathlib.PurePosixPath, pathlib.PureWindowsPath, argparse.Namespace, np.ndarray, np.dtype)

TRUSTED_PACKAGES: list[str] = ["models", "extensions"]  # project packages a checkpoint's modules may be imported from
# Classification checkpoints also pickle their inference transform (``model.transforms``): upstream's classes in
# ``utils.augmentations`` (this project's, registered when that module is imported) and torchvision's
# ``Compose``/``Normalize``. A classifier trained from a torchvision model pickles torchvision model/op classes.
TRUSTED_MODULES: tuple[str, ...] = ("utils.augmentations",)
TORCHVISION_TRANSFORMS = ("Compose", "Normalize", "Resize", "CenterCrop", "ToTensor", "ConvertImageDtype")
TORCHVISION_MODULE_PREFIXES = ("torchvision.models.", "torchvision.ops.")

_extra_safe: list[Any] = []
_model_classes: dict[type, None] = {}  # insertion-ordered set
_aliases: dict[str, type] = {}  # 'module.Name' under which a model class is also reachable -> the class


def register_safe_globals(*objs: Any) -> None:
    """Add classes or functions (e.g. an extension's modules) to the checkpoint allow-list."""
    for obj in objs:
        if obj not in _extra_safe:
            _extra_safe.append(obj)


def allow_model_classes(*classes: type) -> None:
    """Allow model classes in checkpoints; unlike :func:`register_safe_globals`, a checkpoint may also reference
    their public methods (``Segment.detect = Detect.forward`` pickles as ``getattr(Detect, 'forward')``)."""
    for cls in classes:
        _model_classes.setdefault(cls, None)


def allow_module_classes(module_name: str) -> None:
    """Allow every ``nn.Module`` class a module defines or re-exports, under each name the module gives it.

    Called at the end of a model module (``allow_module_classes(__name__)``). A class reachable under another
    name than its own (``models.yolo.Model``, ``models.experimental.GhostConv``) is allowed under that alias too,
    the name older checkpoints pickled it by.
    """
    for name, value in vars(sys.modules[module_name]).items():
        if isinstance(value, type) and issubclass(value, nn.Module):
            allow_model_classes(value)
            alias = f"{module_name}.{name}"
            if alias != _global_name(value):
                _aliases[alias] = value


def model_classes() -> list[type]:
    """Return the allowed model classes registered so far, sorted by qualified name."""
    return sorted(_model_classes, key=_global_name)


def _numpy_globals() -> list[Any]:
    import codecs

    out: list[Any] = [codecs.encode]
    try:
        from numpy._core.multiarray import _reconstruct as reconstruct_new
        out.append(reconstruct_new)
    except ImportError:
        pass
    try:
        from numpy.core.multiarray import _reconstruct as reconstruct_old
        out.append(reconstruct_old)
    except ImportError:
        pass
    out += [type(np.dtype(t)) for t in ("float64", "float32", "float16", "int64", "int32", "bool")]
    out += [np.float64, np.float32, np.int64]
    try:
        from numpy._core.multiarray import scalar
        out.append(scalar)
    except ImportError:
        pass
    return out


_REFUSED_GETATTR = "refused while unpickling:"


def _restricted_getattr(obj: Any, name: str) -> Any:
    """Stand-in for ``builtins.getattr`` while unpickling: only resolves methods of allowed model classes.

    Pickle (protocol 2) stores a reference to a class's function, such as ``Segment.detect = Detect.forward``,
    as ``getattr(Detect, 'forward')``. Any other use is refused, so a file cannot reach arbitrary objects.
    """
    allowed = isinstance(obj, type) and obj in _model_classes and isinstance(name, str) and not name.startswith("_")
    value = getattr(obj, name, None) if allowed else None
    if not inspect.isfunction(value):
        raise UnsafeCheckpointError(f"{_REFUSED_GETATTR} getattr({_global_name(obj)}, {name!r}): only public methods "
                                    f"of the model classes may be referenced")
    return value


def safe_globals() -> list[Any]:
    """Return the full allow-list used by :func:`torch_safe_load` (objects and ``(object, 'module.name')`` pairs)."""
    aliases = [(cls, alias) for alias, cls in _aliases.items()]
    return [*model_classes(), *aliases, (_restricted_getattr, "builtins.getattr"), *_TORCH_NN_LAYERS, *_PLUMBING,
            *_numpy_globals(), *_extra_safe]


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint references a global outside the allow-list; nothing from it was executed."""


def _global_name(obj: Any) -> str:
    """Return ``'module.QualName'`` of a class or function (the name a pickle refers to it by)."""
    if isinstance(obj, tuple):
        return obj[1]
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', getattr(obj, '__name__', obj))}"


def torch_safe_load(file: PathLike, map_location: Any = "cpu") -> Any:
    """Load a ``.pt`` file with ``weights_only=True`` and the YOLOv5 allow-list.

    Raises:
        FileNotFoundError: the file does not exist.
        UnsafeCheckpointError: the file needs a global that is not allowed (named in the message).
        RuntimeError: the file is not a readable torch checkpoint (truncated, wrong format).
    """
    file = Path(file)
    if not file.is_file():
        raise FileNotFoundError(f"Weights file not found: {file}")
    referenced = _referenced_globals(file)
    import_trusted_modules(referenced or [])
    allow_torchvision_globals(referenced or [])
    allowed = safe_globals()
    try:
        with torch.serialization.safe_globals(_only_referenced(allowed, referenced)):
            return torch.load(file, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        offending = _offending_globals(file, allowed)
        if _REFUSED_GETATTR in str(e):
            detail = str(e)[str(e).index(_REFUSED_GETATTR):].splitlines()[0]
            raise UnsafeCheckpointError(f"{file}: {detail}. Nothing from the file was executed.") from None
        if offending:
            raise UnsafeCheckpointError(
                f"{file}: refused to load, it references non-allowed global(s) {', '.join(offending)}. Nothing from "
                f"the file was executed. If you trust this file and these classes are yours, register them with "
                f"utils.checkpoint.register_safe_globals().") from None
        raise RuntimeError(f"{file}: not a loadable checkpoint: {e}") from None
    except (RuntimeError, EOFError, OSError) as e:
        raise RuntimeError(f"{file}: corrupt or unreadable checkpoint ({type(e).__name__}: {e})") from None


def _referenced_globals(file: Path) -> list[str] | None:
    """Return the ``'module.name'`` globals a checkpoint's pickle references beyond torch's defaults (None: unknown).

    The pickle opcodes are only scanned, nothing is unpickled.
    """
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(str(file)))
    except Exception:  # not a torch zip/pickle: torch.load reports it
        return None


def _only_referenced(allowed: list[Any], referenced: list[str] | None) -> list[Any]:
    """Return the allow-list entries a checkpoint actually references (all of them when that is unknown).

    torch's unpickler re-reads the whole allow-list for every global it meets, so a long list (every timm class)
    makes a ConvNeXt checkpoint load take seconds. numpy and plumbing entries always stay (numpy builds dtype
    classes the pickle never names); the check itself is unchanged.
    """
    if referenced is None:
        return allowed
    wanted = set(referenced) | {name.replace("__builtin__", "builtins") for name in referenced}
    always = [*_PLUMBING, *_numpy_globals()]  # numpy dtype classes are built without being named in the pickle
    return always + [entry for entry in allowed if _global_name(entry) in wanted and entry not in always]


def import_trusted_modules(names: Iterable[str]) -> None:
    """Import the modules of :data:`TRUSTED_PACKAGES` that the ``'module.Name'`` globals ``names`` refer to.

    Importing a model module registers its classes in the allow-list. Only the project's own packages are
    imported (trusted code); any other name is left to the allow-list check, which refuses it.
    """
    for name in names:
        parts = name.split(".")
        if name.rpartition(".")[0] in TRUSTED_MODULES:
            importlib.import_module(name.rpartition(".")[0])
            continue
        if parts[0] not in TRUSTED_PACKAGES or not all(part.isidentifier() for part in parts):
            continue
        for end in range(len(parts) - 1, 0, -1):
            module = ".".join(parts[:end])
            if module in sys.modules:
                break
            try:
                importlib.import_module(module)
                break
            except ImportError:
                continue


def allow_torchvision_globals(names: Iterable[str]) -> None:
    """Allow the torchvision classes among the ``'module.Name'`` globals ``names`` that a classifier may pickle:
    the transforms of :data:`TORCHVISION_TRANSFORMS` and ``nn.Module`` subclasses of torchvision's model and op
    modules. Nothing else from torchvision (and no function) is allowed."""
    for name in names:
        module_name, _, attr = name.rpartition(".")
        is_transform = module_name == "torchvision.transforms.transforms" and attr in TORCHVISION_TRANSFORMS
        if not (is_transform or name.startswith(TORCHVISION_MODULE_PREFIXES)):
            continue
        try:
            value = getattr(importlib.import_module(module_name), attr, None)
        except ImportError:
            continue
        if isinstance(value, type) and (is_transform or issubclass(value, nn.Module)):
            register_safe_globals(value)


def _offending_globals(file: Path, allowed: Iterable[Any]) -> list[str]:
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(str(file))
    except Exception:  # not a torch zip/pickle at all: reported as an unreadable file by the caller
        return []
    allowed_names = {_global_name(a) for a in allowed}
    return [n for n in names if n not in allowed_names and n.replace("__builtin__", "builtins") not in allowed_names]


def extract_model(ckpt: Any, source: PathLike = "<checkpoint>") -> nn.Module:
    """Return the model object from a loaded checkpoint dict (``ema`` if present, else ``model``)."""
    if isinstance(ckpt, nn.Module):
        return ckpt
    if not isinstance(ckpt, dict):
        raise ValueError(f"{source}: expected a checkpoint dict with a 'model' entry, got {type(ckpt).__name__}")
    model = ckpt.get("ema") or ckpt.get("model")
    if not isinstance(model, nn.Module):
        keys = ", ".join(map(str, list(ckpt)[:8]))
        raise ValueError(f"{source}: no model object under 'ema' or 'model' (keys: {keys}). A plain state dict can be "
                         f"used with --weights after building the model from --cfg, or with --backbone-weights.")
    return model


def checkpoint_bytes(ckpt: dict) -> bytes:
    """Serialise a checkpoint dict with ``torch.save`` (once, for any number of files)."""
    buffer = io.BytesIO()
    torch.save(ckpt, buffer)
    return buffer.getvalue()


def save_checkpoint(ckpt: dict | bytes, file: PathLike) -> None:
    """Write a checkpoint (dict, or its :func:`checkpoint_bytes`) atomically (temporary file + rename), so a crash
    never leaves half a file."""
    atomic_write_bytes(file, ckpt if isinstance(ckpt, bytes) else checkpoint_bytes(ckpt))


def contiguous_tensors(value: Any) -> Any:
    """Return ``value`` (nested dicts/lists/tuples, e.g. an optimizer state dict) with every tensor contiguous NCHW.

    Tensors that already are contiguous are kept (not copied); the others are copied, so live state is unchanged.
    """
    if isinstance(value, torch.Tensor):
        return value.contiguous()
    if isinstance(value, dict):
        return {k: contiguous_tensors(v) for k, v in value.items()}
    if isinstance(value, list):
        return [contiguous_tensors(v) for v in value]
    return tuple(contiguous_tensors(v) for v in value) if type(value) is tuple else value


def make_checkpoint(model: nn.Module, ema: Optional[nn.Module] = None, epoch: int = -1, best_fitness: Any = None,
                    updates: Optional[int] = None, optimizer: Optional[dict] = None, opt: Optional[dict] = None,
                    git: Optional[dict] = None) -> dict:
    """Build upstream's checkpoint dict: fp16 copies of the model/EMA plus training state.

    Whatever layout and precision training used (channels_last, autocast), the saved tensors are upstream's: model
    and EMA fp16 with standard contiguous NCHW strides, optimizer state tensors contiguous (live state untouched).
    """
    def fp16_nchw(module: nn.Module) -> nn.Module:
        return deepcopy(module).half().to(memory_format=torch.contiguous_format)

    return {
        "epoch": epoch,
        "best_fitness": best_fitness,
        "model": fp16_nchw(de_parallel(model)),
        "ema": fp16_nchw(ema) if ema is not None else None,
        "updates": updates,
        "optimizer": contiguous_tensors(optimizer),
        "opt": opt if opt is not None else {},
        "git": git if git is not None else {"remote": None, "branch": None, "commit": None},
        "date": datetime.now().isoformat(),
    }


def stripped_checkpoint(ckpt: dict) -> dict:
    """Return the final form of a training checkpoint: model <- EMA (fp16, no grads), optimizer/EMA state and
    ``best_fitness``/``updates`` None, ``epoch`` -1. A new dict; the model object is shared with ``ckpt``."""
    final = dict(ckpt)
    if final.get("ema"):
        final["model"] = final["ema"]
    for k in ("optimizer", "best_fitness", "ema", "updates"):
        final[k] = None
    final["epoch"] = -1
    final["model"].half()
    for p in final["model"].parameters():
        p.requires_grad = False
    return final


def write_stripped(ckpt: dict, file: PathLike, source: PathLike = "") -> None:
    """Save :func:`stripped_checkpoint` of ``ckpt`` to ``file`` atomically and log upstream's line."""
    save_checkpoint(stripped_checkpoint(ckpt), file)
    mb = Path(file).stat().st_size / 1e6
    saved_as = f" saved as {file}," if source and Path(source) != Path(file) else ""
    LOGGER.info(f"Optimizer stripped from {source or file},{saved_as} {mb:.1f}MB")


def strip_optimizer(f: PathLike = "best.pt", s: PathLike = "") -> None:
    """Make a final checkpoint: model <- EMA, drop optimizer/EMA state, fp16, no grads; saved to ``s`` or ``f``."""
    write_stripped(torch_safe_load(f), s or f, source=f)
