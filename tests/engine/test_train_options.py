"""TrainOptions, hyperparameter loading, weights lookup and resume option restoration."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from engine.train_options import (
    BUILTIN_BACKBONES,
    DEFAULT_CFG,
    NothingToResumeError,
    TrainOptions,
    backbone_provenance,
    explicit_overrides,
    get_latest_run,
    load_hyp,
    prepare_new_run,
    resolve_weights,
    restore_resume_options,
)


def test_from_dict_rejects_unknown_keys_with_suggestion_or_drops_them():
    with pytest.raises(TypeError, match="'batchsize' \\(did you mean 'batch_size'\\?\\)"):
        TrainOptions.from_dict({"batchsize": 8})
    options = TrainOptions.from_dict({"batch_size": 8, "img_size": [640, 640], "freeze": 10}, strict=False)
    assert options.batch_size == 8 and options.freeze == [10]


def test_to_dict_is_plain_and_round_trips():
    options = TrainOptions(project=Path("/tmp/p"), data={"path": Path("/d"), "train": "t"})
    values = options.to_dict()
    assert values["project"] == "/tmp/p" and values["data"] == {"path": "/d", "train": "t"}
    assert list(values)[-1] == "save_dir" and TrainOptions.from_dict(values) == TrainOptions.from_dict(values)
    assert yaml.safe_load(yaml.safe_dump(values)) == values


def test_load_hyp_fills_missing_keys_and_rejects_non_numbers(tmp_path):
    partial = tmp_path / "h.yaml"
    partial.write_text("lr0: 0.02\nanchors: 3\n")
    hyp = load_hyp(partial)
    assert hyp["lr0"] == 0.02 and hyp["momentum"] == 0.937 and hyp["anchors"] == 3 and len(hyp) == 29
    partial.write_text("lr0: fast\n")
    with pytest.raises(ValueError, match=r"h.yaml: hyperparameter 'lr0' must be a number, got 'fast'"):
        load_hyp(partial)
    assert load_hyp({"lr0": 0.001})["lr0"] == 0.001


def test_resolve_weights_explains_that_nothing_downloads(tmp_path):
    assert resolve_weights("") == ""
    existing = tmp_path / "w.pt"
    existing.write_bytes(b"x")
    assert resolve_weights(existing) == str(existing)
    with pytest.raises(FileNotFoundError, match="Nothing is downloaded.*--weights '' --cfg yolov5m.yaml"):
        resolve_weights("yolov5m.pt")
    with pytest.raises(FileNotFoundError, match="never downloads"):
        resolve_weights("https://example.com/yolov5s.pt")


def test_get_latest_run_returns_newest_last_pt(tmp_path):
    assert get_latest_run(tmp_path) == ""
    old, new = tmp_path / "a" / "weights" / "last.pt", tmp_path / "b" / "weights" / "last.pt"
    for f in (old, new):
        f.parent.mkdir(parents=True)
        f.write_bytes(b"x")
        time.sleep(0.02)
    assert get_latest_run(tmp_path) == str(new)


def test_prepare_new_run_defaults_to_yolov5n_and_increments_save_dir(tmp_path):
    data = Path(__file__).resolve().parents[2] / "data" / "shapes.yaml"
    first = prepare_new_run(TrainOptions(data=str(data), project=str(tmp_path)))
    assert Path(first.cfg).name == DEFAULT_CFG and first.save_dir == str(tmp_path / "exp")
    (tmp_path / "exp").mkdir()
    assert prepare_new_run(TrainOptions(data=str(data), project=str(tmp_path))).save_dir == str(tmp_path / "exp2")
    named = prepare_new_run(TrainOptions(data=str(data), project=str(tmp_path), cfg="yolov5s.yaml", name="cfg"))
    assert named.save_dir == str(tmp_path / "yolov5s")
    evolving = prepare_new_run(TrainOptions(data=str(data), project=str(tmp_path), evolve=3, resume=True))
    assert evolving.exist_ok is True and evolving.resume is False and evolving.save_dir == str(tmp_path / "exp")


def test_restore_resume_options_reads_opt_yaml_and_applies_overrides(tmp_path):
    run = tmp_path / "exp3"
    (run / "weights").mkdir(parents=True)
    last = run / "weights" / "last.pt"
    last.write_bytes(b"x")
    saved = TrainOptions(epochs=50, batch_size=8, imgsz=416, save_dir="/elsewhere/exp3", hyp={"lr0": 0.02}).to_dict()
    (run / "opt.yaml").write_text(yaml.safe_dump({**saved, "ndjson_console": False}))
    restored = restore_resume_options(TrainOptions(resume=str(last)), overrides={"epochs": 80, "batch_size": 2})
    assert (restored.weights, restored.cfg, restored.resume) == (str(last), "", True)
    assert restored.save_dir == str(run), "the run continues where its checkpoint is"
    assert (restored.epochs, restored.batch_size, restored.imgsz) == (80, 8, 416), "batch size cannot change"
    assert restored.hyp == {"lr0": 0.02}


def test_bare_resume_searches_the_project_and_fails_clearly(tmp_path):
    with pytest.raises(NothingToResumeError, match="no last\\*.pt found under"):
        restore_resume_options(TrainOptions(resume=True, project=str(tmp_path)))
    run = tmp_path / "exp" / "weights"
    run.mkdir(parents=True)
    (run / "last.pt").write_bytes(b"x")
    (tmp_path / "exp" / "opt.yaml").write_text(yaml.safe_dump(TrainOptions(epochs=7).to_dict()))
    assert restore_resume_options(TrainOptions(resume=True, project=str(tmp_path))).epochs == 7


def test_explicit_overrides_only_reports_changed_overridable_options():
    assert explicit_overrides(TrainOptions()) == {}
    assert explicit_overrides(TrainOptions(epochs=5, device="cpu", imgsz=64)) == {"epochs": 5, "device": "cpu"}
    assert explicit_overrides(TrainOptions(), given={"workers"}) == {"workers": 8}


SHAPES = Path(__file__).resolve().parents[2] / "data" / "shapes.yaml"


def test_default_cfg_on_builtin_data_starts_from_the_shipped_backbone(tmp_path):
    shipped = BUILTIN_BACKBONES[("shapes", DEFAULT_CFG)]
    assert prepare_new_run(TrainOptions(data=str(SHAPES), project=str(tmp_path))).backbone_weights == str(shipped)
    mine = tmp_path / "mine.pt"
    assert prepare_new_run(TrainOptions(data=str(SHAPES), project=str(tmp_path),
                                        backbone_weights=str(mine))).backbone_weights == str(mine)
    for value in ("none", "None"):
        assert prepare_new_run(TrainOptions(data=str(SHAPES), project=str(tmp_path),
                                            backbone_weights=value)).backbone_weights == ""
    assert prepare_new_run(TrainOptions(data=str(SHAPES), project=str(tmp_path),
                                        cfg="yolov5s.yaml")).backbone_weights == ""


def test_shipped_backbone_matches_its_provenance_record():
    from utils.checkpoint import torch_safe_load

    path = BUILTIN_BACKBONES[("shapes", DEFAULT_CFG)]
    record = backbone_provenance(path)
    checkpoint = torch_safe_load(path)
    opt = checkpoint["opt"]
    assert record["command"] == "python classify/train.py --epochs " + str(record["epochs"])
    assert (checkpoint["epoch"] + 1, opt["epochs"], opt["imgsz"], opt["batch_size"], opt["model"]) == (
        record["epochs"], record["epochs"], record["imgsz"], record["batch_size"], record["model"])
    assert checkpoint["best_fitness"] == pytest.approx(record["top1"], abs=1e-4)
    assert checkpoint["git"]["commit"] == record["git_commit"]
    assert backbone_provenance(path.with_name("absent.pt")) == {}
