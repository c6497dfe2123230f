"""How fast can yolov5s@640 batch-1 inference get on this CPU? Every inference path, the machine's compute roof and a
profile of where the time goes, against upstream's fp32 time measured in the same rounds.

    $ python benchmarks/bench_infer_limit.py --upstream /path/to/upstream          # about 6 minutes on 2 cores
    $ python benchmarks/bench_infer_limit.py --runs 9 --skip-compile --skip-int8

Variants, timed round-robin (``--runs`` rounds after ``--warmup``; median wall time), fused model, random weights with
calibrated BatchNorm (see ``bench_precision.py``):

* ``fp32 NCHW``, ``fp32 channels_last`` (eager PyTorch, what the CPU path runs without native bf16),
* ``bf16 autocast + CL`` (the shipped fast path where the CPU has native bf16; emulated and slow elsewhere),
* ``torch.compile`` (inductor CPU backend, fp32, channels_last, ``max-autotune-no-cudagraphs``): graph capture and
  fused kernels,
* ``ONNX Runtime fp32`` (all graph optimisations) and ``ONNX Runtime int8`` (static QDQ quantisation, per-channel
  weights, calibrated on a few images; accuracy changes, reported as the max abs difference of the decoded boxes),
* ``upstream fp32 NCHW`` with ``--upstream DIR`` (``pip install --no-deps --target DIR yolov5==7.0.14``).

The roof: the model's FLOPs (2 x thop MACs at 640) divided by the best fp32 matrix-multiply rate this machine reaches
(``torch.mm`` 2048^3, two threads) is the fastest any fp32 path could be if every layer ran at GEMM speed; the
profile (``torch.profiler``, fp32 channels_last) gives the share of convolutions, activations, concatenations and the
rest, and a tiny convolution's time estimates the fixed cost per call. Prints a verdict against the 0.35x target.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from copy import deepcopy
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_precision as bp
import torch
import torch.nn as nn

from utils.precision import cpu_has_native_bf16

TARGET = 0.35
UPSTREAM = "upstream fp32 NCHW"


def gemm_gflops(threads: int, size: int = 2048, repeats: int = 5) -> float:
    """Best fp32 ``torch.mm`` rate (GFLOP/s) of ``size``^3 products with ``threads`` threads."""
    torch.set_num_threads(threads)
    a, b = torch.rand(size, size), torch.rand(size, size)
    torch.mm(a, b)
    best = min(_seconds(lambda: torch.mm(a, b)) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def _seconds(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def model_gflops(model: nn.Module, imgsz: int) -> float:
    """2 x thop MACs of one forward at ``imgsz`` (upstream's GFLOPs convention), in GFLOP."""
    import thop

    with bp.quiet():
        macs = thop.profile(deepcopy(model), inputs=(torch.zeros(1, 3, imgsz, imgsz),), verbose=False)[0]
    return 2 * macs / 1e9


def compiled_step(fused: nn.Module, image: torch.Tensor) -> Callable[[], torch.Tensor] | None:
    """A ``torch.compile`` (inductor) forward of a channels_last fp32 copy; None when compilation fails here."""
    model = deepcopy(fused).to(memory_format=torch.channels_last)
    batch = image.contiguous(memory_format=torch.channels_last)
    try:
        compiled = torch.compile(model, mode="max-autotune-no-cudagraphs", fullgraph=False)
        with torch.inference_mode():
            compiled(batch)
    except Exception as error:  # no compiler toolchain, unsupported op, ...: reported, the others still run
        print(f"torch.compile unavailable here: {type(error).__name__}: {str(error)[:200]}")
        return None

    def step() -> torch.Tensor:
        with torch.inference_mode():
            return compiled(batch)[0]

    return step


def int8_step(fused: nn.Module, image: torch.Tensor, threads: int) -> tuple[Callable[[], Any], str] | None:
    """ONNX Runtime int8 (static QDQ, per-channel) forward and how far its boxes move from fp32; None if absent."""
    try:
        import numpy as np
        import onnxruntime as ort
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    except ImportError:
        return None

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            generator = torch.Generator().manual_seed(2)
            self.batches = iter([{"images": torch.rand(image.shape, generator=generator).numpy()} for _ in range(4)])

        def get_next(self) -> dict | None:
            return next(self.batches, None)

    with tempfile.TemporaryDirectory() as folder:
        fp32_file = bp.export_onnx(fused, image, Path(folder) / "model.onnx", opset=17)
        int8_file = Path(folder) / "model_int8.onnx"
        with bp.quiet():
            quantize_static(str(fp32_file), str(int8_file), Reader(), quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(str(int8_file), options, providers=["CPUExecutionProvider"])
    feed = {"images": image.numpy()}
    with torch.inference_mode():
        reference = fused(image)[0].numpy()
    moved = np.abs(session.run(None, feed)[0][..., :4] - reference[..., :4])
    note = f"decoded xywh move by {np.median(moved):.2f} px (median), {moved.max():.1f} px (max) from fp32"
    return (lambda: session.run(None, feed)), note


def profile_shares(fused: nn.Module, image: torch.Tensor, runs: int = 5) -> dict[str, float]:
    """Share of CPU self time per op family (conv, activation, cat, pool/upsample, other) and the conv call count."""
    model = deepcopy(fused).to(memory_format=torch.channels_last)
    batch = image.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        model(batch)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(runs):
                model(batch)
    families = {"conv": ("conv", "mkldnn"), "activation": ("silu", "sigmoid", "relu"), "cat": ("cat",),
                "pool/upsample": ("pool", "upsample")}
    totals = dict.fromkeys([*families, "other"], 0.0)
    conv_calls = 0
    for event in prof.key_averages():
        name = event.key.lower()
        family = next((f for f, keys in families.items() if any(k in name for k in keys)), "other")
        totals[family] += event.self_cpu_time_total
        if name == "aten::convolution":
            conv_calls = event.count // runs
    whole = sum(totals.values()) or 1.0
    return {**{k: v / whole for k, v in totals.items()}, "conv_calls": conv_calls}


def tiny_conv_us(repeats: int = 2000) -> float:
    """Median microseconds of a 1x1 convolution on a (1, 16, 8, 8) channels_last tensor: the fixed cost per call."""
    conv = nn.Conv2d(16, 16, 1).eval().to(memory_format=torch.channels_last)
    x = torch.rand(1, 16, 8, 8).contiguous(memory_format=torch.channels_last)
    times = []
    with torch.inference_mode():
        for _ in range(repeats):
            times.append(_seconds(lambda: conv(x)))
    return statistics.median(times) * 1e6


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstream", default="", help="folder holding upstream's yolov5 package (pip --target)")
    parser.add_argument("--model", default="yolov5s")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--skip-compile", action="store_true")
    parser.add_argument("--skip-int8", action="store_true")
    parser.add_argument("--skip-bf16", action="store_true", help="skip the bf16 autocast variant")
    return parser.parse_args(argv)


def collect_steps(args: argparse.Namespace, fused: nn.Module, image: torch.Tensor) -> tuple[dict, dict]:
    """Every variant's step function, and notes (the int8 output difference)."""
    steps: dict[str, Callable[[], Any]] = {"fp32 NCHW": bp.inference_step(fused, image, False, False),
                                           "fp32 channels_last": bp.inference_step(fused, image, True, False)}
    notes: dict[str, str] = {}
    if not args.skip_bf16:
        label = "bf16 autocast + CL" + ("" if cpu_has_native_bf16() else " (emulated)")
        steps[label] = bp.inference_step(fused, image, True, True)
    if not args.skip_compile and (step := compiled_step(fused, image)) is not None:
        steps["torch.compile fp32 CL"] = step
    if (step := bp.onnx_step(fused, image, args.threads)) is not None:
        steps["ONNX Runtime fp32"] = step
    if not args.skip_int8 and (found := int8_step(fused, image, args.threads)) is not None:
        steps["ONNX Runtime int8"], notes["ONNX Runtime int8"] = found
    if args.upstream:
        upstream = bp.load_upstream(Path(args.upstream))
        steps[UPSTREAM] = bp.inference_step(bp.fused_eval(bp.build_upstream(upstream, args.model, args.imgsz)), image,
                                         False, False)
    return steps, notes


def main(args: argparse.Namespace) -> dict:
    """Measure, print the table, the roof, the profile and the verdict; returns the figures."""
    torch.set_num_threads(args.threads)
    model = bp.build_model(args.model, args.imgsz)
    fused = bp.fused_eval(model)
    image = torch.rand(1, 3, args.imgsz, args.imgsz, generator=torch.Generator().manual_seed(1))
    gflop = model_gflops(fused, args.imgsz)
    peak = gemm_gflops(args.threads)
    steps, notes = collect_steps(args, fused, image)
    figures = {label: values[0] for label, values in bp.measure_round_robin(steps, args.warmup, args.runs).items()}
    reference = figures.get(UPSTREAM)
    print(f"\n{args.model}@{args.imgsz} batch 1, {args.threads} threads, median of {args.runs} round-robin runs")
    print("| variant | ms | GFLOP/s | x upstream fp32 | note |\n|---|---|---|---|---|")
    for label, seconds in figures.items():
        ratio = f"{seconds / reference:.2f}x" if reference else "-"
        print(f"| {label} | {seconds * 1000:.1f} | {gflop / seconds:.0f} | {ratio} | {notes.get(label, '')} |")
    roof_ms = gflop / peak * 1000
    print(f"\nmodel: {gflop:.1f} GFLOP per image; fp32 GEMM roof of this machine: {peak:.0f} GFLOP/s "
          f"-> no fp32 path can beat {roof_ms:.1f} ms")
    shares = profile_shares(fused, image)
    print("profile (fp32 channels_last, self CPU time): " + ", ".join(
        f"{k} {v:.0%}" for k, v in shares.items() if k != "conv_calls")
          + f"; {shares['conv_calls']} convolution calls, a tiny convolution costs {tiny_conv_us():.0f} us")
    result = {"figures_ms": {k: v * 1000 for k, v in figures.items()}, "gflop": gflop, "gemm_gflops": peak,
              "roof_ms": roof_ms, "shares": shares}
    if reference:
        best_label = min((k for k in figures if k != UPSTREAM), key=figures.get)
        best = figures[best_label] / reference
        roof = roof_ms / 1000 / reference
        print(f"best: {best_label} at {best:.2f}x upstream fp32 (target <= {TARGET}x); the fp32 roof alone is "
              f"{roof:.2f}x, so {'an fp32 path could still' if roof <= TARGET else 'no fp32 path can'} meet it")
        result.update(best=best_label, best_ratio=best, roof_ratio=roof)
    return result


if __name__ == "__main__":
    main(parse_args())
