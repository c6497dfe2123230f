"""CPU precision/memory-format benchmark: inference latency and training step time, printed as markdown tables.

Inference (fused, eval, ``inference_mode``): yolov5n@320 and yolov5s@640 at batch 1 and 16, in

* fp32 NCHW (the reference), fp32 channels_last, bf16 autocast + channels_last (the CPU fast path of
  ``utils.precision``; marked *emulated* where the CPU has no native bf16, which the policy then never picks),
* ONNX Runtime fp32 (``torch.onnx.export``, TorchScript exporter, opset 17, CPU provider, ``--threads`` intra-op
  threads).

Training step (forward + ``ComputeLoss`` on fp32-cast outputs + backward + SGD step, batch 16, synthetic images
and targets): yolov5n@320 and yolov5s@640 in fp32 NCHW, channels_last and bf16 + channels_last.

Weights are random (latency does not depend on their values), but BatchNorm statistics are calibrated on one noise
batch first: an untouched random init underflows to denormal floats, which is unrepresentatively slow in fp32.
Each figure is the median wall time (``--stat min``: the minimum; ``--stat cpu``: the median process CPU time,
both threads summed) of ``--runs`` timings after ``--warmup`` untimed ones; ``--quick`` caps the slow cases (640 px
at batch 16) to 1 warmup + 2 runs; training figures use 2 warmup steps. The load average is printed with the
tables. On a busy machine wall times of multi-threaded PyTorch inflate badly (OpenMP threads wait for descheduled
peers): prefer ``--stat cpu`` there, and run with ``OMP_WAIT_POLICY=PASSIVE`` so that waiting is not counted as work.

Targets (upstream YOLOv5 on this machine kind, 2 threads): yolov5s@640 batch-1 inference fp32 175 ms, target
<= 0.35x (61 ms); yolov5n@320 batch-16 training step fp32 0.73 s, target <= 0.5x (0.365 s).

Usage: ``python benchmarks/bench_precision.py [--threads 2] [--runs 10] [--warmup 3] [--quick] [--skip-train]
[--skip-infer] [--skip-onnx] [--cases n320 s640] [--batches 1 16]``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from copy import deepcopy
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch
import torch.nn as nn

from models.yolo import Model
from utils.logging import LOGGER
from utils.loss import ComputeLoss
from utils.optim import smart_optimizer
from utils.precision import PrecisionPolicy, cpu_has_native_bf16, float_outputs
from utils.train_options import DEFAULT_HYP, load_hyp

CASES = {"n320": ("yolov5n", 320), "s640": ("yolov5s", 640)}
UPSTREAM_INFER_MS = {("s640", 1): 175.0}  # upstream fp32 NCHW on this machine kind (issue 10)
UPSTREAM_TRAIN_S = {"n320": 0.73}  # upstream fp32 batch-16 step on this machine kind (issue 10)
TARGET_RATIO = {"infer": 0.35, "train": 0.5}
VARIANTS = {
    "fp32 NCHW": PrecisionPolicy("cpu", None, False, "reference"),
    "fp32 channels_last": PrecisionPolicy("cpu", None, True, "memory format only"),
    "bf16 + channels_last": PrecisionPolicy("cpu", torch.bfloat16, True, "CPU fast path"),
}
SLOW_CASES = {("s640", 16)}
STATISTIC: dict = {"name": "median", "log": []}


@contextlib.contextmanager
def quiet():
    """Silence the project logger (model summaries, optimizer lines) and stdout/stderr chatter."""
    level = LOGGER.level
    LOGGER.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        LOGGER.setLevel(level)


def measure(step: Callable[[], object], warmup: int, runs: int) -> float:
    """Seconds per ``step()`` over ``runs`` calls after ``warmup`` untimed ones, by ``STATISTIC['name']``.

    ``median``/``min``: wall time; ``cpu``: median process CPU time (all threads summed), which a busy machine
    distorts far less than wall time. All three are kept in ``STATISTIC['log']`` as (median, min, cpu).
    """
    for _ in range(warmup):
        step()
    wall, cpu = [], []
    for _ in range(runs):
        start, start_cpu = time.perf_counter(), time.process_time()
        step()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    figures = (statistics.median(wall), min(wall), statistics.median(cpu))
    STATISTIC["log"].append(figures)
    return figures[("median", "min", "cpu").index(STATISTIC["name"])]


def build_model(name: str, imgsz: int, nc: int = 80) -> nn.Module:
    """Random-init ``name`` (yolov5n/yolov5s) with BatchNorm statistics calibrated on one noise batch, train mode."""
    torch.manual_seed(0)
    with quiet():
        model = Model(ROOT / "models" / f"{name}.yaml", nc=nc)
    for bn in model.modules():
        if isinstance(bn, nn.BatchNorm2d):
            bn.momentum = None  # cumulative average: one batch sets the statistics
            bn.reset_running_stats()
    model.train()
    with torch.no_grad():
        model(torch.rand(2, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(0)))
    for bn in model.modules():
        if isinstance(bn, nn.BatchNorm2d):
            bn.momentum = 0.03
    return model


def fused_eval(model: nn.Module) -> nn.Module:
    """A fused (Conv+BN) eval-mode copy of ``model``."""
    with quiet():
        return deepcopy(model).eval().fuse().eval()


def limits(case: str, batch: int, args: argparse.Namespace) -> tuple[int, int]:
    """(warmup, runs) for one case: capped for the slow ones under ``--quick``."""
    if args.quick and (case, batch) in SLOW_CASES:
        return 1, 2
    return args.warmup, args.runs


def time_torch_inference(fused: nn.Module, policy: PrecisionPolicy, image: torch.Tensor, warmup: int,
                         runs: int) -> float:
    """Median seconds of one fused forward (decoded output cast to fp32) under ``policy``."""
    model = policy.prepare_model(deepcopy(fused))
    batch = policy.prepare_input(image)

    def step() -> torch.Tensor:
        with torch.inference_mode(), policy.autocast():
            return model(batch)[0].float()

    return measure(step, warmup, runs)


def export_onnx(fused: nn.Module, image: torch.Tensor, file: Path, opset: int = 17) -> Path:
    """Export ``fused`` for the static input shape of ``image`` (decoded output only, as export.py does)."""
    model = deepcopy(fused)
    model.model[-1].export = True
    with torch.no_grad(), quiet():
        torch.onnx.export(model, (image,), str(file), opset_version=opset, do_constant_folding=True,
                          input_names=["images"], output_names=["output0"], dynamo=False)
    return file


def time_onnx_inference(fused: nn.Module, image: torch.Tensor, threads: int, warmup: int, runs: int) -> float | None:
    """Median seconds of one ONNX Runtime (CPU, fp32) forward; None when onnx/onnxruntime are missing."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    with tempfile.TemporaryDirectory() as folder:
        file = export_onnx(fused, image, Path(folder) / "model.onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if STATISTIC["name"] == "cpu":  # spinning threads would count as CPU work
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])
    feed = {"images": image.numpy()}
    return measure(lambda: session.run(None, feed), warmup, runs)


