"""Turn a YAML row's head arguments (positional values and/or one trailing ``{key: value}`` mapping) into the
positional constructor arguments the builder passes to ``cls(*args)``.

Example rows accepted for ``YOLOv3Head(nc, anchors, ch, decode='darknet', loss='darknet', ...)``::

    [[17, 20, 23], 1, YOLOv3Head, [nc, anchors, darknet]]
    [[17, 20, 23], 1, YOLOv3Head, [nc, anchors, {decode: yolov5, loss: ciou}]]
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any, Callable, Sequence


def head_constructor_args(cls: Callable, given: Sequence[Any], fixed: dict[str, Any],
                          skip: Sequence[str] = ()) -> list:
    """Return ``cls``'s positional arguments from YAML ``given`` values, with ``fixed`` names filled by the builder.

    Args:
        cls: the head class; its ``__init__`` signature defines the order of the result.
        given: the row's arguments: positional values for the non-fixed parameters in signature order, optionally
            followed by one mapping of keyword options.
        fixed: values the builder supplies (e.g. ``{'ch': [64, 128, 256]}``); these parameters are not taken from
            the positional values.
        skip: parameter names that may not be set from YAML (left at their defaults).

    Raises:
        ValueError: unknown option names (with close matches), too many positional values, or a parameter given
            both positionally and as an option.
    """
    params = [p for p in inspect.signature(cls.__init__).parameters.values() if p.name != "self"]
    free = [p.name for p in params if p.name not in fixed and p.name not in skip]
    given = list(given)
    options = dict(given.pop()) if given and isinstance(given[-1], dict) else {}
    if len(given) > len(free):
        raise ValueError(f"{cls.__name__} takes at most {len(free)} positional YAML arguments {free}, got {given}")
    values = dict(zip(free, given, strict=False))
    for key, value in options.items():
        if key not in free:
            close = difflib.get_close_matches(str(key), free, n=2)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ValueError(f"{cls.__name__}: unknown option {key!r}{hint}; known options: {free}")
        if key in values:
            raise ValueError(f"{cls.__name__}: {key!r} given both positionally and as an option")
        values[key] = value
    values.update(fixed)
    out = []
    for p in params:
        if p.name in values:
            out.append(values[p.name])
        elif p.default is inspect.Parameter.empty:
            raise ValueError(f"{cls.__name__}: missing required argument {p.name!r}")
        else:
            out.append(p.default)
    return out
