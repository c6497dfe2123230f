"""Project logger and console helpers.

Importing this module configures nothing globally: the ``yolov5`` logger gets a stream handler only when it has
none, and it does not propagate to the root logger, so importing the package never changes a caller's logging.
"""

from __future__ import annotations

import logging
import sys

LOGGING_NAME = "yolov5"


def _make_logger(name: str = LOGGING_NAME) -> logging.Logger:
    logger = logging.getLogger(name)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


LOGGER = _make_logger()

_COLORS = {
    "black": "\033[30m", "red": "\033[31m", "green": "\033[32m", "yellow": "\033[33m", "blue": "\033[34m",
    "magenta": "\033[35m", "cyan": "\033[36m", "white": "\033[37m", "bright_black": "\033[90m",
    "bold": "\033[1m", "underline": "\033[4m", "end": "\033[0m",
}


def colorstr(*parts: str) -> str:
    """Return the last part wrapped in ANSI codes named by the other parts (default: blue, bold).

    ``colorstr('hello')`` is blue bold; ``colorstr('red', 'hello')`` is red.
    """
    *styles, text = parts if len(parts) > 1 else ("blue", "bold", parts[0])
    return "".join(_COLORS[s] for s in styles) + f"{text}" + _COLORS["end"]


def emojis(text: str = "") -> str:
    """Return ``text`` unchanged (kept for upstream API compatibility; terminals here handle UTF-8)."""
    return text
