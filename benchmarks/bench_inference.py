"""Per-image CPU latency of detection backends: pre-process, inference and NMS, with an accuracy check.

Configurations: yolov5n at 320 px and yolov5s at 640 px (batch 1). Backends: PyTorch (Conv+BN fused, fp32, eager,
``inference_mode``), TorchScript (traced by export.py), ONNX Runtime (export.py's ONNX, CPU provider, ``--threads``
intra-op threads) and OpenCV DNN on the same ONNX file. All run through ``DetectMultiBackend``, exactly as
detect.py uses them, one backend after the other; the median over ``--runs`` images is reported.

* pre-process = letterbox + HWC->CHW + uint8->float/255 (the loader's and detect.py's work for one image),
* inference = the backend call, NMS = ``non_max_suppression(conf 0.25, IoU 0.45)``.

Accuracy: every backend's raw output is compared with PyTorch's on the same input (max abs difference, pixels /
probabilities) and its detections after NMS must match PyTorch's (same count and classes; box difference reported).

Weights: ``yolov5n.pt``/``yolov5s.pt`` from ``--weights-dir`` (default: ``$YOLOV5_WEIGHTS_DIR`` or the repository)
when present; otherwise the YAML model with BatchNorm statistics calibrated on one noise batch (realistic
activation ranges: an untouched random init underflows to denormals, which is unrepresentatively slow).

Usage: ``python benchmarks/bench_inference.py [--runs 30] [--threads 2] [--configs n320 s640]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import cv2
import numpy as np
import torch

import export
from models.backends import DetectMultiBackend
from models.yolo import Model
from utils.checkpoint import make_checkpoint, save_checkpoint
from utils.data.augment import letterbox
from utils.inference import to_input_tensor
from utils.logging import LOGGER
from utils.nms import non_max_suppression

CONFIGS = {"n320": ("yolov5n", 320), "s640": ("yolov5s", 640)}
UPSTREAM_PYTORCH_MS = {"n320": 38.0, "s640": 248.0}  # upstream detect.py inference, measured on this machine kind
BACKENDS = ("PyTorch", "TorchScript", "ONNX Runtime", "OpenCV DNN")


def calibrated_checkpoint(name: str, imgsz: int, folder: Path) -> Path:
    """Save the YAML model with BatchNorm running stats set from one noise batch; return the checkpoint path."""
    torch.manual_seed(0)
    model = Model(f"{name}.yaml")
    for bn in model.modules():
        if isinstance(bn, torch.nn.BatchNorm2d):
            bn.momentum = None
            bn.reset_running_stats()
    model.train()
    with torch.no_grad():
        model(torch.rand(2, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(0)))
    file = folder / f"{name}.pt"
    save_checkpoint(make_checkpoint(model.eval()), file)
    return file


def find_weights(name: str, weights_dir: Path | None, imgsz: int, folder: Path) -> tuple[Path, str]:
    for directory in [d for d in (weights_dir, ROOT) if d]:
        if (Path(directory) / f"{name}.pt").is_file():
            target = folder / f"{name}.pt"
            target.write_bytes((Path(directory) / f"{name}.pt").read_bytes())  # exports go next to the weights
            return target, "pretrained"
    return calibrated_checkpoint(name, imgsz, folder), "random init, calibrated BN"


def load_backends(weights: Path, imgsz: int, threads: int) -> dict[str, DetectMultiBackend]:
    files = export.run(weights=weights, imgsz=(imgsz, imgsz), include=("torchscript", "onnx"), opset=17)
    backends = {
        "PyTorch": DetectMultiBackend(weights),
        "TorchScript": DetectMultiBackend(files[0]),
        "ONNX Runtime": DetectMultiBackend(files[1], threads=threads),
        "OpenCV DNN": DetectMultiBackend(files[1], dnn=True),
    }
    backends["PyTorch"].model.model[-1].export = True  # return only the decoded tensor, like the exports
    return backends


def preprocess(im0: np.ndarray, imgsz: int) -> torch.Tensor:
    im = letterbox(im0, imgsz, stride=32, auto=False)[0]
    return to_input_tensor(np.ascontiguousarray(im.transpose((2, 0, 1))[::-1]), "cpu")


def time_backend(model: DetectMultiBackend, images: list[np.ndarray], imgsz: int, runs: int) -> dict[str, list]:
    """Return lists of milliseconds (pre, inference, NMS wall time; inference process CPU time) for ``runs`` images.

    Backends are timed one after the other, not interleaved: onnxruntime's and OpenMP's worker threads spin after
    each call, so interleaving them makes each steal the other's cores. The process CPU time of the inference is
    recorded too: with ``--threads 1`` it is the compute cost free of other processes' load on a shared machine.
    """
    times = {"pre": [], "inference": [], "nms": [], "cpu": []}
    for i in range(runs + 3):
        t0 = time.perf_counter()
        x = preprocess(images[i % len(images)], imgsz)
        t1, c1 = time.perf_counter(), time.process_time()
        y = model(x)
        t2, c2 = time.perf_counter(), time.process_time()
        non_max_suppression(y, 0.25, 0.45, max_det=1000)
        t3 = time.perf_counter()
        if i >= 3:  # the first 3 images are warm-up
            for key, dt in zip(("pre", "inference", "nms", "cpu"), (t1 - t0, t2 - t1, t3 - t2, c2 - c1), strict=True):
                times[key].append(dt * 1e3)
    return times


def agreement(backends: dict, images: list[np.ndarray], imgsz: int) -> dict[str, tuple[float, str]]:
    """Return per backend: (max abs output diff vs PyTorch, detections after NMS vs PyTorch's as text)."""
    results = {}
    x = torch.cat([preprocess(im, imgsz) for im in images])
    reference = [backends["PyTorch"](x[i:i + 1]) for i in range(len(x))]
    ref_det = [non_max_suppression(r, 0.25, 0.45)[0] for r in reference]
    for name, model in backends.items():
        outputs = [model(x[i:i + 1]) for i in range(len(x))]
        diff = max(float((o - r).abs().max()) for o, r in zip(outputs, reference, strict=False))
        dets = [non_max_suppression(o, 0.25, 0.45)[0] for o in outputs]
        n, n_ref = sum(len(d) for d in dets), sum(len(r) for r in ref_det)
        same = all(len(d) == len(r) and torch.equal(d[:, 5], r[:, 5]) for d, r in zip(dets, ref_det, strict=False))
        pairs = [(d, r) for d, r in zip(dets, ref_det, strict=True) if len(d) and len(d) == len(r)]
        box = max((float((d[:, :4] - r[:, :4]).abs().max()) for d, r in pairs), default=0.0)
        results[name] = (diff, f"{n}/{n_ref}" + (f", boxes within {box:.2g} px" if same else ", order/threshold ties"))
    return results


def upstream_parity(fixture: Path, threads: int, folder: Path) -> list[str]:
    """Run upstream's trained yolov5n fixture through every backend on upstream's parity input; compare with the
    outputs upstream itself produced (raw fused output, and NMS at conf 0.001 / IoU 0.6 / max_det 300)."""
    parity_file = fixture.with_name(fixture.stem + ".parity.pt")
    if not fixture.is_file() or not parity_file.is_file():
        return [f"(upstream parity check skipped: {fixture} not found)"]
    parity = torch.load(parity_file, weights_only=True)
    weights = folder / "upstream-yolov5n.pt"
    weights.write_bytes(fixture.read_bytes())
    rows = []
    with torch.inference_mode():
        for name, model in load_backends(weights, 320, threads).items():
            outputs = [model(parity["input"][i:i + 1]) for i in range(len(parity["input"]))]
            diff = max(float((o[0] - ref).abs().max()) for o, ref in zip(outputs, parity["infer_fused"], strict=False))
            dets = [non_max_suppression(o, 0.001, 0.6, max_det=300)[0] for o in outputs]
            counts = f"{[len(d) for d in dets]} vs upstream {[len(d) for d in parity['nms']]}"
            rows.append(f"| upstream yolov5n-trained@320 | {name} | {diff:.2g} | {counts} |")
    return ["| model | backend | max abs diff vs upstream PyTorch output | detections (conf 0.001) |",
            "|---|---|---|---|", *rows]


def benchmark_images() -> list[np.ndarray]:
    files = sorted((ROOT / "data" / "images").glob("*.jpg"))
    images = [cv2.imread(str(f)) for f in files]
    return [im for im in images if im is not None] or [np.full((480, 640, 3), 114, np.uint8)]


def run_config(key: str, args: argparse.Namespace, folder: Path) -> list[str]:
    name, imgsz = CONFIGS[key]
    weights, origin = find_weights(name, args.weights_dir, imgsz, folder)
    backends = load_backends(weights, imgsz, args.threads)
    images = benchmark_images()
    with torch.inference_mode():
        times = {backend: time_backend(model, images, imgsz, args.runs) for backend, model in backends.items()}
        checks = agreement(backends, images, imgsz)
    rows = []
    medians = {b: {k: statistics.median(v) for k, v in times[b].items()} for b in backends}
    for backend, m in medians.items():
        diff, detections = checks[backend]
        vs_torch = medians["PyTorch"]["cpu"] / m["cpu"]
        rows.append(f"| {name}@{imgsz} ({origin}) | {backend} | {m['pre']:.1f} | {m['inference']:.1f} | "
                    f"{m['nms']:.1f} | {m['pre'] + m['inference'] + m['nms']:.1f} | {m['cpu']:.1f} | "
                    f"{vs_torch:.2f}x | {UPSTREAM_PYTORCH_MS[key] / m['inference']:.2f}x | {diff:.2g} | {detections} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="timed images per backend (after 3 warm-up rounds)")
    parser.add_argument("--threads", type=int, default=2, help="torch / onnxruntime / OpenCV threads")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--weights-dir", type=Path, default=os.environ.get("YOLOV5_WEIGHTS_DIR") or None)
    parser.add_argument("--fixture", type=str, default=str(ROOT.parent / "shared/fixtures/upstream/yolov5n-trained.pt"),
                        help="upstream checkpoint with a .parity.pt next to it (accuracy check); '' to skip")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    LOGGER.setLevel("WARNING")
    header = ["| model | backend | pre-process ms | inference ms | NMS ms | total ms | inference CPU ms | "
              "CPU speed-up vs PyTorch | wall speed-up vs upstream PyTorch (38 / 248 ms) | max abs diff vs PyTorch | "
              "detections vs PyTorch |", "|---" * 11 + "|"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for key in args.configs:
            rows += run_config(key, args, Path(tmp))
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(f"\nCPU: {os.cpu_count()} cores, {args.threads} threads, torch {torch.__version__}, "
              f"median of {args.runs} images, 1-min load average at the end {load:.1f}")
        print("\n".join(header + rows), flush=True)
        if args.fixture:
            parity_rows = upstream_parity(Path(args.fixture), args.threads, Path(tmp))
            print("\nAccuracy on trained weights (upstream's parity fixture):\n" + "\n".join(parity_rows))


if __name__ == "__main__":
    main()
