"""End-to-end tests of extensions/pretrain.py on a tiny generated dataset (64 px, 8 train / 4 val images, CPU)."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
import torch
import yaml

from extensions import pretrain
from extensions.autoencoder.export import load_pretrain_checkpoint
from extensions.autoencoder.model import load_cfg
from extensions.transfer import load_backbone_weights
from models.yolo import Model
from tests.dataset_support import write_shapes_yaml
from utils.callbacks import Callbacks
from utils.checkpoint import torch_safe_load
from utils.plotting.results import read_csv_table

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT.parent / "shared" / "fixtures" / "upstream" / "yolov5n-trained.pt"
FAST = {"imgsz": 64, "batch_size": 4, "workers": 0, "device": "cpu"}
STEP_COUNTER = "num_batches_tracked"


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> str:
    return write_shapes_yaml(tmp_path_factory.mktemp("data"), {"train": 8, "val": 4}, {i: f"c{i}" for i in range(8)})


@pytest.fixture(scope="module")
def one_epoch_run(tiny_cfg, tiny_data, tmp_path_factory):
    project = tmp_path_factory.mktemp("runs")
    return pretrain.run(cfg=tiny_cfg, data=tiny_data, epochs=1, project=str(project), save_backbone=True, **FAST)


def _backbone_params(model: torch.nn.Module, n: int) -> dict:
    return {k: v for k, v in model.state_dict().items()
            if int(k.split(".")[1]) < n and not k.endswith(STEP_COUNTER)}


def test_one_epoch_writes_the_run_folder(one_epoch_run):
    save_dir = Path(one_epoch_run.save_dir)
    assert save_dir.name == "exp"
    for name in ("weights/last.pt", "weights/best.pt", "weights/backbone.pt", "results.csv", "results.png",
                 "recon_epoch0.png", "opt.yaml"):
        assert (save_dir / name).is_file(), name
    header, values = read_csv_table(save_dir / "results.csv")
    assert header == ["epoch", "train/loss", "val/loss", "x/lr0"]
    assert values.shape == (1, 4) and values[0, 0] == 0 and math.isfinite(values[0, 2])
    assert values[0, 3] == pytest.approx(1e-3)
    saved = yaml.safe_load((save_dir / "opt.yaml").read_text())
    assert saved["mask_p"] == 0.01 and saved["skips"] is True and saved["pretext"] == "none"
    ckpt = load_pretrain_checkpoint(save_dir / "weights" / "best.pt")
    assert ckpt["epoch"] == 0 and ckpt["optimizer"] is None
    assert ckpt["best_loss"] == pytest.approx(values[0, 2], rel=1e-4)


def test_pretrained_backbone_transfers_100_percent(one_epoch_run, tiny_cfg):
    best = Path(one_epoch_run.save_dir) / "weights" / "best.pt"
    ckpt = torch_safe_load(best)
    detector = Model(tiny_cfg, nc=8)
    head_before = {k: v.clone() for k, v in detector.state_dict().items() if int(k.split(".")[1]) >= 10}
    report = load_backbone_weights(best, detector)
    assert report.num_transferred == report.total == len(_backbone_params(detector, 10)) and not report.skipped
    for key, value in _backbone_params(detector, 10).items():
        assert torch.equal(value, ckpt["backbone"][key]), key
    assert all(torch.equal(detector.state_dict()[k], v) for k, v in head_before.items())
    backbone_file = torch_safe_load(Path(one_epoch_run.save_dir) / "weights" / "backbone.pt")
    assert list(backbone_file) == list(ckpt["backbone"])
    assert all(torch.equal(backbone_file[k], v) for k, v in ckpt["backbone"].items())


def test_train_py_starts_from_the_pretrained_backbone(one_epoch_run, tiny_cfg, tiny_data, tmp_path):
    """pretrain 1 epoch -> train.py 1 epoch with the backbone frozen -> the detector's backbone equals the file."""
    import train
    from engine.train_options import TrainOptions

    best = Path(one_epoch_run.save_dir) / "weights" / "best.pt"
    expected = torch_safe_load(best)["backbone"]
    key = "backbone_weights" if "backbone_weights" in TrainOptions.field_names() else "weights"
    opt = train.run(cfg=tiny_cfg, data=tiny_data, epochs=1, freeze=[10], project=str(tmp_path), noplots=True,
                    noautoanchor=True, **{key: str(best)}, **FAST)
    detector = torch_safe_load(Path(opt.save_dir) / "weights" / "last.pt")["model"].float()
    params = dict(detector.named_parameters())
    backbone_params = [k for k in params if int(k.split(".")[1]) < 10]
    assert backbone_params
    for name in backbone_params:  # checkpoints store fp16: compare at that precision
        assert torch.equal(params[name].detach(), expected[name].half().float()), name


