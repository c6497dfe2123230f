"""Shared pieces of the multi-seed training benchmarks (``bench_precision_train.py``, ``bench_pretraining.py``):
the paired Student-t interval, ``results.csv`` reading, atomic JSON/figure writes."""

from __future__ import annotations

import csv
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np


def paired_interval(differences: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Student-t interval (low, high) of the mean of per-seed differences at ``confidence``, and its standard error.

    Needs at least two differences (one gives an infinite-width interval: ``(-inf, inf, nan)``).
    """
    from scipy import stats

    values = np.asarray(differences, dtype=float)
    if len(values) < 2:
        return -float("inf"), float("inf"), float("nan")
    error = float(values.std(ddof=1) / np.sqrt(len(values)))
    half = float(stats.t.ppf(0.5 + confidence / 2, len(values) - 1)) * error
    return float(values.mean()) - half, float(values.mean()) + half, error


def read_results(save_dir: Path) -> dict[str, np.ndarray]:
    """Columns of ``save_dir/results.csv`` (header names stripped of padding) as float arrays."""
    with open(Path(save_dir) / "results.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    header = [name.strip() for name in rows[0]]
    values = np.array([[float(x) for x in row] for row in rows[1:] if row], dtype=float).reshape(-1, len(header))
    return {name: values[:, i] for i, name in enumerate(header)}


def write_json_atomic(file: Path, record: Any) -> None:
    """Write ``record`` as JSON to ``file`` through a temporary file in the same folder and a rename."""
    file = Path(file)
    file.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=file.parent, suffix=".json", delete=False) as tmp:
        json.dump(record, tmp, indent=1)
    os.replace(tmp.name, file)


def save_figure_atomic(fig: Any, file: Path, dpi: int = 120) -> None:
    """Save a matplotlib figure to ``file`` (png) through a temporary file and a rename."""
    file = Path(file)
    file.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=file.parent, suffix=".png", delete=False) as tmp:
        fig.savefig(tmp.name, dpi=dpi)
    os.replace(tmp.name, file)
