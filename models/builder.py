"""Build an ``nn.Sequential`` from a YOLOv5 model YAML dict, without ``eval`` and without global side effects.

Row semantics follow upstream exactly: ``[from, number, module, args]``; ``number`` is scaled by
``depth_multiple`` (``max(round(n * gd), 1)`` when ``n > 1``); output channels of conv-like layers are scaled by
``width_multiple`` and rounded up to a multiple of ``channel_multiple`` (8) unless they equal the head's output
count; ``from`` indices are relative (negative) or absolute. Every built layer gets the attributes ``i`` (index),
``f`` (from), ``type`` (``'package.module.Class'``) and ``np`` (parameter count) that checkpoints and tools use.
"""

from __future__ import annotations

import ast
import contextlib
import re
from copy import deepcopy
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

import torch.nn as nn

from models.common import Conv
from models.registry import BuildContext, ModuleSpec, import_extensions, resolve
from utils.logging import LOGGER
from utils.ops import make_divisible

_SYMBOLS_FIXED = {"None": None, "True": True, "False": False}


class ModelYAMLError(ValueError):
    """A model YAML row could not be built; the message names the file, the row and what is wrong."""


@dataclass
class BuildResult:
    """What :func:`build_model` returns: the layers, the indices whose outputs must be kept, and the widths."""

    model: nn.Sequential
    save: list[int]
    channels: list[int] = field(default_factory=list)


def resolve_arg(value: Any, symbols: dict[str, Any]) -> Any:
    """Resolve one YAML argument: known symbol names map to their value; other strings stay strings."""
    if isinstance(value, str):
        if value in symbols:
            return symbols[value]
        if value.startswith("nn.") and isinstance(getattr(nn, value[3:], None), type):
            return getattr(nn, value[3:])
    return value


_ACT_RE = re.compile(r"^\s*(?:torch\.)?(?:nn\.)?(\w+)\s*(?:\((.*)\))?\s*$")


def parse_activation(spec: Any) -> nn.Module:
    """Turn a YAML ``activation:`` value such as ``nn.LeakyReLU(0.1)`` or ``nn.SiLU()`` into a module instance.

    Only ``torch.nn`` activation classes are accepted; arguments must be Python literals (parsed with
    ``ast.literal_eval``, never evaluated as code).
    """
    if isinstance(spec, nn.Module):
        return spec
    match = _ACT_RE.match(str(spec))
    cls = getattr(nn, match.group(1), None) if match else None
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ModelYAMLError(f"activation {spec!r} is not a torch.nn module (e.g. 'nn.LeakyReLU(0.1)', 'nn.SiLU()')")
    args: tuple = ()
    if match.group(2):
        try:
            args = ast.literal_eval(f"({match.group(2)},)")
        except (ValueError, SyntaxError) as e:
            raise ModelYAMLError(f"activation {spec!r}: arguments must be literals ({e})") from e
    return cls(*args)


@contextlib.contextmanager
def default_activation(act: Optional[nn.Module]) -> Iterator[None]:
    """Temporarily set ``Conv.default_act`` (restored on exit, so models built later are unaffected)."""
    previous = Conv.default_act
    if act is not None:
        Conv.default_act = act
    try:
        yield
    finally:
        Conv.default_act = previous


def _scale_depth(n: Any, gd: float) -> int:
    n = int(n)
    return max(round(n * gd), 1) if n > 1 else n


def _scale_width(c2: int, ctx: BuildContext) -> int:
    if c2 == ctx.num_outputs:
        return c2
    if ctx.max_channels is not None:
        c2 = min(c2, ctx.max_channels)
    return make_divisible(c2 * ctx.width_multiple, ctx.channel_multiple)


def _layer_args(spec: ModuleSpec, args: list, f: Any, ch: list[int], n: int,
                ctx: BuildContext) -> tuple[list, int, int]:
    """Return (constructor args, output channels, repeat count) for one row according to its role."""
    ch_in = [ch[x] for x in f] if isinstance(f, list) else [ch[f]]
    role = spec.role
    if role in ("conv", "csp"):
        c2 = _scale_width(args[0], ctx)
        args = [ch_in[0], c2, *args[1:]]
        if role == "csp":
            args.insert(2, n)
            n = 1
        return args, c2, n
    if role == "bn":
        return [ch_in[0]], ch_in[0], n
    if role == "concat":
        return args, sum(ch_in), n
    if role == "head":
        args = [*args, ch_in]
        if isinstance(args[1], int):
            args[1] = [list(range(args[1] * 2))] * len(ch_in)
        if len(args) > 4 and spec.cls.__name__ == "Segment":
            args[3] = make_divisible(args[3] * ctx.width_multiple, ctx.channel_multiple)
        return args, ch_in[0], n
    if role == "contract":
        return args, ch_in[0] * args[0] ** 2, n
    if role == "expand":
        return args, ch_in[0] // args[0] ** 2, n
    if role == "custom":
        args, c2 = spec.parse(args, ch_in, ctx)
        return args, c2, n
    return args, ch_in[0], n


