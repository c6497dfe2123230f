"""CUDA check list: the GPU-only paths and the GPU throughput figures, in one short run for a lent GPU machine.

    $ python benchmarks/cuda_checklist.py                      # everything, about 3-5 minutes on one H100/H200
    $ python benchmarks/cuda_checklist.py --skip-throughput    # the functional checks only
    $ python benchmarks/cuda_checklist.py --only amp half      # a subset (names below)

Checks, each a fresh subprocess with a timeout, on a small built-in ``shapes`` dataset (64 train / 16 val images):

* ``amp``: ``train.py --device 0`` for one epoch; the AMP check passes and training runs with fp16 autocast and the
  GradScaler (the log says so), ``results.csv`` is written.
* ``ddp``: ``torch.distributed.run --nproc_per_node 1 train.py --device 0`` (NCCL, one process); with two or more
  GPUs also two processes. Two processes on one GPU are tried too and the result is reported, since NCCL normally
  refuses two ranks on the same device ("Duplicate GPU detected").
* ``pinned``: a training batch from ``create_dataloader`` on a CUDA machine is in pinned memory.
* ``half``: ``detect.py --half --device 0`` and ``val.py --half --device 0`` on the ``amp`` run's ``best.pt``.
* ``throughput``: yolov5s at 640 px, batch 64: training images/s (forward, loss, backward, SGD step under AMP,
  after warm-up) and fused fp16 inference images/s (batch 64 and batch 1).

Prints a PASS/FAIL table and the figures, writes ``cuda_checklist.json`` (and each check's log) into ``$OUT`` when
that variable is set (the device tool's output folder), else into ``runs/cuda_checklist``. Exits 1 when a check
fails. Needs the project's requirements on the GPU machine (opencv-python-headless, pandas, seaborn, pyyaml, tqdm,
thop, scipy, matplotlib): the script lists what is missing before it starts.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHECKS = ("amp", "ddp", "pinned", "half", "throughput")
NEEDED = ("torch", "torchvision", "cv2", "numpy", "yaml", "pandas", "seaborn", "matplotlib", "tqdm", "thop", "scipy")


def missing_modules() -> list[str]:
    """Names in :data:`NEEDED` that cannot be imported here."""
    return [name for name in NEEDED if importlib.util.find_spec(name) is None]


def free_port() -> int:
    """An unused local TCP port for the DDP rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(command: list[str], log: Path, timeout: float) -> tuple[bool, str]:
    """Run ``command`` from the repo root; returns (exit code 0, combined output) and writes the output to ``log``."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
    try:
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        output, ok = done.stdout + done.stderr, done.returncode == 0
    except subprocess.TimeoutExpired as error:
        output, ok = f"{error.stdout or ''}{error.stderr or ''}\nTIMEOUT after {timeout:.0f} s", False
    log.write_text(output, encoding="utf-8")
    return ok, output


def make_data(folder: Path) -> str:
    """A 64/16-image built-in shapes dataset; returns its YAML path."""
    import yaml

    from utils.data.builtin import generate_shapes_dataset
    from utils.data.shapes import SHAPE_NAMES

    root = generate_shapes_dataset(folder / "shapes", {"train": 64, "val": 16})
    data = folder / "data.yaml"
    data.write_text(yaml.safe_dump({"path": str(root), "train": "images/train", "val": "images/val",
                                    "names": dict(enumerate(SHAPE_NAMES))}))
    return str(data)


def train_args(data: str, project: Path, name: str, device: str = "0") -> list[str]:
    """``train.py`` flags shared by the AMP and DDP checks (one epoch, 320 px, batch 16)."""
    return ["train.py", "--data", data, "--cfg", "yolov5n.yaml", "--weights", "", "--epochs", "1", "--img", "320",
            "--batch", "16", "--workers", "4", "--device", device, "--project", str(project), "--name", name,
            "--exist-ok"]


def check_amp(data: str, work: Path, out: Path) -> dict:
    """One epoch of ``train.py`` on GPU 0: the AMP check passes and fp16 autocast is used."""
    ok, log = run([sys.executable, *train_args(data, work, "amp")], out / "amp.log", 300)
    amp_on = bool(re.search(r"AMP: checks passed|fp16", log))
    written = (work / "amp" / "results.csv").is_file()
    return {"ok": ok and amp_on and written, "amp_logged": amp_on, "results_csv": written}


def check_ddp(data: str, work: Path, out: Path) -> dict:
    """NCCL DDP with one process (and two when two GPUs exist); two processes on one GPU reported, not required."""
    import torch

    result = {}
    launches = [(1, "0", True)]
    if torch.cuda.device_count() >= 2:
        launches.append((2, "0,1", True))
    launches.append((2, "0", False))  # two ranks on one GPU: informative only
    for nproc, device, required in launches:
        name = f"ddp{nproc}_{device.replace(',', '')}"
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port",
                   str(free_port()), *train_args(data, work, name, device)]
        ok, log = run(command, out / f"{name}.log", 300)
        nccl = "nccl" in log.lower()
        result[name] = {"ok": ok, "nccl_logged": nccl, "required": required,
                        "note": "" if ok else log.strip().splitlines()[-1][:200] if log.strip() else ""}
    result["ok"] = all(v["ok"] for v in result.values() if isinstance(v, dict) and v["required"])
    return result


def check_pinned(data: str) -> dict:
    """A training batch from ``create_dataloader`` is pinned on a CUDA machine."""
    from utils.data.loaders import create_dataloader
    from utils.files import yaml_load

    info = yaml_load(data)
    loader, _ = create_dataloader(str(Path(info["path"]) / info["train"]), 320, 8, 32, hyp=None, augment=False,
                                  workers=2, prefix="pinned: ")
    images = next(iter(loader))[0]
    return {"ok": bool(images.is_pinned()), "pin_memory": bool(loader.pin_memory)}


def check_half(work: Path, data: str, out: Path) -> dict:
    """``detect.py --half`` and ``val.py --half`` on GPU 0 with the AMP run's ``best.pt``."""
    weights = work / "amp" / "weights" / "best.pt"
    if not weights.is_file():
        return {"ok": False, "note": "no best.pt from the amp check"}
    from utils.files import yaml_load

    info = yaml_load(data)
    source = str(Path(info["path"]) / info["val"])
    detect_ok, _ = run([sys.executable, "detect.py", "--weights", str(weights), "--source", source, "--half",
                        "--device", "0", "--project", str(work), "--name", "detect", "--exist-ok"],
                       out / "half_detect.log", 180)
    val_ok, val_log = run([sys.executable, "val.py", "--weights", str(weights), "--data", data, "--img", "320",
                           "--half", "--device", "0", "--project", str(work), "--name", "val", "--exist-ok"],
                          out / "half_val.log", 180)
    return {"ok": detect_ok and val_ok, "detect": detect_ok, "val": val_ok}


