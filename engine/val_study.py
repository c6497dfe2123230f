"""``val.py --task study``: validate models over a range of image sizes and plot accuracy against size and speed."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from engine.val_outputs import plot_study, study_file_name
from utils.files import atomic_write_bytes, increment_path
from utils.logging import LOGGER

STUDY_SIZES = tuple(range(256, 1536 + 128, 128))


def run_study(settings: Mapping[str, Any], weights: Sequence[Any], validate: Callable[..., tuple],
              sizes: Sequence[int] = STUDY_SIZES) -> Path:
    """Validate each model at every image size in ``sizes``; write study_*.txt, study.zip and study.png.

    ``settings`` are ``val.run`` keywords (``data``, ``project``, ``name``, ``exist_ok`` are read here) and
    ``validate(**settings)`` returns ``val.run``'s tuple. Files go to a new ``<project>/<name>-study`` folder; each
    txt row is ``P R mAP50 mAP50-95 box obj cls t_pre t_inf t_nms`` for one image size. Returns the folder.
    """
    out_dir = increment_path(Path(settings["project"]) / f"{settings['name']}-study", exist_ok=settings["exist_ok"],
                             mkdir=True)
    files = []
    for w in weights:
        file = out_dir / study_file_name(settings["data"], w)
        rows = []
        for size in sizes:
            LOGGER.info(f"\nRunning {file.name} --imgsz {size}...")
            results, _, speeds = validate(**{**settings, "weights": w, "imgsz": size, "plots": False})
            rows.append(list(results) + list(speeds))
        text = io.StringIO()
        np.savetxt(text, rows, fmt="%10.4g")
        atomic_write_bytes(file, text.getvalue().encode("utf-8"))
        files.append(file)
    with zipfile.ZipFile(out_dir / "study.zip", "w") as archive:
        for file in files:
            archive.write(file, file.name)
    plot_study(files, sizes, out_dir / "study.png")
    return out_dir
