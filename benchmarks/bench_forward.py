"""Benchmark the fused eval forward pass of YOLOv5 models on CPU (batch 1), the way detect.py runs them.

Cases: yolov5n at 320 px and yolov5s at 640 px. Variants: fp32 NCHW (the reference, compared with upstream on the
same 2-core machine kind: 38 ms and 248 ms), fp32 channels_last, bf16 autocast + channels_last, and optionally
``torch.compile`` (fp32 NCHW). Weights are random: latency does not depend on their values. Each timing is the
median of ``--runs`` forwards after ``--warmup`` forwards, under ``torch.inference_mode``.

Usage: ``python benchmarks/bench_forward.py [--threads 2] [--runs 20] [--warmup 5] [--compile] [--profile]``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import statistics
import sys
import time
from copy import deepcopy
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch

from models.yolo import DetectionModel
from utils.logging import LOGGER

CASES = (("yolov5n.yaml", 320), ("yolov5s.yaml", 640))
UPSTREAM_MS = {"yolov5n.yaml": 38.0, "yolov5s.yaml": 248.0}


def fused_model(cfg: str) -> DetectionModel:
    """Return a fused, eval-mode model built from ``cfg`` (random weights, summary logging silenced)."""
    level = LOGGER.level
    LOGGER.setLevel(logging.WARNING)
    try:
        torch.manual_seed(0)
        return DetectionModel(cfg).fuse().eval()
    finally:
        LOGGER.setLevel(level)


def median_ms(fn, x: torch.Tensor, runs: int, warmup: int) -> tuple[float, float]:
    """Return the median wall time and the median process CPU time (all threads) of ``fn(x)``, in milliseconds.

    On a machine shared with other work the wall time is inflated; CPU time / threads is then the better estimate
    of the unloaded latency (exact only for perfect parallel scaling).
    """
    wall, cpu = [], []
    with torch.inference_mode():
        for i in range(warmup + runs):
            t0, c0 = time.perf_counter(), time.process_time()
            fn(x)
            if i >= warmup:
                wall.append((time.perf_counter() - t0) * 1000)
                cpu.append((time.process_time() - c0) * 1000)
    return statistics.median(wall), statistics.median(cpu)


def to_channels_last(x: torch.Tensor) -> torch.Tensor:
    """Return ``x`` (b, c, h, w) stored NHWC."""
    return x.contiguous(memory_format=torch.channels_last)


def variants(model: DetectionModel, use_compile: bool) -> dict:
    """Return ``name -> (callable, input transform)`` for each benchmarked variant (each on its own model copy)."""
    nhwc_model = deepcopy(model).to(memory_format=torch.channels_last)

    def bf16(x: torch.Tensor):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return nhwc_model(x)

    out = {"fp32 NCHW": (model, lambda x: x), "fp32 channels_last": (nhwc_model, to_channels_last),
           "bf16 autocast + channels_last": (bf16, to_channels_last)}
    if use_compile:
        out["torch.compile fp32 NCHW"] = (torch.compile(deepcopy(model)), lambda x: x)
    return out


def run_case(cfg: str, size: int, args: argparse.Namespace) -> list[tuple]:
    """Time every variant of one model; returns rows ``(model@size, variant, wall ms, cpu ms, max |diff| vs fp32)``."""
    model = fused_model(cfg)
    x = torch.rand(1, 3, size, size)
    with torch.inference_mode():
        reference = model(x)[0]
    rows = []
    for name, (fn, transform) in variants(model, args.compile).items():
        xi = transform(x)
        t0 = time.perf_counter()
        with torch.inference_mode():
            first = fn(xi)[0].float()
        setup_s = time.perf_counter() - t0
        wall, cpu = median_ms(fn, xi, args.runs, args.warmup)
        diff = (first - reference).abs().max().item()
        rows.append((f"{Path(cfg).stem}@{size}", name, wall, cpu, diff))
        print(f"{rows[-1][0]:<14} {name:<32} wall {wall:8.1f} ms  cpu {cpu:8.1f} ms  max|diff| {diff:8.3g}  "
              f"first call {setup_s:6.1f} s", flush=True)
    return rows


def profile_case(cfg: str, size: int, top: int = 12) -> None:
    """Print the operators that dominate one fp32 NCHW forward (torch.profiler, self CPU time)."""
    model = fused_model(cfg)
    x = torch.rand(1, 3, size, size)
    with torch.inference_mode():
        model(x)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            model(x)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--runs", type=int, default=20, help="timed forwards per variant (median reported)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed forwards before timing")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (slow first call)")
    parser.add_argument("--profile", action="store_true", help="print an operator profile of each fp32 case")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch 1, fused, eval")
    rows = []
    for cfg, size in CASES:
        rows += run_case(cfg, size, args)
        if args.profile:
            profile_case(cfg, size)
    print(f"\n| model | variant | wall ms (median of {args.runs}) | CPU ms / {args.threads} threads | upstream fp32 ms "
          f"| max abs diff vs fp32 (px) |")
    print("|---|---|---|---|---|---|")
    for model_size, name, wall, cpu, diff in rows:
        upstream = UPSTREAM_MS.get(model_size.split("@")[0] + ".yaml", float("nan"))
        print(f"| {model_size} | {name} | {wall:.1f} | {cpu / args.threads:.1f} | {upstream:.0f} | {diff:.2g} |")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