def _timed(fn, steps: int, warmup: int) -> float:
    """Seconds per call of ``fn`` after ``warmup`` calls, with CUDA synchronisation."""
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def check_throughput(batch: int = 64, imgsz: int = 640, steps: int = 20) -> dict:
    """yolov5s training images/s (AMP, SGD) and fused fp16 inference images/s at batch ``batch`` and 1."""
    import torch

    from models.yolo import Model
    from utils.hyp import Hyp
    from utils.loss import ComputeLoss

    device = torch.device("cuda", 0)
    torch.backends.cudnn.benchmark = True
    model = Model(ROOT / "models" / "yolov5s.yaml", nc=80).to(device).train()
    model.hyp = Hyp.from_yaml(ROOT / "data" / "hyps" / "hyp.scratch-low.yaml").to_dict()
    criterion = ComputeLoss(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.937, nesterov=True)
    scaler = torch.amp.GradScaler("cuda")
    images = torch.rand(batch, 3, imgsz, imgsz, device=device)
    targets = torch.tensor([[i, i % 80, 0.5, 0.5, 0.2, 0.3] for i in range(batch)], device=device)

    def train_step() -> None:
        with torch.autocast("cuda", dtype=torch.float16):
            loss, _ = criterion(model(images), targets)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    train_s = _timed(train_step, steps, warmup=5)
    model.eval().fuse().half()
    with torch.inference_mode():
        infer_s = _timed(lambda: model(images.half()), steps, warmup=5)
        single = images[:1].half()
        latency_s = _timed(lambda: model(single), steps * 5, warmup=10)
    return {"ok": True, "device": torch.cuda.get_device_name(0), "train_images_per_s": batch / train_s,
            "infer_images_per_s": batch / infer_s, "infer_batch1_ms": latency_s * 1000, "batch": batch,
            "imgsz": imgsz}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", choices=CHECKS, default=list(CHECKS), help="checks to run")
    parser.add_argument("--skip-throughput", action="store_true")
    return parser.parse_args(argv)


def main(args: argparse.Namespace) -> int:
    """Run the chosen checks; print the table; write the JSON; return the exit code."""
    missing = missing_modules()
    if missing:
        print(f"missing Python packages: {', '.join(missing)} (carry their wheels; see the device tool's README)")
        return 2
    import torch

    if not torch.cuda.is_available():
        print("no CUDA device visible: this check list needs a GPU machine")
        return 2
    out = Path(os.environ.get("OUT") or ROOT / "runs" / "cuda_checklist")
    out.mkdir(parents=True, exist_ok=True)
    checks = [c for c in args.only if not (args.skip_throughput and c == "throughput")]
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = make_data(work)
        runners = {"amp": lambda: check_amp(data, work, out), "ddp": lambda: check_ddp(data, work, out),
                   "pinned": lambda: check_pinned(data), "half": lambda: check_half(work, data, out),
                   "throughput": check_throughput}
        for name in checks:
            start = time.perf_counter()
            try:
                results[name] = runners[name]()
            except Exception as error:  # a failed check is reported, the others still run
                results[name] = {"ok": False, "note": f"{type(error).__name__}: {error}"}
            results[name]["seconds"] = round(time.perf_counter() - start, 1)
            print(f"{name:<11} {'PASS' if results[name]['ok'] else 'FAIL'}  {results[name]}", flush=True)
    (out / "cuda_checklist.json").write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    return 0 if all(r["ok"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main(parse_args()))
