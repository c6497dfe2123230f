"""End-to-end tests of train.py on a tiny generated dataset (64 px, 8 train / 4 val images, CPU)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

import train
from engine.train_options import NothingToResumeError, TrainOptions
from utils.callbacks import Callbacks
from utils.checkpoint import make_checkpoint, save_checkpoint, torch_safe_load
from utils.data.shapes import SHAPE_NAMES
from utils.loggers.csv_logger import RESULTS_KEYS
from utils.plotting.results import read_csv_table

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT.parent / "shared" / "fixtures" / "upstream" / "yolov5n-trained.pt"
UPSTREAM_OPT_KEYS = [
    "weights", "cfg", "data", "hyp", "epochs", "batch_size", "imgsz", "rect", "resume", "nosave", "noval",
    "noautoanchor", "noplots", "evolve", "evolve_population", "resume_evolve", "bucket", "cache", "image_weights",
    "device", "multi_scale", "single_cls", "optimizer", "sync_bn", "workers", "project", "name", "exist_ok", "quad",
    "cos_lr", "label_smoothing", "patience", "freeze", "save_period", "seed", "local_rank", "entity",
    "upload_dataset", "bbox_interval", "artifact_alias", "save_dir"]
EXTRA_OPT_KEYS = ["backbone_weights", "fp32"]  # this project's additions, stored before save_dir
FAST = {"imgsz": 64, "batch_size": 4, "workers": 0, "device": "cpu", "noautoanchor": True, "noplots": True}


@pytest.fixture(scope="module")
def finished_run(tiny_data, tmp_path_factory) -> Path:
    """A complete 2-epoch run through the real command line, with plots and AutoAnchor (the default path)."""
    project = tmp_path_factory.mktemp("runs")
    cmd = [sys.executable, "train.py", "--data", tiny_data, "--epochs", "2", "--imgsz", "64", "--batch-size", "2",
           "--workers", "0", "--device", "cpu", "--project", str(project), "--name", "exp"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return project / "exp"


def test_parse_opt_accepts_every_upstream_flag(tmp_path):
    argv = ["--weights", "a.pt", "--cfg", "yolov5s.yaml", "--data", "d.yaml", "--hyp", "h.yaml", "--epochs", "3",
            "--batch-size", "8", "--img", "416", "--rect", "--resume", "--nosave", "--noval", "--noautoanchor",
            "--noplots", "--evolve", "--evolve_population", "pop", "--resume_evolve", "r.yaml", "--bucket", "b",
            "--cache", "--image-weights", "--device", "cpu", "--multi-scale", "--single-cls", "--optimizer", "AdamW",
            "--sync-bn", "--workers", "2", "--project", "p", "--name", "n", "--exist-ok", "--quad", "--cos-lr",
            "--label-smoothing", "0.1", "--patience", "5", "--freeze", "0", "1", "2", "--save-period", "2",
            "--seed", "7", "--local_rank", "-1", "--entity", "e", "--upload_dataset", "val", "--bbox_interval", "3",
            "--artifact_alias", "v1"]
    sys_argv, sys.argv = sys.argv, ["train.py", *argv]
    try:
        opt = train.parse_opt()
    finally:
        sys.argv = sys_argv
    assert opt.imgsz == 416 and opt.batch_size == 8 and opt.resume is True and opt.evolve == 300
    assert opt.cache == "ram" and opt.freeze == [0, 1, 2] and opt.upload_dataset == "val"
    assert opt.optimizer == "AdamW" and opt.label_smoothing == 0.1 and opt.save_period == 2
    assert sorted(vars(opt)) == sorted([k for k in UPSTREAM_OPT_KEYS if k != "save_dir"] + EXTRA_OPT_KEYS)


def test_defaults_train_yolov5n_from_the_shipped_backbone_on_builtin_data():
    from engine.train_options import apply_dataset_defaults, prepare_new_run

    opt = train.build_parser().parse_args([])
    assert (opt.weights, opt.cfg, opt.imgsz, opt.batch_size) == ("", "", 320, 16)
    assert Path(opt.data).name == "shapes.yaml" and "builtin" in yaml.safe_load(Path(opt.data).read_text())
    options = prepare_new_run(TrainOptions.from_namespace(opt))
    assert (Path(options.cfg).name, Path(options.hyp).name, options.optimizer, options.epochs) == (
        "yolov5n.yaml", "hyp.shapes.yaml", "Adam", 20)
    assert options.freeze == [10]
    scratch = prepare_new_run(TrainOptions.from_namespace(train.build_parser().parse_args(
        ["--backbone-weights", "none"])))
    assert (scratch.epochs, scratch.backbone_weights, scratch.freeze) == (20, "", [0])
    tuned = prepare_new_run(TrainOptions.from_namespace(train.build_parser().parse_args(["--freeze", "0"])))
    assert (tuned.epochs, tuned.freeze) == (20, [0]) and tuned.backbone_weights == options.backbone_weights
    assert Path(options.backbone_weights).relative_to(ROOT).as_posix() == "data/pretrained/yolov5n-shapes-cls.pt"
    explicit = apply_dataset_defaults(TrainOptions(data=opt.data, optimizer="SGD", epochs=3))
    assert (Path(explicit.hyp).name, explicit.optimizer, explicit.epochs) == ("hyp.shapes.yaml", "SGD", 3)


def test_user_datasets_get_upstream_defaults(tiny_data):
    from engine.train_options import apply_dataset_defaults

    options = apply_dataset_defaults(TrainOptions(data=tiny_data))
    assert (Path(options.hyp).name, options.optimizer, options.epochs) == ("hyp.scratch-low.yaml", "SGD", 100)


def test_run_rejects_unknown_option_with_suggestion():
    with pytest.raises(TypeError, match="did you mean 'epochs'"):
        train.run(epochz=3)


def test_missing_weights_error_says_nothing_downloads(tiny_data, tmp_path):
    with pytest.raises(FileNotFoundError, match="Nothing is downloaded") as info:
        train.run(data=tiny_data, weights="yolov5s.pt", project=str(tmp_path), **FAST)
    assert "--cfg yolov5s.yaml" in str(info.value)


def test_cli_reports_user_errors_without_traceback(tmp_path):
    done = subprocess.run([sys.executable, "train.py", "--weights", "missing.pt", "--project", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "train: error:" in done.stdout and "Nothing is downloaded" in done.stdout
    assert "Traceback" not in done.stderr


def test_finished_run_writes_every_output(finished_run):
    expected = ["weights/best.pt", "weights/last.pt", "results.csv", "results.png", "labels.jpg",
                "train_batch0.jpg", "train_batch1.jpg", "train_batch2.jpg", "val_batch0_labels.jpg",
                "val_batch0_pred.jpg", "confusion_matrix.png", "PR_curve.png", "F1_curve.png", "P_curve.png",
                "R_curve.png", "hyp.yaml", "opt.yaml"]
    missing = [f for f in expected if not (finished_run / f).is_file()]
    assert not missing, f"missing run outputs: {missing}"
    opt = yaml.safe_load((finished_run / "opt.yaml").read_text())
    assert list(opt) == UPSTREAM_OPT_KEYS[:-1] + EXTRA_OPT_KEYS + ["save_dir"]
    assert opt["hyp"] == yaml.safe_load((finished_run / "hyp.yaml").read_text())
    assert opt["hyp"]["box"] == 0.05 and opt["save_dir"] == str(finished_run)


def test_results_csv_has_upstream_columns_and_format(finished_run):
    lines = (finished_run / "results.csv").read_text().splitlines()
    assert [c.strip() for c in lines[0].split(",")] == ["epoch", *RESULTS_KEYS]
    assert all(len(cell) == 20 for line in lines for cell in line.split(","))
    header, values = read_csv_table(finished_run / "results.csv")
    assert values[:, 0].tolist() == [0, 1]
    assert values[0, header.index("x/lr0")] == pytest.approx(0.1 - 0.09 * 3 / 100, rel=1e-4)  # warmup, step 3


def test_finished_checkpoints_are_stripped_and_valid(finished_run):
    for name in ("last.pt", "best.pt"):
        ckpt = torch_safe_load(finished_run / "weights" / name)
        assert ckpt["epoch"] == -1 and ckpt["optimizer"] is None and ckpt["ema"] is None
        assert ckpt["model"].names == dict(enumerate(SHAPE_NAMES)) and ckpt["model"].nc == len(SHAPE_NAMES)
        assert next(ckpt["model"].parameters()).dtype == torch.float16
        assert ckpt["opt"]["epochs"] == 2 and set(ckpt["git"]) == {"remote", "branch", "commit"}


def test_val_runs_on_produced_best_pt(finished_run, tiny_data):
    import val

    (p, r, map50, map5095, *losses), maps, times = val.run(
        tiny_data, weights=str(finished_run / "weights" / "best.pt"), imgsz=64, batch_size=4, device="cpu",
        workers=0, project=str(finished_run.parent), name="val", plots=False)
    assert 0 <= map5095 <= map50 <= 1 and 0 <= p <= 1 and 0 <= r <= 1
    assert maps.shape == (len(SHAPE_NAMES),) and losses == [0.0, 0.0, 0.0]


def test_finished_run_refuses_to_resume(finished_run, tiny_data):
    last = finished_run / "weights" / "last.pt"
    with pytest.raises(NothingToResumeError, match="training to 2 epochs is finished, nothing to resume"):
        train.run(resume=str(last))


def _lr_at_epoch_end(epoch: int, nb: int, epochs: int, group: int, lr0: float = 0.01, lrf: float = 0.01) -> float:
    """Upstream warmup LR after the last batch of ``epoch`` (nw = 100 steps, linear schedule)."""
    target = lr0 * ((1 - epoch / epochs) * (1 - lrf) + lrf)
    return float(np.interp(nb * (epoch + 1) - 1, [0, 100], [0.1 if group == 0 else 0.0, target]))


def test_resume_after_interruption_continues_epoch_and_lr(tiny_data, tmp_path, log_lines):
    def interrupt(last, epoch, final_epoch, best_fitness, fi):
        if epoch == 0:
            raise KeyboardInterrupt

    callbacks = Callbacks()
    callbacks.register_action("on_model_save", callback=interrupt)
    opt = train.build_parser().parse_args([])
    for key, value in {**FAST, "data": tiny_data, "epochs": 3, "project": str(tmp_path), "name": "r"}.items():
        setattr(opt, key, value)
    with pytest.raises(KeyboardInterrupt):
        train.main(opt, callbacks)
    last = tmp_path / "r" / "weights" / "last.pt"
    ckpt = torch_safe_load(last)
    assert ckpt["epoch"] == 0 and ckpt["optimizer"] is not None and ckpt["updates"] == 2  # steps at ni 0, 1
    resumed = train.run(resume=str(last))
    assert resumed.save_dir == str(tmp_path / "r") and resumed.epochs == 3
    assert any("from epoch 1 to 3 total epochs" in line for line in log_lines)
    header, values = read_csv_table(tmp_path / "r" / "results.csv")
    assert values[:, 0].tolist() == [0, 1, 2]
    for epoch in range(3):
        for group in range(3):
            expected = _lr_at_epoch_end(epoch, nb=2, epochs=3, group=group)
            assert values[epoch, header.index(f"x/lr{group}")] == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("source", ["own", "upstream"])
def test_train_from_weights_transfers_matching_tensors(source, tiny_data, tmp_path, log_lines):
    from models.yolo import Model

    if source == "own":
        model = Model("yolov5n.yaml", nc=len(SHAPE_NAMES))
        weights = tmp_path / "random.pt"
        save_checkpoint(make_checkpoint(model), weights)
        total, expected = len(model.state_dict()), len(model.state_dict())
    else:
        if not FIXTURE.is_file():
            pytest.skip("upstream fixture not available")
        weights = FIXTURE
        total = len(torch_safe_load(FIXTURE)["model"].state_dict())
        expected = total - 6  # the Detect convs (3 weights + 3 biases) change shape: 10 -> 8 classes
    opt = train.run(data=tiny_data, weights=str(weights), epochs=1, project=str(tmp_path), name="w", **FAST)
    assert f"Transferred {expected}/{total} items from {weights}" in log_lines
    assert (Path(opt.save_dir) / "weights" / "best.pt").is_file()


def test_cfg_with_weights_excludes_anchors(tiny_data, tmp_path, log_lines):
    from models.yolo import Model

    model = Model("yolov5n.yaml", nc=len(SHAPE_NAMES))
    weights = tmp_path / "random.pt"
    save_checkpoint(make_checkpoint(model), weights)
    total = len(model.state_dict())
    train.run(data=tiny_data, weights=str(weights), cfg="yolov5n.yaml", epochs=1, nosave=True,
              project=str(tmp_path), **FAST)
    assert f"Transferred {total - 1}/{total} items from {weights}" in log_lines


def test_evolve_two_generations_writes_evolve_csv(tiny_data, tmp_path):
    opt = train.run(data=tiny_data, evolve=2, epochs=1, project=str(tmp_path), name="evo", **FAST)
    save_dir = Path(opt.save_dir)
    header, values = read_csv_table(save_dir / "evolve.csv")
    assert values.shape[0] == 2 and header[:4] == ["metrics/precision", "metrics/recall", "metrics/mAP_0.5",
                                                   "metrics/mAP_0.5:0.95"]
    assert "lr0" in header and "mosaic" in header and "anchors" not in header  # --noautoanchor drops anchors
    assert not np.array_equal(values[0, 7:], values[1, 7:]), "generation 2 must mutate the hyperparameters"
    assert (save_dir / "hyp_evolve.yaml").is_file() and (save_dir / "evolve.png").is_file()
    assert not (save_dir / "weights" / "last.pt").exists() and not (save_dir / "opt.yaml").exists()
    best = yaml.safe_load((save_dir / "hyp_evolve.yaml").read_text())
    assert set(best) == set(header[7:]) and all(math.isfinite(v) for v in best.values())


def _handful_of_builtin_images(root: Path, count: int = 4, copies: int = 16) -> str:
    """Write ``count`` images of the built-in train split (1-3 shapes, each >= 30% of the image side), each copied
    ``copies`` times so that one batch of 64 is one optimizer step; returns a dataset YAML (val = train)."""
    from utils.data.builtin import GENERATOR_VERSION, SPLIT_SEEDS, render_sample

    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir(parents=True)
    index, found = 0, 0
    while found < count:
        image, labels = render_sample(np.random.default_rng([SPLIT_SEEDS["train"], index, GENERATOR_VERSION]))
        index += 1
        if not 1 <= len(labels) <= 3 or labels[:, 3:].min() < 0.3:
            continue
        rows = "".join(f"{int(c)} {x:.6f} {y:.6f} {w:.6f} {h:.6f}\n" for c, x, y, w, h in labels)
        for copy in range(copies):
            cv2.imwrite(str(root / "images" / f"{found}_{copy}.jpg"), image)
            (root / "labels" / f"{found}_{copy}.txt").write_text(rows)
        found += 1
    data = {"path": str(root), "train": "images", "val": "images", "names": dict(enumerate(SHAPE_NAMES))}
    (root / "data.yaml").write_text(yaml.safe_dump(data))
    return str(root / "data.yaml")


@pytest.mark.slow
def test_learning_overfits_a_handful_of_builtin_images(tmp_path):
    """yolov5n from scratch reaches mAP50 > 0.5 on 4 built-in images within 200 optimizer steps (64 px)."""
    import val
    from engine.train_options import load_hyp

    data = _handful_of_builtin_images(tmp_path / "handful")
    hyp = {**load_hyp(ROOT / "data" / "hyps" / "hyp.no-augmentation.yaml"), "lr0": 0.002}
    opt = train.run(data=data, hyp=hyp, optimizer="Adam", epochs=200, imgsz=64, batch_size=64, workers=0,
                    device="cpu", noautoanchor=True, noplots=True, noval=True, nosave=True, patience=0,
                    project=str(tmp_path), name="learn")
    (precision, recall, map50, map5095, *_), _, _ = val.run(
        data, weights=str(Path(opt.save_dir) / "weights" / "best.pt"), imgsz=64, batch_size=64, device="cpu",
        workers=0, plots=False, project=str(tmp_path), name="val")
    assert map50 > 0.5, f"mAP50 {map50:.3f} after 200 steps (P {precision:.3f}, R {recall:.3f})"
