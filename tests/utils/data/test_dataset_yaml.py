"""Tests for utils/data/dataset_yaml.py: schema checks, path resolution, never-run downloads, archives, builtins."""

from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path

import pytest
import yaml

from tests.dataset_support import make_dataset
from utils.data.dataset_yaml import (
    ROOT,
    DatasetNotFoundError,
    DatasetYAMLError,
    check_dataset,
    datasets_dir,
    download_hint,
)


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def tiny(tmp_path):
    make_dataset(tmp_path / "ds", {"a": "0 0.5 0.5 0.1 0.1\n"}, split="train")
    make_dataset(tmp_path / "ds", {"b": "1 0.5 0.5 0.1 0.1\n"}, split="val")
    return tmp_path / "ds"


def test_valid_yaml_resolves_paths_and_names(tiny, tmp_path):
    file = write_yaml(tmp_path / "d.yaml", {"path": str(tiny), "train": "images/train", "val": ["images/val"],
                                            "names": ["cat", "dog"]})
    data = check_dataset(str(file))
    assert data["path"] == tiny and data["train"] == str(tiny / "images" / "train")
    assert data["val"] == [str(tiny / "images" / "val")] and data["names"] == {0: "cat", 1: "dog"} and data["nc"] == 2


def test_relative_path_is_relative_to_repo_root_with_dotdot_retry(tiny):
    relative = os.path.relpath(tiny, ROOT)  # e.g. ../../tmp/.../ds
    data = check_dataset({"path": relative, "train": "../images/train", "val": "images/val", "names": ["a", "b"]})
    assert data["path"] == tiny
    assert data["train"] == str(tiny / "images" / "train")  # '../images/train' is missing -> retried without '../'


@pytest.mark.parametrize("data, message", [
    ({"val": "x", "names": ["a"]}, "'train:' field missing"),
    ({"train": "x", "names": ["a"]}, "'val:' field missing"),
    ({"train": "x", "val": "x"}, "'names:' field missing"),
    ({"train": "x", "val": "x", "names": {"0": "a"}}, "'names:' keys must be integers"),
    ({"train": "x", "val": "x", "names": {0: "a", 2: "b"}}, "'names:' keys must be 0..1"),
    ({"train": "x", "val": "x", "names": ["a", "b"], "nc": 3}, "'nc: 3' does not match the 2 entries of 'names:'"),
])
def test_schema_errors_name_the_yaml_and_field(tmp_path, data, message):
    file = write_yaml(tmp_path / "bad.yaml", data)
    with pytest.raises(DatasetYAMLError, match=re.escape(f"{file}: {message}")):
        check_dataset(str(file))


def test_nc_without_names_generates_names(tiny):
    data = check_dataset({"path": str(tiny), "train": "images/train", "val": "images/val", "nc": 2})
    assert data["names"] == {0: "class0", 1: "class1"}


def test_invalid_yaml_syntax_names_the_file(tmp_path):
    file = tmp_path / "broken.yaml"
    file.write_text("train: [a, b\nval: c\n")
    with pytest.raises(DatasetYAMLError, match="broken.yaml"):
        check_dataset(str(file))


def test_missing_val_never_runs_download(tmp_path, log_text):
    marker = tmp_path / "pwned"
    file = write_yaml(tmp_path / "remote.yaml", {
        "path": str(tmp_path / "nowhere"), "train": "images/train", "val": "images/val", "names": ["a"],
        "download": f"import pathlib\npathlib.Path('{marker}').touch()\n"
                    "url = 'https://example.com/data.zip'  # fetched by the script"})
    with pytest.raises(DatasetNotFoundError) as error:
        check_dataset(str(file))
    assert str(error.value).startswith(f"{file}: 'val:' path(s) not found: {tmp_path / 'nowhere/images/val'}")
    assert not marker.exists()
    assert "Dataset not found ⚠️, missing paths" in log_text.text
    assert "Downloads are never run automatically" in log_text.text and "https://example.com/data.zip" in log_text.text


def test_download_hint_without_urls():
    assert "is a script (not run)" in download_hint("bash scripts/get.sh", Path("/d"))
    assert "https://a/b.zip" in download_hint(["https://a/b.zip"], Path("/d"))


def test_missing_train_only_warns(tiny, log_text):
    data = check_dataset({"path": str(tiny), "train": "images/nope", "val": "images/val", "names": ["a", "b"]})
    assert data["val"] == str(tiny / "images" / "val")
    assert "'train:' path(s) not found" in log_text.text


def test_datasets_dir_read_at_call_time(monkeypatch, tmp_path):
    monkeypatch.setenv("YOLOv5_DATASETS_DIR", str(tmp_path / "a"))
    assert datasets_dir() == tmp_path / "a"
    import utils.data.dataset_yaml as module

    monkeypatch.setenv("YOLOv5_DATASETS_DIR", str(tmp_path / "b"))
    assert module.DATASETS_DIR == tmp_path / "b"
    monkeypatch.delenv("YOLOv5_DATASETS_DIR")
    assert datasets_dir() == ROOT.parent / "datasets"


def test_local_zip_is_unpacked_once(tmp_path, monkeypatch):
    monkeypatch.setenv("YOLOv5_DATASETS_DIR", str(tmp_path / "datasets"))
    source = tmp_path / "src"
    make_dataset(source, {"a": "0 0.5 0.5 0.1 0.1\n"}, split="train")
    write_yaml(source / "data.yaml", {"train": "images/train", "val": "images/train", "names": ["a"]})
    archive = tmp_path / "pack.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        for file in source.rglob("*"):
            bundle.write(file, file.relative_to(source))
    data = check_dataset(str(archive))
    assert data["path"] == tmp_path / "datasets" / "pack" and Path(data["train"]).is_dir()


def test_zip_with_escaping_member_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("YOLOv5_DATASETS_DIR", str(tmp_path / "datasets"))
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("../../escaped.yaml", "train: x\n")
    with pytest.raises(DatasetYAMLError, match="unsafe member path"):
        check_dataset(str(archive))
    assert not (tmp_path / "escaped.yaml").exists() and not (tmp_path / "datasets" / "evil").exists()


def test_builtin_dataset_is_generated_into_datasets_dir(tmp_path, monkeypatch):
    import utils.data.builtin as default_dataset

    monkeypatch.setenv("YOLOv5_DATASETS_DIR", str(tmp_path / "datasets"))
    monkeypatch.setattr(default_dataset, "SPLIT_SIZES", {"train": 3, "val": 2})
    monkeypatch.setitem(default_dataset.BUILTIN_DATASETS, "shapes",
                        lambda root: default_dataset.ensure_shapes_dataset(root, {"train": 3, "val": 2}))
    data = check_dataset("shapes.yaml")  # found under ROOT/data by name
    root = tmp_path / "datasets" / "shapes"
    assert data["path"] == root and data["nc"] == 8 and data["names"][3] == "star"
    assert len(list((root / "images" / "val").glob("*.jpg"))) == 2


def test_coco128_yaml_fields():
    data = yaml.safe_load((ROOT / "data" / "coco128.yaml").read_text())
    assert data["path"] == "../datasets/coco128" and data["train"] == data["val"] == "images/train2017"
    assert len(data["names"]) == 80 and data["names"][0] == "person" and data["names"][79] == "toothbrush"
    assert data["download"].startswith("https://")