def _type_name(cls: Any) -> str:
    return f"{cls.__module__}.{cls.__qualname__}".replace("__main__.", "")


def _check_from(f: Any, i: int, where: str) -> None:
    for x in f if isinstance(f, list) else [f]:
        if not isinstance(x, int) or not (-i <= x < i or (i == 0 and x == -1)):
            raise ModelYAMLError(f"{where}: 'from' index {x!r} does not point to an earlier layer (layer {i} can "
                                 f"use -1..-{i} or 0..{i - 1})")


def build_model(d: dict, ch: list[int], yaml_file: str = "<dict>", verbose: bool = True) -> BuildResult:
    """Build the layers described by a model YAML dict ``d`` for ``ch[0]`` input channels.

    Raises:
        ModelYAMLError: naming ``yaml_file`` and the failing row for unknown modules, bad ``from`` indices and
            constructor argument errors.
    """
    d = deepcopy(d)
    import_extensions(d.get("imports", []) or [])
    anchors, nc = d.get("anchors", 3), d.get("nc", 80)
    ctx = BuildContext(nc=nc, anchors=anchors, depth_multiple=d.get("depth_multiple", 1.0),
                       width_multiple=d.get("width_multiple", 1.0),
                       channel_multiple=d.get("channel_multiple", 8), max_channels=d.get("max_channels"), yaml=d)
    act = parse_activation(d["activation"]) if d.get("activation") else None
    symbols = {**_SYMBOLS_FIXED, "nc": nc, "anchors": anchors}
    rows = list(d.get("backbone", []) or []) + list(d.get("head", []) or [])
    if not rows:
        raise ModelYAMLError(f"{yaml_file}: no 'backbone:'/'head:' rows")
    if verbose:
        LOGGER.info(f"\n{'':>3}{'from':>18}{'n':>3}{'params':>10}  {'module':<40}{'arguments':<30}")
    layers, save, chans = [], [], list(ch)
    with default_activation(act):
        for i, row in enumerate(rows):
            where = f"{yaml_file}: row {i} {row!r}"
            layer, c2, n_, args = _build_row(row, i, chans, ctx, symbols, where)
            save.extend(x % i for x in ([layer.f] if isinstance(layer.f, int) else layer.f) if x != -1)
            layers.append(layer)
            if i == 0:
                chans = []
            chans.append(c2)
            if verbose:
                LOGGER.info(f"{i:>3}{str(layer.f):>18}{n_:>3}{layer.np:10.0f}  {layer.type:<40}{str(args):<30}")
    return BuildResult(nn.Sequential(*layers), sorted(save), chans)


def _build_row(row: Any, i: int, ch: list[int], ctx: BuildContext, symbols: dict,
               where: str) -> tuple[nn.Module, int, int, list]:
    if not isinstance(row, (list, tuple)) or len(row) != 4:
        raise ModelYAMLError(f"{where}: a row must be [from, number, module, args]")
    f, n, name, args = row
    _check_from(f, i, where)
    try:
        spec = resolve(name)
    except KeyError as e:
        raise ModelYAMLError(f"{where}: {e.args[0]}") from None
    args = [resolve_arg(a, symbols) for a in (args or [])]
    n_ = _scale_depth(n, ctx.depth_multiple)
    try:
        args, c2, n = _layer_args(spec, args, f, ch, n_, ctx)
        module = nn.Sequential(*(spec.cls(*args) for _ in range(n))) if n > 1 else spec.cls(*args)
    except (TypeError, IndexError, ValueError) as e:
        raise ModelYAMLError(f"{where}: cannot build {name} with args {args}: {e}") from e
    module.i, module.f, module.type = i, f, _type_name(spec.cls)
    module.np = sum(p.numel() for p in module.parameters())
    return module, c2, n_, args