def test_unlabeled_image_folder(tmp_path, tiny_cfg, tiny_data):
    images = Path(yaml.safe_load(Path(tiny_data).read_text())["path"]) / "images" / "train"
    folder = tmp_path / "photos"
    folder.mkdir()
    for image in sorted(images.glob("*.jpg"))[:6]:
        shutil.copy(image, folder / image.name)
    opt = pretrain.run(cfg=tiny_cfg, data=str(folder), epochs=1, project=str(tmp_path / "runs"), **FAST)
    header, values = read_csv_table(Path(opt.save_dir) / "results.csv")
    assert values.shape == (1, 4) and math.isnan(values[0, 2]) and math.isfinite(values[0, 1])
    ckpt = load_pretrain_checkpoint(Path(opt.save_dir) / "weights" / "best.pt")
    assert ckpt["best_loss"] == pytest.approx(values[0, 1], rel=1e-4)
    assert (Path(opt.save_dir) / "recon_epoch0.png").is_file()


class _Crash:
    """Callback that raises KeyboardInterrupt (not caught by Callbacks) when epoch ``at`` starts."""

    def __init__(self, at: int):
        self.at, self.calls = at, 0

    def __call__(self) -> None:
        if self.calls == self.at:
            raise KeyboardInterrupt
        self.calls += 1


def test_crash_leaves_loadable_last_and_resume_continues(tmp_path, tiny_cfg, tiny_data):
    callbacks = Callbacks()
    callbacks.register_action("on_train_epoch_start", "crash", _Crash(at=2))
    project = tmp_path / "runs"
    with pytest.raises(KeyboardInterrupt):
        pretrain.run(cfg=tiny_cfg, data=tiny_data, epochs=3, project=str(project), noplots=True,
                     callbacks=callbacks, **FAST)
    last = project / "exp" / "weights" / "last.pt"
    crashed = load_pretrain_checkpoint(last)
    assert crashed["epoch"] == 1 and crashed["optimizer"] is not None
    assert not list(last.parent.glob(".*.tmp"))
    opt = pretrain.run(resume=str(last), project=str(project))
    assert opt.save_dir == str(project / "exp") and opt.epochs == 3
    header, values = read_csv_table(project / "exp" / "results.csv")
    assert values[:, 0].tolist() == [0, 1, 2]
    assert values[2, 3] == pytest.approx(1e-3 * 0.325)  # cosine factor at epoch 2 of 3 with lrf 0.1
    finished = load_pretrain_checkpoint(last)
    assert finished["epoch"] == 2 and finished["optimizer"] is None
    with pytest.raises(RuntimeError, match="nothing to resume"):
        pretrain.run(resume=str(last), project=str(project))


def test_weights_start_sets_mask_p_and_unknown_option_is_refused(tmp_path):
    opt = pretrain.build_parser().parse_args(["--weights", "x.pt", "--cfg", "yolov5s.yaml", "--project", str(tmp_path)])
    opt = pretrain.prepare_new_run(opt)
    assert opt.mask_p == 0.05 and opt.cfg == "yolov5s.yaml"
    opt = pretrain.build_parser().parse_args(["--project", str(tmp_path), "--no-skips", "--mask-p", "0.2"])
    opt = pretrain.prepare_new_run(opt)
    assert opt.mask_p == 0.2 and opt.skips is False and opt.cfg == "yolov5n.yaml"
    assert Path(opt.save_dir).name == "exp2"
    with pytest.raises(TypeError, match="unknown pretraining option"):
        pretrain.run(epoch=3)


@pytest.mark.skipif(not FIXTURE.is_file(), reason="upstream fixture checkpoint not available")
def test_cfg_defaults_to_the_weights_architecture(tmp_path):
    opt = pretrain.build_parser().parse_args(["--weights", str(FIXTURE), "--project", str(tmp_path)])
    opt = pretrain.prepare_new_run(opt)
    assert isinstance(opt.cfg, dict) and opt.cfg["backbone"] == load_cfg("yolov5n.yaml")["backbone"]
    assert opt.cfg["nc"] == 10 and opt.mask_p == 0.05


def test_ema_and_boxes_pretext(tmp_path, tiny_cfg, tiny_data):
    opt = pretrain.run(cfg=tiny_cfg, data=tiny_data, epochs=1, ema=True, pretext="boxes", project=str(tmp_path),
                       **FAST)
    ckpt = load_pretrain_checkpoint(Path(opt.save_dir) / "weights" / "last.pt")
    ema_encoder = {k[len("encoder."):]: v for k, v in ckpt["autoencoder_ema"].items() if k.startswith("encoder.")}
    assert ckpt["ema_updates"] == 2 and list(ema_encoder) == list(ckpt["backbone"])
    assert all(torch.equal(ema_encoder[k], v) for k, v in ckpt["backbone"].items())
    raw = ckpt["autoencoder"]["encoder.model.0.conv.weight"]
    assert not torch.equal(raw, ckpt["backbone"]["model.0.conv.weight"])
    grid = cv2.imread(str(Path(opt.save_dir) / "recon_epoch0.png"))
    assert grid.shape[1] == 4 * 64 + 3 * 4  # input | reconstruction | target | mask


@pytest.mark.parametrize("command", [["-m", "extensions.pretrain"], ["extensions/pretrain.py"]])
def test_cli_entry_points_show_help(command):
    result = subprocess.run([sys.executable, *command, "--help"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    for flag in ("--cfg", "--data", "--weights", "--mask-p", "--no-skips", "--pretext", "--resume", "--fp32",
                 "--save-backbone"):
        assert flag in result.stdout
