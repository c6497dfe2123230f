"""CPU precision/memory-format benchmark: inference latency and training step time, printed as markdown tables.

Inference (fused, eval, ``inference_mode``): yolov5n@320 and yolov5s@640 at batch 1 and 16, in

* fp32 NCHW (the reference), fp32 channels_last,
* bf16 autocast + channels_last (plain autocast, what ``torch.autocast`` alone gives),
* the CPU fast path as shipped (``utils.precision`` policy: bf16 autocast + channels_last + packed bf16 conv
  kernels with fused activation, ``utils/cpu_fast.py``; marked *emulated* where the CPU has no native bf16, which
  the policy then never picks),
* ONNX Runtime fp32 (``torch.onnx.export``, TorchScript exporter, opset 17, CPU provider, ``--threads`` threads).

Training step (forward + ``ComputeLoss`` + backward + SGD step, batch 16, synthetic images and targets): yolov5n@320
and yolov5s@640 in fp32 NCHW, fp32 channels_last and the fast path (bf16 autocast + channels_last, loss as the
trainer runs it).

Same-machine upstream reference: ``--upstream DIR`` also times upstream YOLOv5's own model and loss, imported from
a folder made with ``pip install --no-deps --target DIR yolov5==7.0.14`` (the PyPI packaging of upstream; nothing
of it is copied into this project), in fp32 NCHW and with plain bf16 autocast + channels_last. The ratio column
then divides our best time by upstream fp32 measured in the same interleaved rounds; without ``--upstream`` it uses
the reference figures for this machine kind (175 ms, 0.73 s), which the 2-core VM here does not reproduce (steal time
varies; upstream fp32 measured 190-205 ms and 1.06-1.14 s here).

All variants of one (case, batch) are timed round-robin (``--runs`` rounds after ``--warmup``) so that drifts of
the shared machine hit each of them alike. Weights are random, with BatchNorm statistics calibrated on one noise
batch (an untouched init underflows to denormals, unrepresentatively slow in fp32). ``--stat``: median wall time
(default), minimum wall time, or median process CPU time (both threads summed; run with ``OMP_WAIT_POLICY=PASSIVE``).

Targets: yolov5s@640 batch-1 inference <= 0.35x of upstream fp32; yolov5n@320 batch-16 training step
<= 0.5x of upstream fp32.

Usage: ``python benchmarks/bench_precision.py [--threads 2] [--runs 10] [--warmup 3] [--quick] [--skip-train]
[--skip-infer] [--skip-onnx] [--cases n320 s640] [--batches 1 16] [--upstream DIR]``.
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
import types
from copy import deepcopy
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch
import torch.nn as nn

from engine.train_options import DEFAULT_HYP, load_hyp
from models.yolo import Model
from utils.logging import LOGGER
from utils.loss import ComputeLoss
from utils.optim import smart_optimizer
from utils.precision import PrecisionPolicy, cpu_has_native_bf16

CASES = {"n320": ("yolov5n", 320), "s640": ("yolov5s", 640)}
REFERENCE_INFER_MS = {("s640", 1): 175.0}  # upstream fp32 NCHW, a reference measurement on this machine kind
REFERENCE_TRAIN_S = {"n320": 0.73}
TARGET_RATIO = {"infer": 0.35, "train": 0.5}
FP32 = PrecisionPolicy("cpu", None, False, "reference")
FP32_CL = PrecisionPolicy("cpu", None, True, "memory format only")
FAST = PrecisionPolicy("cpu", torch.bfloat16, True, "CPU fast path")
UPSTREAM_FP32, UPSTREAM_BF16 = "upstream fp32 NCHW", "upstream bf16 autocast + CL"
SLOW_CASES = {("s640", 16)}
STATISTIC: dict = {"name": "median"}


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


def measure_round_robin(steps: dict[str, Callable[[], object]], warmup: int, runs: int) -> dict[str, tuple]:
    """Time every step ``runs`` times, one of each per round, after ``warmup`` untimed rounds.

    Returns label -> (median wall s, min wall s, median process CPU s).
    """
    for _ in range(warmup):
        for step in steps.values():
            step()
    wall: dict[str, list[float]] = {k: [] for k in steps}
    cpu: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(runs):
        for label, step in steps.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            step()
            wall[label].append(time.perf_counter() - start)
            cpu[label].append(time.process_time() - start_cpu)
    return {k: (statistics.median(wall[k]), min(wall[k]), statistics.median(cpu[k])) for k in steps}


def pick(figures: tuple) -> float:
    """The table statistic (``--stat``) out of a (median, min, cpu) triple."""
    return figures[("median", "min", "cpu").index(STATISTIC["name"])]


def calibrate_batchnorm(model: nn.Module, imgsz: int) -> nn.Module:
    """Set BatchNorm statistics from one noise batch (train mode, momentum restored to 0.03); returns the model."""
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


def build_model(name: str, imgsz: int, nc: int = 80) -> nn.Module:
    """Random-init ``name`` (yolov5n/yolov5s) with calibrated BatchNorm statistics, train mode."""
    torch.manual_seed(0)
    with quiet():
        model = Model(ROOT / "models" / f"{name}.yaml", nc=nc)
    return calibrate_batchnorm(model, imgsz)


def fused_eval(model: nn.Module) -> nn.Module:
    """A fused (Conv+BN) eval-mode copy of ``model``."""
    with quiet():
        return deepcopy(model).eval().fuse().eval()


def load_upstream(folder: Path) -> types.SimpleNamespace:
    """Import upstream YOLOv5's ``Model`` and ``ComputeLoss`` from a ``pip install --target`` folder (``yolov5``).

    The packaging imports ``pkg_resources`` and ``ultralytics`` for version and requirement checks only; where they
    are not installed, minimal stand-ins are registered (benchmark process only).
    """
    if not (folder / "yolov5" / "models" / "yolo.py").is_file():
        raise SystemExit(f"--upstream {folder}: no yolov5/models/yolo.py there; create it with "
                         f"'pip install --no-deps --target {folder} yolov5==7.0.14'")
    import importlib.util

    if importlib.util.find_spec("pkg_resources") is None:
        from packaging.version import Version

        sys.modules["pkg_resources"] = types.SimpleNamespace(parse_version=Version)
    if importlib.util.find_spec("ultralytics") is None:
        checks = types.ModuleType("ultralytics.utils.checks")
        checks.check_requirements = lambda *args, **kwargs: True
        for name, module in (("ultralytics", types.ModuleType("ultralytics")),
                             ("ultralytics.utils", types.ModuleType("ultralytics.utils")),
                             ("ultralytics.utils.checks", checks)):
            sys.modules[name] = module
    sys.path.insert(0, str(folder))
    with quiet():
        from yolov5.models.yolo import Model as UpstreamModel
        from yolov5.utils.loss import ComputeLoss as UpstreamLoss
    return types.SimpleNamespace(Model=UpstreamModel, ComputeLoss=UpstreamLoss, folder=folder)


def build_upstream(upstream: types.SimpleNamespace, name: str, imgsz: int, nc: int = 80) -> nn.Module:
    """Upstream's own ``name`` model (random init, calibrated BatchNorm), train mode."""
    torch.manual_seed(0)
    with quiet():
        model = upstream.Model(upstream.folder / "yolov5" / "models" / f"{name}.yaml", nc=nc)
    return calibrate_batchnorm(model, imgsz)


