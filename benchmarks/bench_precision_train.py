"""Accuracy guard for the CPU fast path: train the same model on the built-in dataset in fp32 and in the fast path.

Both runs use the same model (``--cfg``, from scratch), data (``--data``, default: the built-in ``shapes``
dataset), image size, batch size, seed(s) and epochs through ``train.run``; the only difference is the precision:

* ``fp32``: ``--fp32`` when train.py has that flag, and the environment variable ``YOLOV5_FP32=1`` (read by
  ``utils.precision.select_precision``) in any case;
* ``fast``: neither (the precision policy's default: bf16 autocast + channels_last on CPUs with native bf16).

Reported: per-run wall time, the precision each run logged (``precision: ...`` lines), both mAP curves (from each
run's ``results.csv``), final and best mAP50 and mAP50-95, and the fast-minus-fp32 final mAP50 against the target
(|difference| <= 0.01), per seed and as the mean over ``--seeds`` (with each mode's seed-to-seed range: the noise
of the schedule). Each run's ``last.pt`` is then validated by ``val.run`` in both precisions, which isolates the
effect of the fast path on evaluation from its effect on the training trajectory. Then the fp32-trained
``best.pt`` is run on ``--compare-images`` validation images in fp32 NCHW and in bf16 + channels_last and the
detections after NMS (conf 0.25, IoU 0.45) are compared (count, matched box IoU and pixel difference, confidence
difference, class agreement). A plot of all curves is written to ``--plot`` (default
``docs/images/precision_map.png``), atomically.

This is a long experiment (two full trainings per seed): run it on a quiet machine.

Usage: ``python benchmarks/bench_precision_train.py [--epochs 30] [--seeds 0 1] [--imgsz 320] [--batch-size 16]
[--workers 2] [--project runs/bench_precision] [--reuse] [--plot docs/images/precision_map.png] [--compare-images 32]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import cv2
import numpy as np
import torch

import train
import val
from benchmarks.bench_stats import paired_interval, read_results, save_figure_atomic, write_json_atomic
from engine.train_options import DEFAULT_DATA
from models.loading import load_model
from utils.data.augment import letterbox
from utils.data.dataset_yaml import check_dataset
from utils.logging import LOGGER
from utils.metrics import box_iou
from utils.nms import non_max_suppression
from utils.precision import cpu_has_native_bf16, float_outputs, select_precision

MAP50_TOLERANCE = 0.01
MODES = ("fp32", "fast")


class _Capture(logging.Handler):
    """Collect the project logger's ``precision: ...`` lines during a run."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "precision:" in message:
            self.lines.append(message.strip())


def trainer_has_fp32_flag() -> bool:
    """True when train.py accepts ``--fp32``."""
    return any("--fp32" in action.option_strings for action in train.build_parser()._actions)


@contextlib.contextmanager
def fp32_environment(force: bool):
    """Set ``YOLOV5_FP32=1`` (force) or unset it for the duration; restore the previous value afterwards."""
    previous = os.environ.pop("YOLOV5_FP32", None)
    if force:
        os.environ["YOLOV5_FP32"] = "1"
    try:
        yield
    finally:
        os.environ.pop("YOLOV5_FP32", None)
        if previous is not None:
            os.environ["YOLOV5_FP32"] = previous


RUN_RECORD = "bench_precision.json"  # wall time and logged precision of a finished run, beside its results.csv


def run_name(mode: str, seed: int) -> str:
    return f"{mode}-seed{seed}"


def train_once(mode: str, seed: int, args: argparse.Namespace) -> dict:
    """Train one run in ``mode`` ('fp32' or 'fast') with ``seed``; returns its save_dir, wall seconds and logged
    precision (also written to ``RUN_RECORD`` in the run folder, for ``--reuse``)."""
    options = dict(data=args.data, cfg=args.cfg, weights="", imgsz=args.imgsz, epochs=args.epochs,
                   batch_size=args.batch_size, workers=args.workers, project=args.project,
                   name=run_name(mode, seed), exist_ok=True, seed=seed, device="cpu")
    if trainer_has_fp32_flag():
        options["fp32"] = mode == "fp32"
    capture = _Capture()
    LOGGER.addHandler(capture)
    start = time.perf_counter()
    try:
        with fp32_environment(mode == "fp32"):
            opt = train.run(**options)
    finally:
        LOGGER.removeHandler(capture)
    seconds = time.perf_counter() - start
    logged = capture.lines[0] if capture.lines else "not logged (trainer does not report utils.precision yet)"
    save_dir = Path(opt.save_dir)
    record = {"mode": mode, "seed": seed, "epochs": args.epochs, "seconds": seconds, "precision": logged}
    write_json_atomic(save_dir / RUN_RECORD, record)
    return {**record, "save_dir": save_dir}


