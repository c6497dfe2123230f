"""Import a repository file that is not in a package (hubconf.py, a benchmark script) as a module, for tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]


def import_file(relative: str, name: str) -> ModuleType:
    """Execute ``REPO/relative`` as a fresh module called ``name`` and return it."""
    spec = importlib.util.spec_from_file_location(name, REPO / relative)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