def inference_rows(args: argparse.Namespace) -> list[dict]:
    """Time every (case, batch, variant); returns one dict of seconds per (case, batch)."""
    rows = []
    for case in args.cases:
        name, imgsz = CASES[case]
        fused = fused_eval(build_model(name, imgsz))
        for batch in args.batches:
            image = torch.rand(batch, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(1))
            warmup, runs = limits(case, batch, args)
            row = {"case": case, "batch": batch}
            for label, policy in VARIANTS.items():
                row[label] = time_torch_inference(fused, policy, image, warmup, runs)
                progress(f"inference {case_label(case)} batch {batch} {label}", 1000, "ms", runs)
            if not args.skip_onnx:
                row["ONNX Runtime fp32"] = time_onnx_inference(fused, image, args.threads, warmup, runs)
                progress(f"inference {case_label(case)} batch {batch} ONNX Runtime fp32", 1000, "ms", runs)
            rows.append(row)
    return rows


def progress(label: str, scale: float, unit: str, runs: int) -> None:
    """Print the median and minimum of the latest measurement."""
    median, fastest, cpu = STATISTIC["log"][-1]
    print(f"  {label}: median {median * scale:.3f} {unit}, min {fastest * scale:.3f} {unit}, CPU time median "
          f"{cpu * scale:.3f} {unit} ({runs} runs)", flush=True)


