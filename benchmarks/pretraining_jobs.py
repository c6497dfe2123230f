"""The jobs of the pretraining study (``bench_pretraining.py``): their specifications, and the worker that runs one
job in its own process (``python benchmarks/bench_pretraining.py --worker job.json``).

Kinds of job:

* ``cls``: classification pretraining of a backbone (``classify/train.py``) on the built-in ``shapes-cls`` data;
* ``ae``: autoencoder pretraining (``python -m extensions.pretrain``) on the detection training images *without*
  their labels (a folder of links, so no label file is found);
* ``det``: detection training (``train.py``) on a labelled subset, optionally from a pretrained backbone
  (``--backbone-weights``), full fine-tuning or frozen backbone (``--freeze``), validated once after the last epoch
  (``--noval``) on the full validation split.

Each job writes ``<study>/<name>/result.json`` atomically when it finishes (``--reuse`` skips such jobs).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.bench_stats import write_json_atomic

RESULT_FILE = "result.json"
TRANSFER_RE = re.compile(r"Transferred (\d+)/(\d+) backbone tensors")


@dataclass
class Arm:
    """One study arm: detection ``cfg``, pretraining job (or None: scratch), backbone ``freeze`` count, and the arm
    its per-seed difference is taken against."""

    name: str
    cfg: str
    pretrain: str | None = None
    freeze: int = 0
    reference: str = "scratch"
    label: str = ""


ARMS = {arm.name: arm for arm in (
    Arm("scratch", "yolov5n.yaml", label="yolov5n from scratch"),
    Arm("cls_full", "yolov5n.yaml", "pre_cls_yolov5n", label="classification-pretrained, full fine-tuning"),
    Arm("cls_frozen", "yolov5n.yaml", "pre_cls_yolov5n", 10, label="classification-pretrained, frozen backbone"),
    Arm("ae_skips_full", "yolov5n.yaml", "pre_ae_skips", label="autoencoder (skips), full fine-tuning"),
    Arm("ae_noskips_full", "yolov5n.yaml", "pre_ae_noskips", label="autoencoder (no skips), full fine-tuning"),
    Arm("ae_skips_frozen", "yolov5n.yaml", "pre_ae_skips", 10, label="autoencoder (skips), frozen backbone"),
    Arm("ae_noskips_frozen", "yolov5n.yaml", "pre_ae_noskips", 10, label="autoencoder (no skips), frozen backbone"),
    Arm("convnext_scratch", "convnext_yolov5n.yaml", label="ConvNeXt-Atto from scratch"),
    Arm("convnext_cls_full", "convnext_yolov5n.yaml", "pre_cls_convnext", reference="convnext_scratch",
        label="ConvNeXt-Atto classification-pretrained, full fine-tuning"),
)}


@dataclass
class Job:
    """A unit of work: ``kind`` (cls/ae/det), its keyword arguments, the jobs it needs first, its arm and seed."""

    name: str
    kind: str
    kwargs: dict
    needs: list[str] = field(default_factory=list)
    arm: str = ""
    seed: int = -1

    def folder(self, study: Path) -> Path:
        """Return the job's folder inside the study folder."""
        return Path(study) / self.name

    def result(self, study: Path) -> dict | None:
        """Return the stored result of this job, or None when there is none or it was run with other settings."""
        try:
            stored = json.loads((self.folder(study) / RESULT_FILE).read_text())
        except (OSError, ValueError):
            return None
        return stored if stored.get("kwargs") == json.loads(json.dumps(self.kwargs)) else None


