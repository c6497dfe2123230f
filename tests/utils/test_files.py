"""utils/files.py: YAML IO, atomic writes, bare-name config lookup and run-directory incrementing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from utils.files import (
    ROOT,
    atomic_write_bytes,
    check_file,
    check_suffix,
    check_yaml,
    file_size,
    increment_path,
    yaml_load,
    yaml_save,
)


def test_yaml_round_trip_and_paths(tmp_path):
    data = {"nc": 2, "names": {0: "a", 1: "b"}, "save_dir": tmp_path / "runs", "lr": 0.01}
    yaml_save(tmp_path / "opt.yaml", data)
    loaded = yaml_load(tmp_path / "opt.yaml")
    assert loaded == {**data, "save_dir": str(tmp_path / "runs")}
    assert list(loaded) == ["nc", "names", "save_dir", "lr"]  # key order kept
    (tmp_path / "empty.yaml").write_text("")
    assert yaml_load(tmp_path / "empty.yaml") == {}


def test_yaml_load_rejects_non_mapping_and_never_executes_tags(tmp_path):
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="list.yaml: expected a YAML mapping"):
        yaml_load(tmp_path / "list.yaml")
    (tmp_path / "evil.yaml").write_text("x: !!python/object/apply:os.system ['touch pwned']\n")
    with pytest.raises(Exception, match="python/object"):
        yaml_load(tmp_path / "evil.yaml")
    assert not (tmp_path / "pwned").exists()


def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "weights.bin"
    target.write_bytes(b"old")
    atomic_write_bytes(target, b"new contents")
    assert target.read_bytes() == b"new contents"
    assert [p.name for p in tmp_path.iterdir()] == ["weights.bin"]


def test_atomic_write_failure_keeps_original(tmp_path, monkeypatch):
    target = tmp_path / "keep.txt"
    target.write_bytes(b"original")

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(target, b"partial")
    assert target.read_bytes() == b"original" and [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_check_yaml_resolves_bare_model_names_like_upstream(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # bare names are searched under the repository, not the cwd
    assert Path(check_yaml("yolov5s.yaml")) == ROOT / "models" / "yolov5s.yaml"
    assert Path(check_yaml("yolov5s6.yaml")) == ROOT / "models" / "hub" / "yolov5s6.yaml"
    local = tmp_path / "yolov5s.yaml"
    local.write_text("nc: 1\n")
    assert check_yaml("yolov5s.yaml") == "yolov5s.yaml"  # an existing path wins
    assert check_yaml(str(local)) == str(local)


def test_check_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no_such_model.yaml"):
        check_yaml("no_such_model.yaml")
    with pytest.raises(ValueError, match="acceptable suffix"):
        check_yaml("yolov5s.pt")
    with pytest.raises(FileNotFoundError, match="never downloads"):
        check_file("https://example.com/yolov5s.yaml")
    assert check_file("") == ""


def test_increment_path_dirs_and_files(tmp_path):
    run = tmp_path / "exp"
    assert increment_path(run) == run
    run.mkdir()
    assert increment_path(run) == tmp_path / "exp2"
    (tmp_path / "exp2").mkdir()
    assert increment_path(run, mkdir=True) == tmp_path / "exp3" and (tmp_path / "exp3").is_dir()
    assert increment_path(run, exist_ok=True) == run
    assert increment_path(run, sep="_") == tmp_path / "exp_2"
    (tmp_path / "last.pt").write_bytes(b"x")
    assert increment_path(tmp_path / "last.pt") == tmp_path / "last2.pt"


def test_file_size_in_megabytes(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"0" * 1_000_000)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.bin").write_bytes(b"0" * 500_000)
    assert file_size(tmp_path / "a.bin") == pytest.approx(1.0)
    assert file_size(tmp_path) == pytest.approx(1.5)
    assert file_size(tmp_path / "missing") == 0.0


def test_check_suffix_like_upstream():
    check_suffix("best.pt")
    check_suffix(["a.pt", "b.PT", "no_suffix"], (".pt",))
    check_suffix("model.onnx", "")
    with pytest.raises(ValueError, match=r"weights: model.onnx: acceptable suffix is \('.pt',\), not .onnx"):
        check_suffix(["a.pt", "model.onnx"], ".pt", msg="weights: ")
