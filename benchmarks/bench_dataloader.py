"""Benchmark the augmented (mosaic) training loader: images/s through ``create_dataloader``.

Setting: 256 JPEGs of about 320x400 px with ~5 boxes each, generated in a temp folder; hyp.scratch-low;
batch 16; 2 workers; 640 px (plus 320 px and ``--cache ram``). ``--reference`` also times the canvas mosaic path
(resize, paste on a 2s canvas, warp), i.e. without the direct single-warp optimisation. ``--profile`` prints a
cProfile of the per-sample path in this process.

    python benchmarks/bench_dataloader.py [--batches 48] [--workers 2] [--reference] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from utils.data import mosaic  # noqa: E402
from utils.data.loaders import create_dataloader  # noqa: E402
from utils.data.shapes import SHAPE_NAMES, draw_background, draw_shape, shape_polygons  # noqa: E402
from utils.files import yaml_load  # noqa: E402


def make_images(folder: Path, count: int = 256, seed: int = 0) -> Path:
    """Write ``count`` JPEGs of ~320x400 px (jittered) with YOLO labels; returns the images folder."""
    image_dir, label_dir = folder / "images" / "train", folder / "labels" / "train"
    image_dir.mkdir(parents=True)
    label_dir.mkdir(parents=True)
    for i in range(count):
        rng = np.random.default_rng([seed, i])
        width, height = int(rng.integers(380, 421)), int(rng.integers(300, 341))
        image = draw_background(rng, width, height)
        lines = []
        for _ in range(5):
            cls = int(rng.integers(len(SHAPE_NAMES)))
            radius = float(rng.uniform(12, 70))
            centre = rng.uniform([radius, radius], [width - radius, height - radius])
            polygons = shape_polygons(SHAPE_NAMES[cls], centre, radius, rng)
            draw_shape(rng, image, SHAPE_NAMES[cls], polygons)
            (x1, y1), (x2, y2) = np.concatenate(polygons).min(0), np.concatenate(polygons).max(0)
            lines.append(f"{cls} {(x1 + x2) / 2 / width:.6f} {(y1 + y2) / 2 / height:.6f} "
                         f"{(x2 - x1) / width:.6f} {(y2 - y1) / height:.6f}")
        cv2.imwrite(str(image_dir / f"{i:04d}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        (label_dir / f"{i:04d}.txt").write_text("\n".join(lines) + "\n")
    return image_dir


def _cpu_seconds() -> float:
    """CPU time (user + system) of this process and its live children (the loader workers)."""
    import psutil

    me = psutil.Process()
    processes = [me, *me.children(recursive=True)]
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def measure(images: Path, imgsz: int, batches: int, workers: int, cache, hyp: dict,
            direct: bool = True) -> tuple[float, float]:
    """Return (images/s wall clock, CPU ms per image over main + workers) for ``batches`` batches of 16.

    Three warm-up batches run first (workers started). The CPU figure does not depend on other load on the
    machine; ``workers * 1000 / cpu_ms`` is the rate the loader would reach with that many idle cores.
    """
    original = mosaic.is_axis_aligned
    if not direct:  # patched before the workers fork so that they inherit it
        mosaic.is_axis_aligned = lambda matrix: False
    try:
        loader, _ = create_dataloader(str(images), imgsz, 16, 32, hyp=hyp, augment=True, cache=cache,
                                      workers=workers, shuffle=True, prefix="bench: ")
    finally:
        mosaic.is_axis_aligned = original
    iterator = iter(_forever(loader))
    for _ in range(3):
        next(iterator)
    cpu_start, start = _cpu_seconds(), time.perf_counter()
    seen = sum(len(next(iterator)[0]) for _ in range(batches))
    wall, cpu = time.perf_counter() - start, _cpu_seconds() - cpu_start
    return seen / wall, cpu * 1000 / seen


def _forever(loader):
    while True:
        yield from loader


def profile(images: Path, imgsz: int, hyp: dict, samples: int = 200) -> None:
    """Print the top functions (CPU time) of the per-sample path in this process."""
    _, dataset = create_dataloader(str(images), imgsz, 16, 32, hyp=hyp, augment=True, workers=0)
    profiler = cProfile.Profile(time.process_time)
    profiler.enable()
    for i in range(samples):
        dataset[i % len(dataset)]
    profiler.disable()
    pstats.Stats(profiler).sort_stats("tottime").print_stats(14)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=48)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--reference", action="store_true", help="also time the canvas (non-direct) mosaic path")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    cv2.setNumThreads(0)
    hyp = yaml_load(ROOT / "data/hyps/hyp.scratch-low.yaml")
    with tempfile.TemporaryDirectory() as folder:
        images = make_images(Path(folder))
        if args.profile:
            profile(images, 640, hyp)
        cases = [("640 px", 640, False, True), ("320 px", 320, False, True), ("640 px --cache ram", 640, "ram", True)]
        if args.reference:
            cases.append(("640 px canvas path (reference)", 640, False, False))
        results = [(name, measure(images, size, args.batches, args.workers, cache, hyp, direct))
                   for name, size, cache, direct in cases]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\nmosaic training loader, batch 16, {args.workers} workers, 256 JPEGs ~320x400 px "
          f"({os.cpu_count()} CPUs, load average {load:.1f}):")
    print(f"  {'setting':32s} {'images/s':>9s} {'CPU ms/image':>13s} {'CPU-bound images/s':>19s}")
    for name, (rate, cpu_ms) in results:
        bound = min(args.workers, os.cpu_count() or 1) * 1000 / cpu_ms
        print(f"  {name:32s} {rate:9.1f} {cpu_ms:13.2f} {bound:19.1f}")


if __name__ == "__main__":
    main()
