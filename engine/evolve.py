"""Hyperparameter evolution (``train.py --evolve N``) with upstream's selection and mutation rules.

Each generation picks a parent among the 5 fittest rows of ``evolve.csv`` (chance proportional to fitness), mutates
every hyperparameter by a random factor ``(gain * [u < 0.8] * randn * random() * 0.2 + 1)`` clipped to [0.3, 3],
clamps it to its limits in :data:`META`, trains with validation only on the final epoch and no checkpoints, and
appends ``results + hyperparameters`` to ``evolve.csv``. ``hyp_evolve.yaml`` always holds the best row so far and
``evolve.png`` plots every hyperparameter against fitness at the end.

Mutations draw from a generator seeded by ``(--seed, generation)``: a run is reproducible and each generation
differs (training re-seeds the global RNGs, so they cannot be used here).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import yaml

from engine.train_options import TrainError, TrainOptions, load_hyp
from utils.callbacks import Callbacks
from utils.files import atomic_write_bytes
from utils.logging import LOGGER, colorstr
from utils.metrics import fitness
from utils.plotting.results import format_csv_header, format_csv_row, plot_evolve, read_csv_table

PREFIX = colorstr("evolve: ")
RESULT_KEYS = ("metrics/precision", "metrics/recall", "metrics/mAP_0.5", "metrics/mAP_0.5:0.95",
               "val/box_loss", "val/obj_loss", "val/cls_loss")
PARENTS, MUTATION_PROB, MUTATION_SIGMA = 5, 0.8, 0.2

# hyperparameter: (mutation gain (0 = frozen), lower limit, upper limit)
META = {
    "lr0": (1, 1e-5, 1e-1), "lrf": (1, 0.01, 1.0), "momentum": (0.3, 0.6, 0.98), "weight_decay": (1, 0.0, 0.001),
    "warmup_epochs": (1, 0.0, 5.0), "warmup_momentum": (1, 0.0, 0.95), "warmup_bias_lr": (1, 0.0, 0.2),
    "box": (1, 0.02, 0.2), "cls": (1, 0.2, 4.0), "cls_pw": (1, 0.5, 2.0), "obj": (1, 0.2, 4.0),
    "obj_pw": (1, 0.5, 2.0), "iou_t": (0, 0.1, 0.7), "anchor_t": (1, 2.0, 8.0), "anchors": (2, 2.0, 10.0),
    "fl_gamma": (0, 0.0, 2.0), "hsv_h": (1, 0.0, 0.1), "hsv_s": (1, 0.0, 0.9), "hsv_v": (1, 0.0, 0.9),
    "degrees": (1, 0.0, 45.0), "translate": (1, 0.0, 0.9), "scale": (1, 0.0, 0.9), "shear": (1, 0.0, 10.0),
    "perspective": (0, 0.0, 0.001), "flipud": (1, 0.0, 1.0), "fliplr": (0, 0.0, 1.0), "mosaic": (1, 0.0, 1.0),
    "mixup": (1, 0.0, 1.0), "copy_paste": (1, 0.0, 1.0),
}


def select_parent(history: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Return one row of ``history`` (rows of evolve.csv) among the 5 fittest, chosen with weight ~ fitness."""
    scores = fitness(history)
    top = history[np.argsort(-scores)][:PARENTS]
    top_scores = fitness(top)
    weights = top_scores - top_scores.min() + 1e-6
    return top[rng.choice(len(top), p=weights / weights.sum())]


def mutate(hyp: dict, parent: dict, rng: np.random.Generator, meta: dict = META) -> dict:
    """Return ``parent``'s hyperparameters (keys of ``hyp``) times random factors, then clamped and rounded.

    Keys without a ``meta`` entry keep the parent's value. At least one gain-carrying key always changes.
    """
    keys = list(hyp)
    gains = np.array([meta.get(k, (0, 0, 0))[0] for k in keys], dtype=float)
    factors = np.ones(len(keys))
    while gains.any() and np.all(factors == 1):
        factors = (gains * (rng.random(len(keys)) < MUTATION_PROB) * rng.standard_normal(len(keys))
                   * rng.random() * MUTATION_SIGMA + 1).clip(0.3, 3.0)
    return clamp({k: float(parent.get(k, hyp[k])) * f for k, f in zip(keys, factors, strict=True)}, meta)


def clamp(hyp: dict, meta: dict = META) -> dict:
    """Return ``hyp`` with each ``meta`` key limited to its [lower, upper] range and every value rounded to 5 dp."""
    out = {}
    for key, value in hyp.items():
        if key in meta:
            value = min(max(value, meta[key][1]), meta[key][2])
        out[key] = round(float(value), 5)
    return out


