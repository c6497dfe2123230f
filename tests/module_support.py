"""Test helpers for code outside the test process: import a repository file that is not in a package (hubconf.py,
a benchmark script) as a module, or run Python code in a fresh interpreter."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]


def import_file(relative: str, name: str) -> ModuleType:
    """Execute ``REPO/relative`` as a fresh module called ``name`` and return it.

    The module is in ``sys.modules`` only while it executes (dataclasses look their module up there), so importing
    it here never replaces or leaves behind a module of that name.
    """
    spec = importlib.util.spec_from_file_location(name, REPO / relative)
    module = importlib.util.module_from_spec(spec)
    previous = sys.modules.get(name)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        if previous is None:
            del sys.modules[name]
        else:
            sys.modules[name] = previous
    return module


def run_fresh_python(code: str, *args: object, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``python -c code args...`` in a new interpreter that imports the repository (nothing preloaded)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
