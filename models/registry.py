"""Open registry of the module names a model YAML may use.

A YAML row ``[from, number, module, args]`` names its module by a string. The builder resolves that string here,
never with ``eval``. Each name maps to a :class:`ModuleSpec` whose ``role`` tells the builder how to turn the row's
arguments into constructor arguments and how many output channels the layer has:

- ``conv``: ``args = [c1, c2, *rest]`` with ``c2`` scaled by ``width_multiple`` (Conv, SPPF, ...);
- ``csp``: as ``conv`` and the repeat count is passed as the third argument instead of stacking copies (C3, ...);
- ``concat``: output channels are the sum of the inputs' (Concat);
- ``head``: the list of input channels is appended and integer anchors are expanded (Detect, Segment);
- ``bn``: ``args = [c1]`` (nn.BatchNorm2d);
- ``contract`` / ``expand``: channels multiplied / divided by ``gain**2``;
- ``passthrough``: output channels equal the input's (nn.Upsample, ...);
- ``custom``: ``spec.parse(args, ch_in, ctx)`` returns ``(args, c2)``, for extension modules.

Extensions register their classes with :func:`register_module` on import; nothing in ``models/`` needs editing.
A registered class is also allowed in checkpoints (:func:`utils.checkpoint.allow_model_classes`), since models
built from a YAML pickle it. This module imports nothing from ``models`` so any package can depend on it.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import torch.nn as nn

from utils.checkpoint import allow_model_classes

ROLES = ("conv", "csp", "concat", "head", "bn", "contract", "expand", "passthrough", "custom")


@dataclass(frozen=True)
class BuildContext:
    """Model-wide values a row's arguments may depend on."""

    nc: int
    anchors: Any
    depth_multiple: float
    width_multiple: float
    channel_multiple: int = 8
    max_channels: Optional[int] = None
    yaml: dict = field(default_factory=dict)

    @property
    def num_outputs(self) -> int:
        """Detect output channels per level ``na * (nc + 5)`` (used to leave head widths unscaled)."""
        na = (len(self.anchors[0]) // 2) if isinstance(self.anchors, (list, tuple)) else int(self.anchors)
        return na * (self.nc + 5)


ParseFn = Callable[[list, list, BuildContext], "tuple[list, int]"]


@dataclass(frozen=True)
class ModuleSpec:
    """How the builder treats one registered module class.

    Attributes:
        cls: the ``nn.Module`` subclass (or factory) to instantiate with the resolved args.
        role: one of :data:`ROLES`.
        parse: for ``role='custom'``: ``parse(args, ch_in, ctx) -> (args, c2)`` where ``ch_in`` lists the input
            channels of the row's ``from`` layers.
    """

    cls: Callable[..., nn.Module]
    role: str
    parse: Optional[ParseFn] = None

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"unknown module role {self.role!r}; expected one of {ROLES}")
        if self.role == "custom" and self.parse is None:
            raise ValueError("role='custom' needs a parse(args, ch_in, ctx) -> (args, c2) function")


_REGISTRY: dict[str, ModuleSpec] = {}


def register_module(name: Optional[str] = None, *, role: str, parse: Optional[ParseFn] = None,
                    replace: bool = False) -> Callable:
    """Class decorator that registers a module under ``name`` (default: the class name); returns it unchanged.

    Raises:
        ValueError: if the name is taken by a different class and ``replace`` is False.
    """

    def decorator(cls: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        add_module(name or cls.__name__, cls, role=role, parse=parse, replace=replace)
        return cls

    return decorator


def add_module(name: str, cls: Callable[..., nn.Module], *, role: str, parse: Optional[ParseFn] = None,
               replace: bool = False) -> ModuleSpec:
    """Register ``cls`` under ``name`` (function form of :func:`register_module`)."""
    spec = ModuleSpec(cls, role, parse)
    existing = _REGISTRY.get(name)
    if existing is not None and existing.cls is not cls and not replace:
        raise ValueError(f"module name {name!r} is already registered to {existing.cls!r}")
    _REGISTRY[name] = spec
    if isinstance(cls, type):
        allow_model_classes(cls)
    return spec


def unregister_module(name: str) -> None:
    """Remove ``name`` from the registry (used by tests that register temporary modules)."""
    _REGISTRY.pop(name, None)


def known_modules() -> list[str]:
    """Return the sorted list of registered module names."""
    return sorted(_REGISTRY)


def resolve(name: str) -> ModuleSpec:
    """Return the spec for a YAML module name.

    Lookup order: the registry; ``nn.X`` / ``torch.nn.X`` for any ``torch.nn`` module class (role ``passthrough``
    unless registered); a dotted ``package.module.Class`` path whose module is importable and whose attribute is an
    ``nn.Module`` subclass. Raises ``KeyError`` with close matches and the known names otherwise.
    """
    if not isinstance(name, str):
        raise KeyError(f"module must be a name string, got {name!r}")
    if name in _REGISTRY:
        return _REGISTRY[name]
    short = name[len("torch."):] if name.startswith("torch.nn.") else name
    if short.startswith("nn."):
        attr = getattr(nn, short[3:], None)
        if isinstance(attr, type) and issubclass(attr, nn.Module):
            return _REGISTRY.get(short) or ModuleSpec(attr, "passthrough")
    if "." in name:
        spec = _resolve_dotted(name)
        if spec is not None:
            return spec
    close = difflib.get_close_matches(name, _REGISTRY, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise KeyError(f"unknown module {name!r}.{hint} Known modules: {', '.join(known_modules())}. Modules defined "
                   f"outside models/ must be imported first: list them under a top-level 'imports:' key.")


def _resolve_dotted(path: str) -> Optional[ModuleSpec]:
    module_name, _, attr_name = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    attr = getattr(module, attr_name, None)
    if not (isinstance(attr, type) and issubclass(attr, nn.Module)):
        return None
    for spec in _REGISTRY.values():
        if spec.cls is attr:
            return spec
    return ModuleSpec(attr, "passthrough")


def import_extensions(names: Sequence[str]) -> None:
    """Import the modules a YAML lists under ``imports:`` so that they register their classes."""
    for module_name in names:
        try:
            importlib.import_module(module_name)
        except ImportError as e:
            raise ImportError(f"'imports:' entry {module_name!r} could not be imported: {e}") from e
