"""The pretraining study: which backbone pretraining helps detection on the built-in dataset with few labels?

Low-label regime: detection trains on a fixed random ``--labels`` fraction of the training images (10 % = 40 of the
400 built-in images; another subset per seed) and is validated on the full validation split after the last epoch.
Arms, all at equal detection epochs and settings (``train.py``: Adam, ``hyp.shapes.yaml``, ``--imgsz``, batch,
seed), see :data:`benchmarks.pretraining_jobs.ARMS`:

* ``scratch``: yolov5n from random initialisation (the reference);
* ``cls_full`` / ``cls_frozen``: backbone pretrained as an 8-class classifier on the separate built-in
  ``shapes-cls`` dataset (``classify/train.py``), then ``--backbone-weights``, full fine-tuning or ``--freeze 10``;
* ``ae_{skips,noskips}_{full,frozen}``: backbone pretrained by the autoencoder (``extensions.pretrain``, with and
  without skip connections) on all training images without their labels;
* ``convnext_scratch`` / ``convnext_cls_full``: the ConvNeXt-Atto YAML from scratch and from a
  classification-pretrained backbone (its difference is taken to ``convnext_scratch`` and shown to ``scratch``).

Pretraining runs once per route and is shared by the seeds. Reported: every run, the mean mAP50 and mAP50-95 per
arm, the 95 % Student-t interval of the per-seed difference to the reference arm, and wall time including
pretraining; a verdict, ``results.csv``/``pretraining.csv`` in ``--project`` (rewritten after every job, so the
interim answer can be read while the study runs) and a plot (``--plot``).

Jobs run in their own processes (``--jobs`` at a time, ``--threads`` each: 1 thread per process avoids OpenMP
spin-waiting on shared cores); a finished job's ``result.json`` is kept and ``--reuse`` skips it.

Usage::

    nice -n 5 python benchmarks/bench_pretraining.py --reuse                # the README study (hours)
    python benchmarks/bench_pretraining.py --reuse --report-only            # verdict + plot from stored runs
    python benchmarks/bench_pretraining.py --arms scratch cls_full --seeds 0 1 2 3 4 --reuse
    python benchmarks/bench_pretraining.py --quick --project /tmp/study     # a minute-long smoke run (tests)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np
import yaml
from tqdm import tqdm

from benchmarks.bench_stats import paired_interval, save_figure_atomic, write_json_atomic
from benchmarks.pretraining_jobs import (
    ARMS,
    RESULT_FILE,
    Arm,
    Job,
    add_extra_arm,
    parse_extra,
    run_worker,
    worker_environment,
)

DEFAULT_PROJECT = ROOT / "runs" / "pretraining_study"
DEFAULT_PLOT = ROOT / "docs" / "images" / "pretraining_study.png"
BUILTIN_ARMS = tuple(ARMS)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--project", type=Path, default=DEFAULT_PROJECT, help="study folder (jobs, CSVs, verdict)")
    p.add_argument("--arms", nargs="+", default=None, help=f"arms to run (default: all of {', '.join(ARMS)})")
    p.add_argument("--extra", nargs="*", default=[], metavar="NAME=PATH[:frozen]",
                   help="extra arms from existing backbone files (yolov5n), e.g. a longer classification run")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="detection seeds (subset, init, order)")
    p.add_argument("--labels", type=float, default=0.1, help="fraction of the training images with labels")
    p.add_argument("--det-data", default=str(ROOT / "data" / "shapes.yaml"), help="detection dataset YAML")
    p.add_argument("--cls-data", default=str(ROOT / "data" / "shapes-cls.yaml"), help="classification dataset")
    p.add_argument("--epochs", type=int, default=50, help="detection epochs (equal for every arm)")
    p.add_argument("--imgsz", type=int, default=192, help="detection image size")
    p.add_argument("--batch-size", type=int, default=8, help="detection batch size")
    p.add_argument("--cls-epochs", type=int, default=20, help="classification pretraining epochs")
    p.add_argument("--cls-imgsz", type=int, default=64, help="classification pretraining image size")
    p.add_argument("--cls-convnext-epochs", type=int, default=8, help="ConvNeXt classification pretraining epochs")
    p.add_argument("--ae-epochs", type=int, default=10, help="autoencoder pretraining epochs")
    p.add_argument("--ae-imgsz", type=int, default=192, help="autoencoder pretraining image size")
    p.add_argument("--jobs", type=int, default=4, help="jobs running at the same time")
    p.add_argument("--threads", type=int, default=1, help="torch threads per job")
    p.add_argument("--reuse", action="store_true", help="keep finished jobs (their result.json)")
    p.add_argument("--report-only", action="store_true", help="run nothing: verdict and plot of stored results")
    p.add_argument("--plot", type=Path, default=DEFAULT_PLOT, help="figure file (png)")
    p.add_argument("--quick", action="store_true", help="tiny settings for a smoke test (not a measurement)")
    p.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    extra = [add_extra_arm(spec).name for spec in args.extra]
    args.arms = args.arms or [*BUILTIN_ARMS, *extra]
    unknown = [arm for arm in args.arms if arm not in ARMS]
    if unknown:
        p.error(f"unknown arm(s) {unknown}; known: {', '.join(ARMS)}")
    if args.quick:
        args.epochs, args.imgsz, args.batch_size = 1, 64, 4
        args.cls_epochs, args.cls_convnext_epochs, args.cls_imgsz, args.ae_epochs, args.ae_imgsz = 1, 1, 32, 1, 64
    return args


def detection_splits(det_data: str) -> dict:
    """The checked detection dataset (generated if built in): absolute ``train``/``val`` paths and ``names``."""
    from utils.data.dataset_yaml import check_dataset

    return check_dataset(det_data)


def train_images(data: dict) -> list[str]:
    """Sorted training image paths of the detection dataset."""
    from utils.data.paths import list_image_files

    return list_image_files(data["train"])


def labelled_subset(images: list[str], fraction: float, seed: int) -> list[str]:
    """The fixed labelled subset of ``seed``: ``round(fraction * n)`` (at least 1) images drawn without replacement,
    in their original order."""
    count = max(1, round(fraction * len(images)))
    chosen = np.random.default_rng([seed, 2024]).choice(len(images), size=count, replace=False)
    return [images[i] for i in sorted(chosen.tolist())]


def write_subset_yaml(study: Path, data: dict, subset: list[str], seed: int) -> str:
    """Write ``data/labelled_seed{seed}.txt`` (the subset) and its dataset YAML; returns the YAML path."""
    folder = study / "data"
    folder.mkdir(parents=True, exist_ok=True)
    listing = folder / f"labelled_seed{seed}.txt"
    listing.write_text("".join(f"{path}\n" for path in subset))
    spec = {"train": str(listing), "val": data["val"], "names": dict(data["names"])}
    file = folder / f"labelled_seed{seed}.yaml"
    file.write_text(yaml.safe_dump(spec, sort_keys=False))
    return str(file)


def unlabelled_folder(study: Path, images: list[str]) -> str:
    """A folder of links to every training image, without label files (the autoencoder sees no labels)."""
    folder = study / "data" / "unlabelled"
    folder.mkdir(parents=True, exist_ok=True)
    for path in images:
        link = folder / Path(path).name
        if not link.exists():
            os.symlink(path, link)
    return str(folder)


def quick_cls_data(study: Path) -> str:
    """Quick mode: a 16-per-class ``shapes-cls`` copy inside the study folder."""
    from utils.data.builtin_cls import ensure_shapes_cls_dataset

    return str(ensure_shapes_cls_dataset(study / "data" / "shapes-cls-quick", {"train": 128, "val": 32}))


def pretrain_jobs(args: argparse.Namespace, study: Path, unlabelled: str, cls_data: str) -> dict[str, Job]:
    """The pretraining jobs (all four; only those an arm needs are run)."""
    common = dict(device="cpu", workers=1, exist_ok=True, name="run", seed=0)
    cls = dict(data=cls_data, epochs=args.cls_epochs, imgsz=args.cls_imgsz, batch_size=32, **common)
    ae = dict(cfg="yolov5n.yaml", data=unlabelled, epochs=args.ae_epochs, imgsz=args.ae_imgsz, batch_size=16,
              noplots=True, **common)
    jobs = [Job("pre_cls_yolov5n", "cls", {**cls, "model": "yolov5n.yaml"}),
            Job("pre_ae_skips", "ae", {**ae, "skips": True}),
            Job("pre_ae_noskips", "ae", {**ae, "skips": False}),
            Job("pre_cls_convnext", "cls", {**cls, "model": "convnext_yolov5n.yaml",
                                            "epochs": args.cls_convnext_epochs})]
    for job in jobs:
        job.kwargs["project"] = str(job.folder(study))
    return {job.name: job for job in jobs}


def detection_job(args: argparse.Namespace, study: Path, arm_name: str, seed: int, data_yaml: str) -> Job:
    """The detection run of one arm and seed (validated once, after the last epoch)."""
    arm = ARMS[arm_name]
    name = f"det_{arm_name}_s{seed}"
    kwargs = dict(data=data_yaml, cfg=arm.cfg, weights="", hyp=str(ROOT / "data" / "hyps" / "hyp.shapes.yaml"),
                  optimizer="Adam", epochs=args.epochs, imgsz=args.imgsz, batch_size=args.batch_size, workers=1,
                  device="cpu", seed=seed, noval=True, noplots=True, freeze=[arm.freeze],
                  project=str(study / name), name="run", exist_ok=True)
    return Job(name, "det", kwargs, needs=[arm.pretrain] if arm.pretrain else [], arm=arm_name, seed=seed)


def build_jobs(args: argparse.Namespace) -> list[Job]:
    """Every job of the study in priority order: the pretraining each arm needs right before that arm's runs."""
    study = args.project
    data = detection_splits(args.det_data)
    images = train_images(data)
    cls_data = quick_cls_data(study) if args.quick else args.cls_data
    pretrain = pretrain_jobs(args, study, unlabelled_folder(study, images[:16] if args.quick else images), cls_data)
    yamls = {seed: write_subset_yaml(study, data, labelled_subset(images, args.labels, seed), seed)
             for seed in args.seeds}
    for spec in args.extra:  # an existing backbone file: a "file" job that only records the path and its time
        name, path, _, minutes = parse_extra(spec)
        pretrain[f"file_{name}"] = Job(f"file_{name}", "file", {"weights": str(Path(path).resolve()),
                                                                 "minutes": minutes})
    jobs: list[Job] = []
    for arm_name in args.arms:
        needed = ARMS[arm_name].pretrain
        if needed and needed not in {job.name for job in jobs}:
            jobs.append(pretrain[needed])
        jobs += [detection_job(args, study, arm_name, seed, yamls[seed]) for seed in args.seeds]
    first = next((job for job in jobs if job.kind != "det"), None)
    return ([first] + [job for job in jobs if job is not first]) if first else jobs  # the longest wait first