class _Capture(logging.Handler):
    """Collect the project logger's lines during a job (for the transfer report)."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _run_cls(kwargs: dict) -> dict:
    from classify import train as classify_train
    from utils.callbacks import Callbacks

    captured: dict = {}
    callbacks = Callbacks()
    callbacks.register_action("on_train_end", "study", lambda last, best, epoch, results: captured.update(
        top1=float(results[0]), top5=float(results[1]), loss=float(results[2])))
    opt = classify_train.run(callbacks=callbacks, **kwargs)
    return {"weights": str(Path(opt.save_dir) / "weights" / "best.pt"), **captured}


def _run_ae(kwargs: dict) -> dict:
    from extensions import pretrain

    opt = pretrain.run(**kwargs)
    return {"weights": str(opt.best), "best_loss": float(opt.best_loss)}


def _run_det(kwargs: dict) -> dict:
    import train
    from utils.callbacks import Callbacks

    captured: dict = {}
    callbacks = Callbacks()
    callbacks.register_action("on_train_end", "study", lambda last, best, epoch, results: captured.update(
        results=[float(x) for x in results]))
    opt = train.build_parser().parse_args([])
    vars(opt).update(kwargs)
    train.main(opt, callbacks)
    results = captured.get("results", [0.0] * 7)
    return {"P": results[0], "R": results[1], "mAP50": results[2], "mAP50_95": results[3], "save_dir": opt.save_dir}


def _run_file(kwargs: dict) -> dict:
    """An existing backbone file (``--extra``): nothing to train; its pretraining time is the one given."""
    return {"weights": kwargs["weights"], "recorded_seconds": 60.0 * float(kwargs.get("minutes", 0.0))}


RUNNERS = {"cls": _run_cls, "ae": _run_ae, "det": _run_det, "file": _run_file}


def parse_extra(spec: str) -> tuple[str, str, str, float]:
    """Split ``NAME=PATH[:frozen|:full][:MINUTES]`` into (name, path, mode, pretraining minutes).

    Raises:
        ValueError: the spec is malformed.
    """
    name, _, rest = spec.partition("=")
    path, *options = rest.split(":")
    mode = next((o for o in options if o in ("frozen", "full")), "full")
    minutes = [o for o in options if o not in ("frozen", "full")]
    try:
        value = float(minutes[0]) if minutes else 0.0
    except ValueError:
        value = -1.0
    if not name or not path or len(minutes) > 1 or value < 0:
        raise ValueError(f"--extra {spec}: expected NAME=PATH[:frozen|:full][:MINUTES]")
    return name, path, mode, value


def add_extra_arm(spec: str) -> Arm:
    """Register an arm from ``NAME=PATH[:frozen|:full][:MINUTES]`` (an existing backbone file, e.g. a longer
    pretraining run, that took MINUTES) and return it; its pretraining job is ``file_NAME``, reference ``scratch``.

    Raises:
        ValueError: the spec is malformed or the file does not exist.
    """
    name, path, mode, _ = parse_extra(spec)
    if not Path(path).is_file():
        raise ValueError(f"--extra {spec}: {path} not found")
    arm = Arm(name, "yolov5n.yaml", f"file_{name}", 10 if mode == "frozen" else 0,
              label=f"backbone from {Path(path).name}" + (", frozen" if mode == "frozen" else ""))
    ARMS[name] = arm
    return arm


def run_worker(spec_file: Path) -> None:
    """Run the job described by ``spec_file`` (JSON of :class:`Job` plus ``study``) and write its result."""
    from utils.logging import LOGGER

    spec = json.loads(Path(spec_file).read_text())
    job = Job(**{k: v for k, v in spec.items() if k != "study"})
    kwargs = dict(job.kwargs)
    needed = {name: json.loads((Path(spec["study"]) / name / RESULT_FILE).read_text()) for name in job.needs}
    if job.kind == "det" and job.needs:
        kwargs["backbone_weights"] = needed[job.needs[0]]["weights"]
    capture = _Capture()
    LOGGER.addHandler(capture)
    start = time.perf_counter()
    try:
        outcome = RUNNERS[job.kind](kwargs)
    finally:
        LOGGER.removeHandler(capture)
    transfer = next((m.groups() for line in capture.lines if (m := TRANSFER_RE.search(line))), None)
    seconds = outcome.pop("recorded_seconds", time.perf_counter() - start)
    record = {**asdict(job), "seconds": seconds, **outcome,
              "transferred": f"{transfer[0]}/{transfer[1]}" if transfer else "",
              "pretrain_seconds": sum(float(needed[n]["seconds"]) for n in job.needs)}
    write_json_atomic(job.folder(Path(spec["study"])) / RESULT_FILE, record)


def worker_environment(threads: int) -> dict:
    """Environment of a worker process: ``threads`` BLAS/OpenMP threads (1 avoids spin-waiting on shared cores)."""
    env = dict(os.environ)
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[key] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env