def synthetic_batch(batch: int, imgsz: int, nc: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (batch, 3, imgsz, imgsz) in [0, 1] and 4 targets per image, rows ``[image, class, x, y, w, h]`` (n)."""
    images = torch.rand(batch, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(0))
    rows = [[i, (4 * i + k) % nc, 0.2 + 0.2 * k, 0.5, 0.1 + 0.05 * k, 0.2] for i in range(batch) for k in range(4)]
    return images, torch.tensor(rows)


def time_train_step(case: str, policy: PrecisionPolicy, batch: int, warmup: int, runs: int) -> float:
    """Median seconds of forward (under ``policy``) + loss (fp32) + backward + SGD step + zero_grad."""
    name, imgsz = CASES[case]
    model = policy.prepare_model(build_model(name, imgsz))
    hyp = load_hyp(DEFAULT_HYP)
    hyp["obj"] *= (imgsz / 640) ** 2
    model.hyp = hyp
    criterion = ComputeLoss(model)
    with quiet():
        optimizer = smart_optimizer(model, "SGD", hyp["lr0"], hyp["momentum"], hyp["weight_decay"])
    images, targets = synthetic_batch(batch, imgsz, nc=80)
    images = policy.prepare_input(images)

    def step() -> None:
        with policy.autocast():
            predictions = model(images)
        loss, _ = criterion(float_outputs(predictions), targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    return measure(step, warmup, runs)


def training_rows(args: argparse.Namespace) -> list[dict]:
    """Time a batch-``args.train_batch`` training step for every (case, variant)."""
    rows = []
    for case in args.cases:
        warmup, runs = (1, 2) if args.quick and case == "s640" else (2, args.train_runs)
        row = {"case": case, "batch": args.train_batch}
        for label, policy in VARIANTS.items():
            row[label] = time_train_step(case, policy, args.train_batch, warmup, runs)
            progress(f"train step {case_label(case)} batch {args.train_batch} {label}", 1, "s", runs)
        rows.append(row)
    return rows


def case_label(case: str) -> str:
    name, imgsz = CASES[case]
    return f"{name}@{imgsz}"


def markdown_table(rows: list[dict], unit: str, scale: float, upstream: Callable[[dict], float | None],
                   target: float) -> str:
    """Markdown table: one row per case, one column per variant (value and ratio to our fp32 NCHW), upstream."""
    columns = [c for c in (*VARIANTS, "ONNX Runtime fp32") if any(c in r for r in rows)]
    bf16_label = "bf16 + channels_last" + ("" if cpu_has_native_bf16() else " (emulated)")
    header = ["model", "batch", *(bf16_label if c == "bf16 + channels_last" else c for c in columns),
              f"best vs upstream fp32 (target <= {target}x)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        reference = row["fp32 NCHW"]
        cells = [case_label(row["case"]), str(row["batch"])]
        for column in columns:
            value = row.get(column)
            cells.append("n/a" if value is None else f"{value * scale:.{3 if unit == 's' else 1}f} {unit} "
                                                     f"({value / reference:.2f}x)")
        best, base = min(v for k, v in row.items() if k in columns and isinstance(v, float)), upstream(row)
        wall = STATISTIC["name"] != "cpu"  # upstream's figures are wall times
        cells.append(f"{best / base:.2f}x of {base * scale:g} {unit}" if base and wall else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine_line(threads: int) -> str:
    """One line describing the machine, torch, threads, native bf16 and the load average."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), cpu)
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return (f"{cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, {threads} threads, native bf16: "
            f"{cpu_has_native_bf16()}, load average (1/5/15 min): {load}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (and ONNX Runtime's)")
    parser.add_argument("--runs", type=int, default=10, help="timed runs per inference figure")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs first")
    parser.add_argument("--train-runs", type=int, default=5, help="timed steps per training figure")
    parser.add_argument("--train-batch", type=int, default=16)
    parser.add_argument("--quick", action="store_true", help="1 warmup + 2 runs for batch 16 at 640 px")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 16])
    parser.add_argument("--skip-infer", action="store_true")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--skip-onnx", action="store_true")
    parser.add_argument("--stat", choices=("median", "min", "cpu"), default="median",
                        help="statistic in the tables: wall median/min, or median process CPU time (all printed)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    STATISTIC["name"] = args.stat
    print(f"machine: {machine_line(args.threads)}", flush=True)
    tables = []
    if not args.skip_infer:
        rows = inference_rows(args)
        table = markdown_table(rows, "ms", 1000, lambda r: UPSTREAM_INFER_MS.get((r["case"], r["batch"]), 0) / 1000,
                               TARGET_RATIO["infer"])
        tables.append(f"Inference latency per batch ({args.stat}; fused, eval; ratio to fp32 NCHW):\n\n{table}")
    if not args.skip_train:
        rows = training_rows(args)
        table = markdown_table(rows, "s", 1, lambda r: UPSTREAM_TRAIN_S.get(r["case"]) if r["batch"] == 16 else None,
                               TARGET_RATIO["train"])
        tables.append(f"Training step, batch {args.train_batch} ({args.stat}; fwd + loss + bwd + SGD):\n\n{table}")
    print(f"\nmachine at the end: {machine_line(args.threads)}\n")
    print("\n\n".join(tables))


if __name__ == "__main__":
    main()