def run_label(run: dict) -> str:
    return f"{run['mode']} seed {run['seed']}"


def reuse_run(mode: str, seed: int, args: argparse.Namespace) -> dict | None:
    """A finished run of (mode, seed) with ``args.epochs`` epochs in ``args.project`` (``--reuse``), else None."""
    save_dir = Path(args.project) / run_name(mode, seed)
    try:
        record = json.loads((save_dir / RUN_RECORD).read_text())
        epochs = len(read_results(save_dir)["epoch"])
    except (OSError, ValueError, KeyError):
        return None
    if record.get("epochs") != args.epochs or epochs != args.epochs:
        return None
    return {**record, "mode": mode, "seed": seed, "save_dir": save_dir}


def summary_table(runs: list[dict]) -> str:
    """Markdown table: precision, wall time, final/best mAP50 and final mAP50-95 per run."""
    lines = ["| run | precision logged | wall time | final mAP50 | best mAP50 | final mAP50-95 |",
             "|---|---|---|---|---|---|"]
    for run in runs:
        curve = run["results"]
        lines.append(f"| {run_label(run)} | {run['precision']} | {run['seconds'] / 60:.1f} min | "
                     f"{curve['metrics/mAP_0.5'][-1]:.4f} | {curve['metrics/mAP_0.5'].max():.4f} | "
                     f"{curve['metrics/mAP_0.5:0.95'][-1]:.4f} |")
    return "\n".join(lines)


