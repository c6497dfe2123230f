"""End-to-end ``train.py`` wall time, ours against upstream YOLOv5's, side by side, with a per-phase breakdown.

    $ python benchmarks/bench_train_e2e.py                                   # ours only, 3 rounds
    $ python benchmarks/bench_train_e2e.py --upstream /path/to/upstream --rounds 3

Both scripts run as subprocesses with the same flags (default: ``--cfg yolov5n.yaml --weights '' --img 256
--batch 16 --epochs 3 --workers 2`` on a 256-train / 64-val subset of the built-in ``shapes`` data, which carries no
``builtin:`` key, so both use upstream's default hyperparameters). Rounds alternate the order (ours first, then
upstream first, ...), so a machine that slows down or speeds up affects both alike. Each log line is timestamped as
it arrives; the phases come from the lines both scripts print (``optimizer:``, ``AutoAnchor:``, ``Plotting labels``,
``Starting training``, each epoch's progress header, its validation bar and ``all`` summary line, ``epochs completed``,
``Validating``, ``Results saved``).

Upstream is measured as a black box: ``--upstream DIR`` is a folder made with
``pip install --no-deps --target DIR yolov5==7.0.14`` (the PyPI packaging of upstream) plus the few packages that
packaging imports at start-up (``pip install --no-deps --target DIR "setuptools<70" gitpython psutil fire
"ultralytics<8.3" roboflow sahi python-dotenv pillow-avif-plugin "huggingface_hub<0.24"``). Its process gets a
``sitecustomize`` written by this script that only restores two names removed from current libraries
(``numpy.trapz``, Pillow's ``FreeTypeFont.getsize``), hides ``comet_ml`` (upstream would start an offline Comet
experiment because the package is installed here; ours logs to Comet only when asked) and points upstream's font
lookup at a local copy of matplotlib's DejaVu Sans, so nothing tries the network.

Target: ours <= 0.6x upstream's wall time (median over rounds). Prints the figures and writes ``results.json`` and a
bar chart of the phases (``--plot``); asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from utils.data.builtin import ensure_builtin_dataset
from utils.data.dataset_yaml import DATASETS_DIR
from utils.data.shapes import SHAPE_NAMES

TARGET_RATIO = 0.6
PHASES = ("start-up", "model", "data scan", "AutoAnchor", "labels plot", "train", "val", "epoch end", "final val",
          "finish")
UPSTREAM_SHIM = '''"""Written by benchmarks/bench_train_e2e.py for the upstream process only (see its docstring)."""
import sys

import numpy

if not hasattr(numpy, "trapz"):
    numpy.trapz = numpy.trapezoid
try:
    from PIL import ImageFont

    if not hasattr(ImageFont.FreeTypeFont, "getsize"):
        def _getsize(self, text):
            left, top, right, bottom = self.getbbox(text)
            return right - left, bottom - top

        ImageFont.FreeTypeFont.getsize = _getsize
except ImportError:
    pass
sys.modules["comet_ml"] = None  # import comet_ml -> ImportError
'''


@dataclass
class Run:
    """One timed run: implementation, wall and CPU seconds, exit code, phase seconds and the timestamped log."""

    impl: str
    wall: float
    cpu: float
    returncode: int
    phases: dict[str, float] = field(default_factory=dict)
    log: list[tuple[float, str]] = field(default_factory=list)


def make_subset(folder: Path, train: int, val: int) -> Path:
    """Copy the first ``train``/``val`` images (and labels) of the built-in shapes data; returns the dataset YAML."""
    source = ensure_builtin_dataset("shapes", DATASETS_DIR / "shapes")
    for split, count in (("train", train), ("val", val)):
        images = sorted((source / "images" / split).glob("*.jpg"))[:count]
        for kind in ("images", "labels"):
            (folder / kind / split).mkdir(parents=True, exist_ok=True)
        for image in images:
            shutil.copy2(image, folder / "images" / split / image.name)
            label = f"{image.stem}.txt"
            shutil.copy2(source / "labels" / split / label, folder / "labels" / split / label)
    names = "\n".join(f"  {i}: {name}" for i, name in enumerate(SHAPE_NAMES))
    yaml_path = folder / "subset.yaml"
    yaml_path.write_text(f"path: {folder}\ntrain: images/train\nval: images/val\nnames:\n{names}\n", encoding="utf-8")
    return yaml_path


def timestamped_lines(command: list[str], env: dict, cwd: Path) -> tuple[list[tuple[float, str]], int, float]:
    """Run ``command``; returns (seconds since start, line) for every ``\\n``/``\\r``-ended line, exit code, CPU s."""
    usage = os.times()
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    lines, pending = [], b""
    while chunk := process.stdout.read1(65536):
        pending += chunk.replace(b"\r", b"\n")
        *complete, pending = pending.split(b"\n")
        now = time.perf_counter() - start
        lines += [(now, line.decode(errors="replace")) for line in complete if line.strip()]
    process.wait()
    lines.append((time.perf_counter() - start, "EXIT"))
    after = os.times()
    cpu = (after.children_user - usage.children_user) + (after.children_system - usage.children_system)
    return lines, process.returncode, cpu


def _first(log: list[tuple[float, str]], text: str, after: float = 0.0) -> float | None:
    return next((t for t, line in log if t >= after and text in line), None)


def phase_breakdown(log: list[tuple[float, str]]) -> dict[str, float]:
    """Seconds per phase (see :data:`PHASES`) from a timestamped ``train.py`` log; missing markers merge phases."""
    end = log[-1][0]
    marks = {"start-up": 0.0, "model": _first(log, "Overriding model.yaml") or _first(log, " from  n ")}
    marks["data scan"] = _first(log, "optimizer:")
    marks["AutoAnchor"] = _first(log, "AutoAnchor:")
    marks["labels plot"] = _first(log, "Plotting labels")
    marks["train-start"] = _first(log, "Starting training")
    marks["completed"] = _first(log, "epochs completed")
    marks["final val"] = _first(log, "Validating")
    marks["finish"] = _first(log, "Results saved") or end
    ordered = [(name, t) for name, t in marks.items() if t is not None]
    phases = dict.fromkeys(PHASES, 0.0)
    for (name, start), (_, stop) in zip(ordered, ordered[1:] + [("end", end)], strict=True):
        if name in ("train-start", "completed"):
            continue
        phases[name] += stop - start
    start = marks["train-start"] or 0.0
    epoch_starts = [t for t, line in log if "Epoch" in line and "GPU_mem" in line and t >= start]
    stop = marks["completed"] or marks["final val"] or end
    for i, epoch_start in enumerate(epoch_starts):
        epoch_end = epoch_starts[i + 1] if i + 1 < len(epoch_starts) else stop
        val_start = _first(log, "Class", epoch_start)
        val_end = next((t for t, line in log if epoch_start <= t <= epoch_end and line.split()[:1] == ["all"]), None)
        if val_start is None or val_start > epoch_end:
            phases["train"] += epoch_end - epoch_start
            continue
        val_end = val_end if val_end is not None else epoch_end
        phases["train"] += val_start - epoch_start
        phases["val"] += val_end - val_start
        phases["epoch end"] += epoch_end - val_end
    phases["epoch end"] += (epoch_starts[0] - start) if epoch_starts else 0.0
    return phases


def train_command(impl: str, data: Path, project: Path, args: argparse.Namespace) -> list[str]:
    """The command line of one run: the same flags for both implementations."""
    script = ROOT / "train.py" if impl == "ours" else Path(args.upstream) / "yolov5" / "train.py"
    return [sys.executable, str(script), "--data", str(data), "--cfg", args.cfg, "--weights", "", "--img",
            str(args.img), "--batch", str(args.batch), "--epochs", str(args.epochs), "--workers", str(args.workers),
            "--project", str(project), "--name", impl]


def upstream_env(work: Path, args: argparse.Namespace) -> dict:
    """Environment of the upstream process: its folder first on PYTHONPATH, the shim, a local font, no autoinstall."""
    shim = work / "upstream_shim"
    shim.mkdir(exist_ok=True)
    (shim / "sitecustomize.py").write_text(UPSTREAM_SHIM, encoding="utf-8")
    import matplotlib

    config = work / "upstream_config"
    config.mkdir(exist_ok=True)
    shutil.copy2(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf", config / "Arial.ttf")
    path = [str(shim), str(Path(args.upstream).resolve())] + [str(Path(p).resolve()) for p in args.upstream_path]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(path), YOLOv5_AUTOINSTALL="false",
                YOLOV5_CONFIG_DIR=str(config), YOLOv5_VERBOSE="true")


def run_once(impl: str, data: Path, work: Path, round_index: int, args: argparse.Namespace) -> Run:
    """One ``train.py`` run of ``impl`` in a fresh project folder with a fresh label cache."""
    project = work / f"round{round_index}"
    for cache in data.parent.glob("labels/*.cache"):
        cache.unlink()
    env = upstream_env(work, args) if impl == "upstream" else dict(os.environ, PYTHONPATH=str(ROOT))
    log, code, cpu = timestamped_lines(train_command(impl, data, project, args), env, cwd=work)
    if code:
        tail = "\n".join(line for _, line in log[-15:])
        raise SystemExit(f"{impl} train.py failed (exit {code}); last lines:\n{tail}")
    return Run(impl, log[-1][0], cpu, code, phase_breakdown(log), log)


def summarize(runs: list[Run]) -> dict:
    """Median wall, CPU and phases per implementation, and ours / upstream."""
    summary = {}
    for impl in ("ours", "upstream"):
        mine = [r for r in runs if r.impl == impl]
        if mine:
            summary[impl] = {"wall": statistics.median(r.wall for r in mine),
                             "cpu": statistics.median(r.cpu for r in mine),
                             "walls": [round(r.wall, 1) for r in mine],
                             "phases": {p: statistics.median(r.phases[p] for r in mine) for p in PHASES}}
    if len(summary) == 2:
        summary["ratio"] = summary["ours"]["wall"] / summary["upstream"]["wall"]
    return summary


def format_report(summary: dict, args: argparse.Namespace) -> str:
    """A table of the median phase seconds per implementation, then the verdict against the target."""
    impls = [i for i in ("ours", "upstream") if i in summary]
    lines = [f"train.py {args.cfg} --img {args.img} --batch {args.batch} --epochs {args.epochs} --workers "
             f"{args.workers}, {args.train_images} train / {args.val_images} val images, {args.rounds} rounds",
             f"{'phase':<14}" + "".join(f"{i:>12}" for i in impls)]
    for phase in PHASES:
        lines.append(f"{phase:<14}" + "".join(f"{summary[i]['phases'][phase]:>11.1f}s" for i in impls))
    lines.append(f"{'wall (median)':<14}" + "".join(f"{summary[i]['wall']:>11.1f}s" for i in impls))
    lines.append(f"{'CPU (median)':<14}" + "".join(f"{summary[i]['cpu']:>11.1f}s" for i in impls))
    lines.append(f"{'walls':<14}" + "".join(f"{str(summary[i]['walls']):>24}" for i in impls))
    if "ratio" in summary:
        verdict = "meets" if summary["ratio"] <= TARGET_RATIO else "misses"
        lines.append(f"ours / upstream wall time: {summary['ratio']:.2f}x ({verdict} the <= {TARGET_RATIO}x target)")
    return "\n".join(lines)


def plot_phases(summary: dict, path: Path) -> None:
    """Horizontal stacked bars of the median phases per implementation (PNG, written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    impls = [i for i in ("ours", "upstream") if i in summary]
    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.8 * len(impls)))
    colours = plt.get_cmap("tab10").colors
    for row, impl in enumerate(impls):
        left = 0.0
        for k, phase in enumerate(PHASES):
            width = summary[impl]["phases"][phase]
            ax.barh(row, width, left=left, color=colours[k], label=phase if row == 0 else None)
            left += width
    ax.set_yticks(range(len(impls)), impls)
    ax.set_xlabel("seconds (median over rounds)")
    ax.legend(ncol=5, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.35))
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstream", default="", help="folder holding upstream's yolov5 package (pip --target)")
    parser.add_argument("--upstream-path", nargs="*", default=[], help="extra PYTHONPATH entries for upstream")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cfg", default="yolov5n.yaml")
    parser.add_argument("--img", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--train-images", type=int, default=256)
    parser.add_argument("--val-images", type=int, default=64)
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench_train_e2e"), help="results.json and logs")
    parser.add_argument("--plot", default="", help="also write the phase chart to this PNG")
    return parser.parse_args(argv)


def main(args: argparse.Namespace) -> dict:
    """Run the rounds, print the report, write ``results.json`` (and the plot); returns the summary."""
    if args.upstream and not (Path(args.upstream) / "yolov5" / "train.py").is_file():
        raise SystemExit(f"--upstream {args.upstream}: no yolov5/train.py there (see this script's docstring)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    impls = ["ours", "upstream"] if args.upstream else ["ours"]
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench_e2e_") as tmp:
        work = Path(tmp)
        data = make_subset(work / "data", args.train_images, args.val_images)
        for round_index in range(args.rounds):
            for impl in impls if round_index % 2 == 0 else impls[::-1]:
                run = run_once(impl, data, work, round_index, args)
                print(f"round {round_index} {impl}: {run.wall:.1f} s wall, {run.cpu:.1f} s CPU", flush=True)
                (out / f"{impl}_round{round_index}.log").write_text(
                    "\n".join(f"{t:8.2f} {line}" for t, line in run.log), encoding="utf-8")
                runs.append(run)
    summary = summarize(runs)
    print(format_report(summary, args))
    (out / "results.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    if args.plot:
        plot_phases(summary, Path(args.plot))
    return summary


if __name__ == "__main__":
    main(parse_args())