def limits(case: str, batch: int, args: argparse.Namespace) -> tuple[int, int]:
    """(warmup, runs) for one case: capped for the slow ones under ``--quick``."""
    if args.quick and (case, batch) in SLOW_CASES:
        return 1, 2
    return args.warmup, args.runs


def inference_step(fused: nn.Module, image: torch.Tensor, channels_last: bool, bf16: bool,
                   policy: PrecisionPolicy | None = None) -> Callable[[], torch.Tensor]:
    """One fused forward (decoded output cast to fp32). ``policy``: prepared by it (the shipped path) instead."""
    model = deepcopy(fused)
    if policy is not None:
        with quiet():
            policy.prepare_model(model)
    elif channels_last:
        model = model.to(memory_format=torch.channels_last)
    batch = image.contiguous(memory_format=torch.channels_last) if channels_last else image

    def step() -> torch.Tensor:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return model(batch)[0].float()

    return step


def export_onnx(fused: nn.Module, image: torch.Tensor, file: Path, opset: int = 17) -> Path:
    """Export ``fused`` for the static input shape of ``image`` (decoded output only, as export.py does)."""
    model = deepcopy(fused)
    model.model[-1].export = True
    with torch.no_grad(), quiet():
        torch.onnx.export(model, (image,), str(file), opset_version=opset, do_constant_folding=True,
                          input_names=["images"], output_names=["output0"], dynamic_axes=None, dynamo=False)
    return file