def curves_table(runs: list[dict]) -> str:
    """Markdown table of mAP50 per epoch for every run."""
    lines = ["| epoch | " + " | ".join(f"{run_label(r)} mAP50" for r in runs) + " |", "|---" * (len(runs) + 1) + "|"]
    epochs = runs[0]["results"]["epoch"]
    for i, epoch in enumerate(epochs):
        cells = [f"{r['results']['metrics/mAP_0.5'][i]:.4f}" if i < len(r["results"]["epoch"]) else "-" for r in runs]
        lines.append(f"| {int(epoch)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def save_plot(runs: list[dict], file: Path, title: str) -> None:
    """Plot mAP50 and mAP50-95 per epoch: each run thin, each mode's mean over seeds bold; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), tight_layout=True)
    colours = {"fp32": "tab:blue", "fast": "tab:orange"}
    keys = ("metrics/mAP_0.5", "metrics/mAP_0.5:0.95")
    for mode in MODES:
        mode_runs = [run for run in runs if run["mode"] == mode]
        if not mode_runs:
            continue
        for run in mode_runs:
            for axis, key in zip(axes, keys, strict=True):
                axis.plot(run["results"]["epoch"], run["results"][key], "-", lw=0.8, alpha=0.35,
                          color=colours[mode])
        length = min(len(run["results"]["epoch"]) for run in mode_runs)
        minutes = np.mean([run["seconds"] for run in mode_runs]) / 60
        label = f"{mode}, mean of {len(mode_runs)} seed(s) ({minutes:.1f} min per run)"
        for axis, key in zip(axes, keys, strict=True):
            mean = np.mean([run["results"][key][:length] for run in mode_runs], axis=0)
            axis.plot(mode_runs[0]["results"]["epoch"][:length], mean, "-", lw=2.2, marker=".",
                      color=colours[mode], label=label)
    for axis, key in zip(axes, keys, strict=True):
        axis.set(xlabel="epoch", ylabel=key.split("/")[1], title=f"{key.split('/')[1]} (thin: single seeds)")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
        axis.legend()
    fig.suptitle(title)
    save_figure_atomic(fig, file)
    plt.close(fig)


def validation_batch(data: str, imgsz: int, count: int) -> torch.Tensor:
    """The first ``count`` validation images, letterboxed to ``imgsz``, as a (n, 3, imgsz, imgsz) batch in [0, 1]."""
    val = check_dataset(data)["val"]
    folders = [Path(v) for v in (val if isinstance(val, list) else [val]) if Path(v).is_dir()]
    suffixes = (".jpg", ".jpeg", ".png", ".bmp")
    files = sorted(p for folder in folders for p in folder.rglob("*") if p.suffix.lower() in suffixes)[:count]
    images = [letterbox(cv2.imread(str(f)), imgsz, auto=False)[0][..., ::-1].transpose(2, 0, 1) for f in files]
    return torch.from_numpy(np.ascontiguousarray(np.stack(images))).float() / 255


def compare_detections(weights: Path, images: torch.Tensor) -> str:
    """Detections of ``weights`` in fp32 NCHW vs bf16 + channels_last on ``images``: a one-paragraph summary."""
    if not cpu_has_native_bf16():
        return "detection comparison skipped: this CPU has no native bf16 (the policy stays fp32 here)"
    model = load_model(weights, fuse=True)
    with torch.inference_mode():
        reference = non_max_suppression(model(images)[0], conf_thres=0.25, iou_thres=0.45)
        policy = select_precision("cpu", log=False)
        fast_model = policy.prepare_model(model)
        with policy.autocast():
            fast = float_outputs(fast_model(policy.prepare_input(images))[0])
        candidate = non_max_suppression(fast, conf_thres=0.25, iou_thres=0.45)
    counts = np.array([[len(r), len(c)] for r, c in zip(reference, candidate, strict=True)])
    ious, box_px, conf, same_cls = [], [], [], []
    for ref, cand in zip(reference, candidate, strict=True):
        if len(ref) and len(cand):
            best, index = box_iou(ref[:, :4], cand[:, :4]).max(1)
            ious.append(best)
            box_px.append((ref[:, :4] - cand[index, :4]).abs().amax(1))
            conf.append((ref[:, 4] - cand[index, 4]).abs())
            same_cls.append(ref[:, 5] == cand[index, 5])
    if not ious:
        return f"detection comparison: no detections at conf 0.25 in {len(images)} images (fp32 {counts[:, 0].sum()})"
    ious, box_px, conf, same_cls = (torch.cat(x) for x in (ious, box_px, conf, same_cls))
    return (f"detection comparison on {len(images)} val images ({policy.name} vs fp32, NMS conf 0.25 IoU 0.45): "
            f"boxes {counts[:, 0].sum()} vs {counts[:, 1].sum()}, max per-image count difference "
            f"{np.abs(counts[:, 0] - counts[:, 1]).max()}; matched IoU min {ious.min():.3f} (median "
            f"{ious.median():.4f}); max box difference {box_px.max():.2f} px; max conf difference {conf.max():.4f}; "
            f"same class {same_cls.float().mean() * 100:.1f} %")


def evaluate_both_ways(runs: list[dict], args: argparse.Namespace) -> str:
    """Validate each run's final weights (``last.pt``) with ``val.run`` in fp32 and in the fast path.

    This separates the two things the final-mAP50 difference mixes: what the fast path does to *evaluation* (same
    weights, two precisions: the difference should be far inside the tolerance) and what it does to the training
    trajectory (different weights, chaotic over a from-scratch schedule, like a different seed).
    """
    lines = ["| weights (last.pt) | val mAP50 in fp32 | val mAP50 in the fast path | fast - fp32 |",
             "|---|---|---|---|"]
    for run in runs:
        weights = run["save_dir"] / "weights" / "last.pt"
        if not weights.is_file():
            continue
        map50 = {}
        for mode in MODES:
            with fp32_environment(mode == "fp32"):
                results, _, _ = val.run(data=args.data, weights=weights, batch_size=args.batch_size, imgsz=args.imgsz,
                                        workers=args.workers, plots=False, project=args.project,
                                        name=f"val-{run['mode']}-seed{run['seed']}-{mode}", exist_ok=True,
                                        fp32=mode == "fp32")
            map50[mode] = results[2]
        lines.append(f"| {run_label(run)} | {map50['fp32']:.4f} | {map50['fast']:.4f} | "
                     f"{map50['fast'] - map50['fp32']:+.4f} |")
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=DEFAULT_DATA, help="dataset.yaml (default: built-in shapes)")
    parser.add_argument("--cfg", default="yolov5n.yaml")
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="train both ways once per seed; the verdict uses the per-mode mean final mAP50")
    parser.add_argument("--project", default=str(ROOT / "runs" / "bench_precision"))
    parser.add_argument("--reuse", action="store_true",
                        help="reuse finished runs of the same mode, seed and epochs found in --project (add seeds)")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "images" / "precision_map.png")
    parser.add_argument("--compare-images", type=int, default=32, help="val images for the detection comparison")
    return parser.parse_args()


def verdict(runs: list[dict]) -> str:
    """Final-mAP50 comparison: per seed, per-mode means, and the seed-to-seed spread of each mode."""
    final = {(run["mode"], run["seed"]): float(run["results"]["metrics/mAP_0.5"][-1]) for run in runs}
    seeds = sorted({seed for _, seed in final})
    lines = [f"seed {seed}: final mAP50 fp32 {final['fp32', seed]:.4f}, fast {final['fast', seed]:.4f}, "
             f"fast - fp32 {final['fast', seed] - final['fp32', seed]:+.4f}" for seed in seeds]
    means = {mode: float(np.mean([final[mode, seed] for seed in seeds])) for mode in MODES}
    if len(seeds) > 1:
        for mode in MODES:
            values = [final[mode, seed] for seed in seeds]
            lines.append(f"{mode}: seed-to-seed range of final mAP50 {max(values) - min(values):.4f} "
                         f"(the run-to-run noise of this schedule)")
    difference = means["fast"] - means["fp32"]
    lines.append(f"mean final mAP50 over {len(seeds)} seed(s): fp32 {means['fp32']:.4f}, fast {means['fast']:.4f}; "
                 f"fast - fp32 = {difference:+.4f} (target |difference| <= {MAP50_TOLERANCE}): "
                 f"{'OK' if abs(difference) <= MAP50_TOLERANCE else 'OUTSIDE TARGET'}")
    if len(seeds) > 1:
        low, high, error = paired_interval([final["fast", s] - final["fp32", s] for s in seeds])
        resolved = -MAP50_TOLERANCE <= low and high <= MAP50_TOLERANCE
        lines.append(f"standard error of the mean difference {error:.4f}; 95 % interval [{low:+.4f}, {high:+.4f}]: "
                     + ("inside the target" if resolved else
                        f"wider than the target, so {len(seeds)} seeds of this schedule cannot confirm it"))
    seconds = {mode: sum(run["seconds"] for run in runs if run["mode"] == mode) for mode in MODES}
    lines.append(f"wall time fast / fp32 = {seconds['fast'] / seconds['fp32']:.2f}x")
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    check_dataset(args.data)  # generate the built-in data before timing anything
    runs = []
    for seed in args.seeds:
        for mode in MODES:
            run = (reuse_run(mode, seed, args) if args.reuse else None) or train_once(mode, seed, args)
            run["results"] = read_results(run["save_dir"])
            runs.append(run)
            print(f"{run_label(run)}: {run['seconds'] / 60:.1f} min, final mAP50 "
                  f"{run['results']['metrics/mAP_0.5'][-1]:.4f}, {run['precision']}", flush=True)
    title = f"{Path(args.cfg).stem} @ {args.imgsz} px, {args.epochs} epochs, {Path(args.data).stem}: fp32 vs fast path"
    save_plot(runs, args.plot, title)
    print(f"\n{summary_table(runs)}\n\n{curves_table(runs)}\n")
    print(verdict(runs))
    print(f"\nEvaluation precision alone (same weights, val.run both ways):\n{evaluate_both_ways(runs, args)}\n")
    weights = runs[0]["save_dir"] / "weights" / "best.pt"
    if weights.is_file() and args.compare_images > 0:
        print(compare_detections(weights, validation_batch(args.data, args.imgsz, args.compare_images)))
    print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