def record_generation(save_dir: Path, results: Sequence[float], hyp: dict) -> None:
    """Append one generation to ``evolve.csv`` and rewrite ``hyp_evolve.yaml`` with the best row (atomically).

    Raises:
        TrainError: ``evolve.csv`` exists with other columns (a different set of hyperparameters).
    """
    csv, best_yaml = save_dir / "evolve.csv", save_dir / "hyp_evolve.yaml"
    keys = (*RESULT_KEYS, *hyp)
    values = [*map(float, results), *map(float, hyp.values())]
    if csv.is_file():
        header, _ = read_csv_table(csv)
        if tuple(header) != keys:
            raise TrainError(f"{csv} has columns {header}, but this run evolves {list(keys)}; use a new --name")
        text = csv.read_text()
    else:
        text = format_csv_header(keys) + "\n"
    atomic_write_bytes(csv, (text + format_csv_row(values) + "\n").encode())
    _, table = read_csv_table(csv)
    best = int(np.argmax(fitness(table)))
    comment = ("# YOLOv5 Hyperparameter Evolution Results\n"
               f"# Best generation: {best}\n# Last generation: {len(table) - 1}\n"
               "# " + ", ".join(f"{k:>20s}" for k in RESULT_KEYS) + "\n"
               "# " + ", ".join(f"{v:>20.5g}" for v in table[best, :len(RESULT_KEYS)]) + "\n\n")
    best_hyp = {k: round(float(v), 5) for k, v in zip(hyp, table[best, len(RESULT_KEYS):], strict=True)}
    atomic_write_bytes(best_yaml, (comment + yaml.safe_dump(best_hyp, sort_keys=False)).encode())
    LOGGER.info(f"{PREFIX}{len(table)} generations finished, current result:\n{format_csv_header(keys)}\n"
                f"{format_csv_row(values)}\nbest so far (generation {best}) saved to {best_yaml}")


def _initial_hyp(options: TrainOptions) -> tuple[dict, dict]:
    hyp, meta = load_hyp(options.hyp), dict(META)
    hyp.setdefault("anchors", 3)
    if options.noautoanchor:
        hyp.pop("anchors", None)
        meta.pop("anchors", None)
    return hyp, meta


def _history(csv: Path) -> np.ndarray | None:
    if not csv.is_file():
        return None
    table = read_csv_table(csv)[1]
    return table if len(table) else None


def _warn_unused(options: TrainOptions) -> None:
    if options.bucket:
        LOGGER.warning(f"{PREFIX}--bucket {options.bucket} ignored: nothing is uploaded (no network access)")
    if options.resume_evolve:
        LOGGER.warning(f"{PREFIX}--resume_evolve ignored: this evolution is v7.0-style and continues from evolve.csv; "
                       f"use --evolve N --resume to keep evolving in the same folder")
    if Path(options.evolve_population).resolve() != Path(TrainOptions().evolve_population).resolve():
        LOGGER.warning(f"{PREFIX}--evolve_population ignored: the v7.0-style evolution starts from --hyp")


def evolve(options: TrainOptions, device: torch.device, callbacks: Callbacks | None = None,
           trainer_class: Any = None) -> Path:
    """Run ``options.evolve`` generations in ``options.save_dir``; returns the ``evolve.csv`` path."""
    from engine.trainer import Trainer

    trainer_class = trainer_class or Trainer
    _warn_unused(options)
    hyp, meta = _initial_hyp(options)
    options = dataclasses.replace(options, noval=True, nosave=True)
    save_dir = Path(options.save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    csv = save_dir / "evolve.csv"
    for generation in range(options.evolve):
        history = _history(csv)
        candidate = clamp(hyp, meta)
        if history is not None:
            rng = np.random.default_rng([options.seed, len(history)])
            header = read_csv_table(csv)[0]
            parent = dict(zip(header[len(RESULT_KEYS):], select_parent(history, rng)[len(RESULT_KEYS):], strict=True))
            candidate = mutate(hyp, parent, rng, meta)
        LOGGER.info(f"{PREFIX}generation {generation + 1}/{options.evolve}: "
                    + ", ".join(f"{k}={v}" for k, v in candidate.items()))
        run_options = dataclasses.replace(options, hyp=dict(candidate))
        hooks = callbacks if generation == 0 and callbacks is not None else Callbacks()
        results = trainer_class(run_options, device, hooks).train()
        record_generation(save_dir, results, candidate)
    plot_evolve(csv)
    LOGGER.info(f"Hyperparameter evolution finished {options.evolve} generations\nResults saved to "
                f"{colorstr('bold', save_dir)}\nUsage example: $ python train.py --hyp {save_dir / 'hyp_evolve.yaml'}")
    return csv