def onnx_step(fused: nn.Module, image: torch.Tensor, threads: int) -> Callable[[], Any] | None:
    """One ONNX Runtime (CPU, fp32) forward; None when onnx/onnxruntime are missing."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    with tempfile.TemporaryDirectory() as folder:
        file = export_onnx(fused, image, Path(folder) / "model.onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # No spin-waiting: ORT's idle threads would keep both cores busy into the next variant of the round.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])
    feed = {"images": image.numpy()}
    return lambda: session.run(None, feed)


def bf16_label(label: str) -> str:
    return label if cpu_has_native_bf16() else f"{label} (emulated)"


def inference_rows(args: argparse.Namespace, upstream: types.SimpleNamespace | None) -> list[dict]:
    """Time every variant of each (case, batch) round-robin; one dict of figures per (case, batch)."""
    rows = []
    for case in args.cases:
        name, imgsz = CASES[case]
        fused = fused_eval(build_model(name, imgsz))
        upstream_fused = fused_eval(build_upstream(upstream, name, imgsz)) if upstream else None
        for batch in args.batches:
            image = torch.rand(batch, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(1))
            steps = {"fp32 NCHW": inference_step(fused, image, False, False),
                     "fp32 channels_last": inference_step(fused, image, True, False),
                     bf16_label("bf16 autocast + CL"): inference_step(fused, image, True, True),
                     bf16_label("fast path (shipped)"): inference_step(fused, image, True, True, FAST)}
            if not args.skip_onnx and (step := onnx_step(fused, image, args.threads)) is not None:
                steps["ONNX Runtime fp32"] = step
            if upstream_fused is not None:
                steps[UPSTREAM_FP32] = inference_step(upstream_fused, image, False, False)
                steps[UPSTREAM_BF16] = inference_step(upstream_fused, image, True, True)
            warmup, runs = limits(case, batch, args)
            figures = measure_round_robin(steps, warmup, runs)
            report(f"inference {case_label(case)} batch {batch}", figures, 1000, "ms", runs)
            rows.append({"case": case, "batch": batch, **figures})
    return rows


def synthetic_batch(batch: int, imgsz: int, nc: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (batch, 3, imgsz, imgsz) in [0, 1] and 4 targets per image, rows ``[image, class, x, y, w, h]`` (n)."""
    images = torch.rand(batch, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(0))
    rows = [[i, (4 * i + k) % nc, 0.2 + 0.2 * k, 0.5, 0.1 + 0.05 * k, 0.2] for i in range(batch) for k in range(4)]
    return images, torch.tensor(rows)