PID_FILE = "running.pid"  # in a job folder while its worker runs (another study process then waits for it)


def launch(job: Job, args: argparse.Namespace) -> None:
    """Run ``job`` in a worker process (niced by the caller's own niceness), its PID in :data:`PID_FILE`.

    Raises:
        RuntimeError: the worker failed (the message names its log file).
    """
    folder = job.folder(args.project)
    folder.mkdir(parents=True, exist_ok=True)
    spec = folder / "job.json"
    write_json_atomic(spec, {**job.__dict__, "study": str(args.project)})
    with open(folder / "log.txt", "w", encoding="utf-8") as log:
        worker = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker", str(spec)], stdout=log,
                                  stderr=subprocess.STDOUT, env=worker_environment(args.threads), cwd=ROOT)
        (folder / PID_FILE).write_text(str(worker.pid))
        code = worker.wait()
    (folder / PID_FILE).unlink(missing_ok=True)
    if code != 0:
        raise RuntimeError(f"{job.name} failed (exit {code}); see {folder / 'log.txt'}")


def running_elsewhere(job: Job, study: Path) -> int | None:
    """The PID of a live worker already running ``job`` (started by an earlier study process), else None."""
    try:
        pid = int((job.folder(study) / PID_FILE).read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def follow(job: Job, pid: int, study: Path, poll: float = 20.0) -> None:
    """Wait until the worker ``pid`` of another study process ends.

    Raises:
        RuntimeError: it ended without writing the job's result.
    """
    while True:
        try:
            os.kill(pid, 0)
        except OSError:
            break
        time.sleep(poll)
    if job.result(study) is None:
        raise RuntimeError(f"{job.name}: worker {pid} (another study process) ended without a result")


def schedule(jobs: list[Job], args: argparse.Namespace) -> None:
    """Run the unfinished jobs, ``args.jobs`` at a time, each once its pretraining is done; reports after each.

    A job another study process is running (live PID in :data:`PID_FILE`) is waited for, not started again.
    """
    done = {job.name for job in jobs if args.reuse and job.result(args.project) is not None}
    pending = [job for job in jobs if job.name not in done]
    failed: set[str] = set()
    running: dict[Future, tuple[Job, bool]] = {}  # future -> (job, launched here)
    with ThreadPoolExecutor(max(1, args.jobs) + len(jobs)) as pool, \
            tqdm(total=len(jobs), initial=len(done), desc="study") as bar:
        while pending or running:
            free = max(1, args.jobs) - sum(launched for _, launched in running.values())
            for job in [j for j in pending if all(n in done for n in j.needs)]:
                if args.reuse and job.result(args.project) is not None:  # finished meanwhile by another study
                    pending.remove(job)
                    done.add(job.name)
                    bar.update(1)
                elif (pid := running_elsewhere(job, args.project)) is not None:
                    pending.remove(job)
                    running[pool.submit(follow, job, pid, args.project)] = (job, False)
                elif free > 0:
                    pending.remove(job)
                    running[pool.submit(launch, job, args)] = (job, True)
                    free -= 1
            for job in [j for j in pending if any(n in failed for n in j.needs)]:
                pending.remove(job)
                failed.add(job.name)
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                job, _ = running.pop(future)
                try:
                    future.result()
                    done.add(job.name)
                except RuntimeError as error:
                    failed.add(job.name)
                    tqdm.write(f"WARNING: {error}")
                bar.update(1)
                write_tables(jobs, args.project)
                tqdm.write(progress_line(job, args.project))
    if failed:
        print(f"failed or skipped jobs: {', '.join(sorted(failed))}")


def progress_line(job: Job, study: Path) -> str:
    """One line about a finished job."""
    result = job.result(study)
    if result is None:
        return f"{job.name}: no result"
    if job.kind == "det":
        return (f"{job.name}: mAP50 {result['mAP50']:.4f}, mAP50-95 {result['mAP50_95']:.4f}, "
                f"{result['seconds'] / 60:.1f} min, transferred {result['transferred'] or '-'}")
    if job.kind == "file":
        return f"{job.name}: backbone file {result['weights']}"
    metric = f"top-1 {result.get('top1', 0):.3f}" if job.kind == "cls" else f"best loss {result['best_loss']:.4g}"
    return f"{job.name}: {metric}, {result['seconds'] / 60:.1f} min"


def finished_runs(study: Path) -> tuple[list[dict], dict[str, dict]]:
    """Stored results: detection runs (list) and pretraining jobs (by name)."""
    runs, pretraining = [], {}
    for file in sorted(Path(study).glob(f"*/{RESULT_FILE}")):
        record = yaml.safe_load(file.read_text())
        if record.get("kind") == "det":
            runs.append(record)
        else:
            pretraining[record["name"]] = record
    return runs, pretraining


def write_tables(jobs: list[Job], study: Path) -> None:
    """Rewrite ``results.csv`` (one row per finished detection run) and ``pretraining.csv``, atomically."""
    from utils.files import atomic_write_bytes

    runs, pretraining = finished_runs(study)
    rows = ["arm,seed,mAP50,mAP50_95,P,R,det_minutes,pretrain_minutes,transferred"]
    order = {arm: i for i, arm in enumerate(ARMS)}
    rows += [f"{r['arm']},{r['seed']},{r['mAP50']:.5f},{r['mAP50_95']:.5f},{r['P']:.4f},{r['R']:.4f},"
             f"{r['seconds'] / 60:.2f},{pretrain_seconds(r, pretraining) / 60:.2f},{r['transferred']}"
             for r in sorted(runs, key=lambda r: (order.get(r["arm"], len(order)), r["arm"], r["seed"]))]
    atomic_write_bytes(study / "results.csv", ("\n".join(rows) + "\n").encode())
    lines = ["job,kind,minutes,top1,best_loss"]
    lines += [f"{n},{r['kind']},{r['seconds'] / 60:.2f},{r.get('top1', '')},{r.get('best_loss', '')}"
              for n, r in sorted(pretraining.items())]
    atomic_write_bytes(study / "pretraining.csv", ("\n".join(lines) + "\n").encode())


def pretrain_seconds(run: dict, pretraining: dict[str, dict] | None) -> float:
    """The pretraining wall seconds of a detection run: its jobs' current results, else what the run recorded."""
    needs = run.get("needs") or []
    if pretraining is not None and needs and all(n in pretraining for n in needs):
        return sum(float(pretraining[n]["seconds"]) for n in needs)
    return float(run.get("pretrain_seconds", 0.0))


def arm_summary(runs: list[dict], pretraining: dict[str, dict] | None = None) -> dict[str, dict]:
    """Per arm: seeds, mAP50/mAP50-95 per seed and mean, and mean wall minutes (detection, pretraining)."""
    for name in {r["arm"] for r in runs} - set(ARMS):  # an --extra arm of an earlier study process
        ARMS[name] = Arm(name, "yolov5n.yaml", f"file_{name}", label="extra backbone file")
    summary: dict[str, dict] = {}
    for arm in ARMS:
        arm_runs = sorted((r for r in runs if r["arm"] == arm), key=lambda r: r["seed"])
        if arm_runs:
            summary[arm] = {"seeds": [r["seed"] for r in arm_runs],
                            "map50": {r["seed"]: r["mAP50"] for r in arm_runs},
                            "map": {r["seed"]: r["mAP50_95"] for r in arm_runs},
                            "det_minutes": float(np.mean([r["seconds"] for r in arm_runs])) / 60,
                            "pretrain_minutes": pretrain_seconds(arm_runs[0], pretraining) / 60,
                            "transferred": arm_runs[0]["transferred"]}
    return summary


def difference(summary: dict, arm: str, reference: str, key: str) -> tuple[float, float, float, int] | None:
    """Mean per-seed difference ``arm - reference`` of ``key`` over common seeds and its 95 % interval."""
    if arm not in summary or reference not in summary:
        return None
    seeds = sorted(set(summary[arm][key]) & set(summary[reference][key]))
    if not seeds:
        return None
    diffs = [summary[arm][key][s] - summary[reference][key][s] for s in seeds]
    low, high, _ = paired_interval(diffs)
    return float(np.mean(diffs)), low, high, len(seeds)


def verdict(summary: dict) -> str:
    """The answer: a table per arm and which routes give a gain whose 95 % interval excludes zero."""
    lines = ["| arm | seeds | mAP50 per seed | mean mAP50 | mean mAP50-95 | d mAP50 vs ref [95 % CI] | "
             "d mAP50-95 vs ref [95 % CI] | minutes (det + pretrain) | backbone |", "|---" * 9 + "|"]
    helps, hurts = [], []
    for arm, s in summary.items():
        reference = ARMS[arm].reference
        cells = []
        for key in ("map50", "map"):
            d = difference(summary, arm, reference, key) if arm != reference else None
            cells.append("-" if d is None else f"{d[0]:+.4f} [{d[1]:+.4f}, {d[2]:+.4f}] vs {reference}")
            if d is not None and key == "map50" and d[1] > 0:
                helps.append(f"{arm} (+{d[0]:.4f} mAP50, interval [{d[1]:+.4f}, {d[2]:+.4f}])")
            elif d is not None and key == "map50" and d[2] < 0:
                hurts.append(f"{arm} ({d[0]:+.4f} mAP50)")
        per_seed = " ".join(f"{s['map50'][k]:.3f}" for k in s["seeds"])
        lines.append(f"| {arm} | {len(s['seeds'])} | {per_seed} | {np.mean(list(s['map50'].values())):.4f} | "
                     f"{np.mean(list(s['map'].values())):.4f} | {cells[0]} | {cells[1]} | "
                     f"{s['det_minutes']:.1f} + {s['pretrain_minutes']:.1f} | {s['transferred'] or '-'} |")
        if arm == "convnext_cls_full" and "scratch" in summary:
            d = difference(summary, arm, "scratch", "map50")
            if d is not None:
                lines.append(f"| (convnext_cls_full vs yolov5n scratch) | {d[3]} | | | | {d[0]:+.4f} "
                             f"[{d[1]:+.4f}, {d[2]:+.4f}] | | | |")
    lines.append("")
    lines.append("Routes with a mAP50 gain whose 95 % interval excludes zero: " + (", ".join(helps) or "none"))
    if hurts:
        lines.append("Routes that are worse than their reference (interval below zero): " + ", ".join(hurts))
    return "\n".join(lines)


def save_plot(summary: dict, file: Path, title: str) -> None:
    """Three panels: mAP50 per arm (each seed a dot, the mean a bar), the mAP50 difference to the reference with
    its 95 % interval, and wall minutes per run (detection + pretraining)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    arms = list(summary)
    fig = Figure(figsize=(14, 4.8), tight_layout=True)
    FigureCanvasAgg(fig)
    ax_map, ax_diff, ax_time = fig.subplots(1, 3)
    y = np.arange(len(arms))
    for i, arm in enumerate(arms):
        values = list(summary[arm]["map50"].values())
        ax_map.barh(i, np.mean(values), color="tab:blue", alpha=0.35)
        ax_map.plot(values, [i] * len(values), "o", color="tab:blue", ms=4)
        d = difference(summary, arm, ARMS[arm].reference, "map50") if arm != ARMS[arm].reference else None
        if d is not None:
            colour = "tab:green" if d[1] > 0 else "tab:red" if d[2] < 0 else "tab:gray"
            low, high = (max(d[1], -1.0), min(d[2], 1.0)) if np.isfinite(d[1]) else (d[0], d[0])
            ax_diff.errorbar(d[0], i, xerr=[[d[0] - low], [high - d[0]]], fmt="o", color=colour, capsize=4)
        ax_time.barh(i, summary[arm]["det_minutes"], color="tab:orange", label="detection" if i == 0 else None)
        ax_time.barh(i, summary[arm]["pretrain_minutes"], left=summary[arm]["det_minutes"], color="tab:purple",
                     label="pretraining (once, shared by the seeds)" if i == 0 else None)
    labels = [f"{arm} (vs {ARMS[arm].reference})" if arm != ARMS[arm].reference else arm for arm in arms]
    from matplotlib.ticker import MaxNLocator

    for ax in (ax_map, ax_diff, ax_time):
        ax.set_yticks(y, labels if ax is ax_map else [""] * len(arms))
        ax.xaxis.set_major_locator(MaxNLocator(5))
        ax.set_ylim(len(arms) - 0.5, -0.5)  # same rows in every panel, first arm on top
        ax.grid(axis="x", alpha=0.3)
    ax_diff.axvline(0, color="black", lw=0.8)
    ax_map.set(xlabel="mAP50 (dots: seeds, bar: mean)", title="detection mAP50, 100 val images")
    ax_diff.set(xlabel="mAP50 difference to the reference", title="gain over the reference, 95 % interval")
    ax_time.set(xlabel="wall minutes per run", title="cost")
    ax_time.legend(fontsize=8, loc="lower right")
    fig.suptitle(title)
    save_figure_atomic(fig, file)


def report(args: argparse.Namespace) -> str:
    """Print and store (``verdict.md``) the verdict; draw the plot. Returns the verdict text."""
    runs, pretraining = finished_runs(args.project)
    summary = arm_summary(runs, pretraining)
    if not summary:
        return "no finished detection runs yet"
    text = verdict(summary)
    pre = ", ".join(f"{n} {r['seconds'] / 60:.1f} min" + (f" (top-1 {r['top1']:.3f})" if "top1" in r else "")
                    for n, r in sorted(pretraining.items()))
    text += f"\nPretraining jobs: {pre or 'none'}"
    (args.project / "verdict.md").write_text(text + "\n")
    seeds = sorted({r["seed"] for r in runs})
    title = (f"Pretraining study: yolov5n @ {args.imgsz} px, {args.labels:.0%} of the labels, {args.epochs} epochs, "
             f"seeds {', '.join(map(str, seeds))}")
    save_plot(summary, args.plot, title)
    return text


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker is not None:
        run_worker(args.worker)
        return
    args.project.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        schedule(build_jobs(args), args)
    print(report(args))
    print(f"plot: {args.plot}\ntables: {args.project / 'results.csv'}, {args.project / 'pretraining.csv'}")


if __name__ == "__main__":
    main()
