"""Run an unmodified upstream YOLOv5 script (the ``yolov5==7.0.14`` package in a folder) as a black box, offline.

The packaged upstream imports a few things only for online features; a folder of stand-ins is written once and put
on ``PYTHONPATH`` (nothing of upstream is changed or copied):

* ``pkg_resources`` (version parsing; gone from recent setuptools), ``ultralytics.utils.checks``
  (``check_requirements``), ``roboflow`` (an optional dataset client);
* a launcher that makes ``attempt_download_from_hub`` (a Hugging Face lookup done even for local files) return
  None, and makes ``models.*`` / ``utils.augmentations`` name the package's own modules, as in the official
  repository layout, so checkpoints pickle (and unpickle) under upstream's official class names.
"""

from __future__ import annotations

import os
from pathlib import Path

STANDINS = {
    "pkg_resources.py": "from packaging.version import Version as parse_version\n",
    "ultralytics/__init__.py": "",
    "ultralytics/utils/__init__.py": "",
    "ultralytics/utils/checks.py": "def check_requirements(*args, **kwargs):\n    return True\n",
    "roboflow/__init__.py": "class Roboflow:\n    def __init__(self, *args, **kwargs):\n"
                            "        raise RuntimeError('roboflow is not available offline')\n",
    "roboflow/core/__init__.py": "",
    "roboflow/core/version.py": "class Version:\n    pass\n",
}

LAUNCHER = '''"""Run an upstream script offline with the official module names (see benchmarks/upstream_runner.py)."""
import os
import runpy
import sys

os.environ["HF_HUB_OFFLINE"] = "1"
import yolov5.utils.downloads as downloads

downloads.attempt_download_from_hub = lambda *args, **kwargs: None
for module in list(sys.modules.values()):
    if getattr(module, "__name__", "").startswith("yolov5") and hasattr(module, "attempt_download_from_hub"):
        module.attempt_download_from_hub = downloads.attempt_download_from_hub
import yolov5.models.common
import yolov5.models.experimental
import yolov5.models.yolo
import yolov5.utils.augmentations

ALIASED = ("models", "models.yolo", "models.common", "models.experimental", "utils", "utils.augmentations")
for name in ALIASED:
    sys.modules.setdefault(name, sys.modules["yolov5." + name])
for name in ALIASED:
    for value in vars(sys.modules[name]).values():
        if isinstance(value, type) and value.__module__ == "yolov5." + name:
            value.__module__ = name
script = sys.argv[1]
sys.argv = sys.argv[1:]
runpy.run_path(script, run_name="__main__")
'''


def write_shim(folder: Path) -> Path:
    """Write the stand-ins and the launcher into ``folder``; returns the launcher path."""
    folder = Path(folder)
    for relative, text in {**STANDINS, "run_upstream.py": LAUNCHER}.items():
        file = folder / relative
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(text)
    return folder / "run_upstream.py"


def upstream_command(upstream: Path, shim: Path, script: str, args: list[str]) -> tuple[list[str], dict]:
    """Return ``(argv, environment)`` that run ``upstream/yolov5/<script>`` with ``args`` through the launcher.

    Raises:
        FileNotFoundError: ``upstream`` has no ``yolov5/<script>`` (the message says how to create the folder).
    """
    import sys

    target = Path(upstream) / "yolov5" / script
    if not target.is_file():
        raise FileNotFoundError(f"--upstream {upstream}: no yolov5/{script} there; create it with "
                                f"'pip install --no-deps --target {upstream} yolov5==7.0.14'")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(upstream), str(Path(shim).parent)])
    env["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"  # upstream 7.0 loads its own pickles with a plain torch.load
    return [sys.executable, str(shim), str(target), *args], env