def train_step(model: nn.Module, criterion: Callable, imgsz: int, batch: int, channels_last: bool, bf16: bool,
               loss_under_autocast: bool = False) -> Callable[[], None]:
    """Forward (bf16 autocast if ``bf16``) + loss + backward + SGD step + zero_grad on a synthetic batch.

    Our loss runs outside autocast on the raw outputs, as the trainer does; ``loss_under_autocast`` runs it inside,
    as upstream's train.py does under AMP.
    """
    hyp = model.hyp
    with quiet():
        optimizer = smart_optimizer(model, "SGD", hyp["lr0"], hyp["momentum"], hyp["weight_decay"])
    images, targets = synthetic_batch(batch, imgsz, nc=80)
    images = images.contiguous(memory_format=torch.channels_last) if channels_last else images

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            predictions = model(images)
            if loss_under_autocast:
                loss, _ = criterion(predictions, targets)
        if not loss_under_autocast:
            loss, _ = criterion(predictions, targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    return step


def _with_hyp(model: nn.Module, imgsz: int, channels_last: bool) -> nn.Module:
    hyp = load_hyp(DEFAULT_HYP)
    hyp["obj"] *= (imgsz / 640) ** 2
    model.hyp = hyp
    return model.to(memory_format=torch.channels_last) if channels_last else model


def training_rows(args: argparse.Namespace, upstream: types.SimpleNamespace | None) -> list[dict]:
    """Time a batch-``args.train_batch`` training step for every variant of each case, round-robin."""
    rows = []
    for case in args.cases:
        name, imgsz = CASES[case]
        steps = {}
        for label, (channels_last, bf16) in {"fp32 NCHW": (False, False), "fp32 channels_last": (True, False),
                                             bf16_label("fast path (shipped)"): (True, True)}.items():
            model = _with_hyp(build_model(name, imgsz), imgsz, channels_last)
            steps[label] = train_step(model, ComputeLoss(model), imgsz, args.train_batch, channels_last, bf16)
        if upstream is not None:
            for label, (channels_last, bf16) in {UPSTREAM_FP32: (False, False), UPSTREAM_BF16: (True, True)}.items():
                model = _with_hyp(build_upstream(upstream, name, imgsz), imgsz, channels_last)
                steps[label] = train_step(model, upstream.ComputeLoss(model), imgsz, args.train_batch,
                                          channels_last, bf16, loss_under_autocast=True)
        warmup, runs = (1, 2) if args.quick and case == "s640" else (2, args.train_runs)
        figures = measure_round_robin(steps, warmup, runs)
        report(f"train step {case_label(case)} batch {args.train_batch}", figures, 1, "s", runs)
        rows.append({"case": case, "batch": args.train_batch, **figures})
    return rows


def report(title: str, figures: dict[str, tuple], scale: float, unit: str, runs: int) -> None:
    """Print median, minimum and CPU time of every variant of one measurement."""
    for label, (median, fastest, cpu) in figures.items():
        print(f"  {title} {label}: median {median * scale:.3f} {unit}, min {fastest * scale:.3f} {unit}, "
              f"CPU time median {cpu * scale:.3f} {unit} ({runs} rounds)", flush=True)


def case_label(case: str) -> str:
    name, imgsz = CASES[case]
    return f"{name}@{imgsz}"


def markdown_table(rows: list[dict], unit: str, scale: float, reference_figure: Callable[[dict], float | None],
                   target: float) -> str:
    """One row per (case, batch), one column per variant (value and ratio to our fp32 NCHW), then the target ratio.

    The target column divides the best of our variants by upstream fp32: measured in the same rounds where
    ``--upstream`` was given, else the reference figure for this machine kind.
    """
    columns = list(dict.fromkeys(k for r in rows for k in r if k not in ("case", "batch")))
    ours = [c for c in columns if not c.startswith("upstream")]
    header = ["model", "batch", *columns, f"best vs upstream fp32 (target <= {target}x)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    digits = 3 if unit == "s" else 1
    for row in rows:
        reference = pick(row["fp32 NCHW"])
        cells = [case_label(row["case"]), str(row["batch"])]
        for column in columns:
            value = pick(row[column]) if column in row else None
            cells.append("n/a" if value is None else f"{value * scale:.{digits}f} {unit} ({value / reference:.2f}x)")
        best = min(pick(row[c]) for c in ours if c in row)
        if UPSTREAM_FP32 in row:
            base = pick(row[UPSTREAM_FP32])
            cells.append(f"{best / base:.2f}x (same rounds)")
        elif (base := reference_figure(row)) and STATISTIC["name"] != "cpu":
            cells.append(f"{best / base:.2f}x of the reference {base * scale:g} {unit}")
        else:
            cells.append("-")
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
    parser.add_argument("--runs", type=int, default=10, help="timed rounds per inference figure")
    parser.add_argument("--warmup", type=int, default=3, help="untimed rounds first")
    parser.add_argument("--train-runs", type=int, default=5, help="timed rounds per training figure")
    parser.add_argument("--train-batch", type=int, default=16)
    parser.add_argument("--quick", action="store_true", help="1 warmup + 2 rounds for the 640 px batch-16 cases")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 16])
    parser.add_argument("--skip-infer", action="store_true")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--skip-onnx", action="store_true")
    parser.add_argument("--upstream", type=Path, default=None,
                        help="folder of 'pip install --no-deps --target DIR yolov5==7.0.14': time upstream too")
    parser.add_argument("--stat", choices=("median", "min", "cpu"), default="median",
                        help="statistic in the tables: wall median/min, or median process CPU time (all printed)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    STATISTIC["name"] = args.stat
    upstream = load_upstream(args.upstream.resolve()) if args.upstream else None
    print(f"machine: {machine_line(args.threads)}", flush=True)
    tables = []
    if not args.skip_infer:
        rows = inference_rows(args, upstream)
        table = markdown_table(rows, "ms", 1000, lambda r: REFERENCE_INFER_MS.get((r["case"], r["batch"]), 0) / 1000,
                               TARGET_RATIO["infer"])
        tables.append(f"Inference latency per batch ({args.stat}; fused, eval; ratio to our fp32 NCHW):\n\n{table}")
    if not args.skip_train:
        rows = training_rows(args, upstream)
        table = markdown_table(rows, "s", 1, lambda r: REFERENCE_TRAIN_S.get(r["case"]) if r["batch"] == 16 else None,
                               TARGET_RATIO["train"])
        tables.append(f"Training step, batch {args.train_batch} ({args.stat}; fwd + loss + bwd + SGD):\n\n{table}")
    print(f"\nmachine at the end: {machine_line(args.threads)}\n")
    print("\n\n".join(tables))


if __name__ == "__main__":
    main()
