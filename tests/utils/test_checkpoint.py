"""utils/checkpoint.py and models/loading.py: safe loading, upstream's format, legacy fixes, strip_optimizer."""

from __future__ import annotations

import json
import os
import pathlib
from copy import deepcopy
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from models.common import Conv
from models.loading import load_model, upgrade_legacy_model
from models.yolo import Detect, DetectionModel, SegmentationModel
from tests.module_support import run_fresh_python
from utils.checkpoint import (
    TRUSTED_PACKAGES,
    UnsafeCheckpointError,
    make_checkpoint,
    model_classes,
    save_checkpoint,
    strip_optimizer,
    torch_safe_load,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
UPSTREAM_CHECKPOINT = REPO_ROOT.parent / "shared" / "fixtures" / "upstream" / "yolov5n-trained.pt"
UPSTREAM_KEYS = {"epoch", "best_fitness", "model", "ema", "updates", "optimizer", "opt", "git", "date"}
TINY = {
    "nc": 2, "depth_multiple": 1.0, "width_multiple": 1.0, "anchors": [[10, 13, 16, 30], [30, 61, 62, 45]],
    "backbone": [[-1, 1, "Conv", [8, 3, 2]], [-1, 1, "C3", [8]], [-1, 1, "Conv", [16, 3, 2]]],
    "head": [[-1, 1, "nn.Upsample", [None, 2, "nearest"]], [[-1, 1], 1, "Concat", [1]], [-1, 1, "Conv", [16, 3, 2]],
             [[1, 5], 1, "Detect", ["nc", "anchors"]]],
}


@pytest.fixture
def tiny_model() -> DetectionModel:
    torch.manual_seed(0)
    model = DetectionModel(deepcopy(TINY))
    model.names = {0: "cat", 1: "dog"}
    return model


def _output(model: nn.Module, size: int = 32) -> torch.Tensor:
    torch.manual_seed(1)
    x = torch.rand(1, 3, size, size)
    with torch.no_grad():
        return model.float().eval()(x)[0]


@pytest.fixture(scope="module")
def upstream_checkpoint() -> Path:
    if not UPSTREAM_CHECKPOINT.is_file():
        pytest.skip(f"upstream fixture {UPSTREAM_CHECKPOINT} not found (../shared beside the repository)")
    return UPSTREAM_CHECKPOINT


def test_upstream_training_checkpoint_loads_safely(upstream_checkpoint):
    ckpt = torch_safe_load(upstream_checkpoint)
    assert set(ckpt) == UPSTREAM_KEYS
    assert isinstance(ckpt["model"], DetectionModel) and next(ckpt["model"].parameters()).dtype == torch.float16
    assert ckpt["epoch"] == -1 and ckpt["optimizer"] is None


def test_our_checkpoint_has_exactly_upstreams_keys_and_precision(tiny_model, tmp_path):
    ckpt = make_checkpoint(tiny_model, ema=deepcopy(tiny_model), epoch=3, best_fitness=np.array([0.25]), updates=7,
                           optimizer={"state": {}, "param_groups": []}, opt={"save_dir": pathlib.PosixPath("runs/x")})
    assert set(ckpt) == UPSTREAM_KEYS
    assert all(p.dtype == torch.float16 for p in ckpt["model"].parameters())
    assert ckpt["model"].model[-1].anchors.dtype == torch.float16
    assert next(tiny_model.parameters()).dtype == torch.float32  # the live model is untouched
    save_checkpoint(ckpt, tmp_path / "last.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left behind
    loaded = torch_safe_load(tmp_path / "last.pt")
    assert set(loaded) == UPSTREAM_KEYS and loaded["epoch"] == 3 and loaded["updates"] == 7
    assert isinstance(loaded["best_fitness"], np.ndarray) and loaded["best_fitness"].tolist() == [0.25]
    assert loaded["opt"]["save_dir"] == pathlib.PosixPath("runs/x")
    assert set(loaded["git"]) == {"remote", "branch", "commit"} and isinstance(loaded["date"], str)


def test_saved_model_loads_in_a_fresh_process(tiny_model, tmp_path):
    path = tmp_path / "best.pt"
    save_checkpoint(make_checkpoint(tiny_model), path)
    expected = _output(load_model(path, fuse=False))
    code = ("import json, sys, torch; from models.loading import load_model; m = load_model(sys.argv[1], fuse=False);"
            "torch.manual_seed(1); x = torch.rand(1, 3, 32, 32); y = m(x)[0];"
            "print(json.dumps({'type': type(m).__module__ + '.' + type(m).__name__, 'names': m.names,"
            " 'sum': y.sum().item(), 'shape': list(y.shape)}))")
    result = run_fresh_python(code, path, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["type"] == "models.yolo.DetectionModel" and report["names"] == {"0": "cat", "1": "dog"}
    assert report["shape"] == list(expected.shape)
    assert report["sum"] == pytest.approx(expected.sum().item(), rel=1e-5)


class _SystemCall:
    """Pickles as ``os.system('touch <marker>')``: a classic malicious checkpoint."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _EvalCall:
    def __reduce__(self):
        return eval, ("1 + 1",)


def test_pickle_with_os_system_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model": _SystemCall(marker), "epoch": 0}, path)
    with pytest.raises(UnsafeCheckpointError, match=r"(posix|os|nt)\.system") as info:
        torch_safe_load(path)
    assert str(path) in str(info.value)
    with pytest.raises(UnsafeCheckpointError):
        load_model(path)
    assert not marker.exists()


def test_other_non_allowed_globals_are_refused(tmp_path):
    path = tmp_path / "eval.pt"
    torch.save({"model": _EvalCall()}, path)
    with pytest.raises(UnsafeCheckpointError, match=r"builtins\.eval"):
        torch_safe_load(path)


class _GetattrCall:
    def __reduce__(self):
        return getattr, (Conv, "default_act")


def test_getattr_only_resolves_model_methods(tmp_path):
    path = tmp_path / "getattr.pt"
    torch.save({"model": _GetattrCall()}, path)
    with pytest.raises(UnsafeCheckpointError, match="default_act"):
        torch_safe_load(path)


def test_segmentation_checkpoint_with_method_reference_loads(tmp_path):
    cfg = deepcopy(TINY)
    cfg["head"][-1] = [[1, 5], 1, "Segment", ["nc", "anchors", 8, 32]]
    model = SegmentationModel(cfg)
    save_checkpoint(make_checkpoint(model), tmp_path / "seg.pt")
    loaded = load_model(tmp_path / "seg.pt", fuse=False)
    assert loaded.model[-1].detect is Detect.forward
    with torch.no_grad():
        pred, proto, _ = loaded(torch.rand(1, 3, 32, 32))
    assert pred.shape == (1, 2 * (16 * 16 + 8 * 8), 5 + 2 + 8) and proto.shape == (1, 8, 32, 32)


def test_missing_truncated_and_foreign_files(tmp_path, tiny_model):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        torch_safe_load(tmp_path / "nope.pt")
    path = tmp_path / "full.pt"
    save_checkpoint(make_checkpoint(tiny_model), path)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(RuntimeError, match="truncated.pt: corrupt or unreadable checkpoint"):
        torch_safe_load(truncated)
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    with pytest.raises(RuntimeError, match="notes.pt"):
        torch_safe_load(text)
    with pytest.raises(ValueError, match="no model object"):
        load_model(_save(tmp_path / "weights_only.pt", {"model": tiny_model.state_dict()}))


def _save(path: Path, obj) -> Path:
    torch.save(obj, path)
    return path


def _legacy_copy(model: DetectionModel) -> DetectionModel:
    """Return a copy shaped like a pre-v6 checkpoint: anchor_grid buffer, list names, no stride, old Upsample."""
    old = deepcopy(model)
    head = old.model[-1]
    del head.anchor_grid
    head.register_buffer("anchor_grid", (head.anchors * head.stride.view(-1, 1, 1)).view(head.nl, 1, -1, 1, 1, 2))
    old.names = ["cat", "dog"]
    del old.stride
    for m in old.modules():
        if isinstance(m, nn.Upsample):
            del m.recompute_scale_factor
    return old


def test_legacy_fixes_applied_by_upgrade(tiny_model):
    old = _legacy_copy(tiny_model)
    assert "anchor_grid" in dict(old.model[-1].named_buffers())
    upgrade_legacy_model(old, inplace=False)
    head = old.model[-1]
    assert isinstance(head.anchor_grid, list) and len(head.anchor_grid) == head.nl
    assert "anchor_grid" not in dict(head.named_buffers())
    assert old.names == {0: "cat", 1: "dog"}
    assert torch.equal(old.stride, torch.tensor([32.0]))
    assert all(m.recompute_scale_factor is None for m in old.modules() if isinstance(m, nn.Upsample))
    assert head.inplace is False and old.inplace is False
    assert all(not m.inplace for m in old.modules() if type(m) is nn.SiLU)
    assert torch.allclose(_output(old), _output(tiny_model), atol=1e-6)


def test_legacy_checkpoint_loads_through_loader(tiny_model, tmp_path):
    path = _save(tmp_path / "v5.pt", {"model": _legacy_copy(tiny_model).half(), "epoch": -1})
    model = load_model(path, fuse=False)
    assert model.names == {0: "cat", 1: "dog"} and isinstance(model.model[-1].anchor_grid, list)
    assert torch.allclose(_output(model), _output(tiny_model.half()), atol=1e-3)


def test_checkpoint_pickled_as_models_yolo_model_loads(tiny_model, tmp_path):
    qualname = DetectionModel.__qualname__
    DetectionModel.__qualname__ = "Model"  # how v6.1 and older releases pickled the model class
    try:
        path = _save(tmp_path / "v61.pt", {"model": deepcopy(tiny_model).half()})
    finally:
        DetectionModel.__qualname__ = qualname
    assert "models.yolo.Model" in torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    assert type(load_model(path)) is DetectionModel


def test_load_model_prefers_ema_and_fuses(tiny_model, tmp_path):
    ema = deepcopy(tiny_model)
    ema.names = {0: "ema-cat", 1: "ema-dog"}
    path = tmp_path / "ckpt.pt"
    save_checkpoint(make_checkpoint(tiny_model, ema=ema), path)
    model = load_model(path, fuse=True)
    assert model.names == {0: "ema-cat", 1: "ema-dog"} and not model.training
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert next(model.parameters()).dtype == torch.float32


def test_strip_optimizer(tiny_model, tmp_path):
    ema = deepcopy(tiny_model)
    ema.names = {0: "from-ema", 1: "x"}
    source = tmp_path / "last.pt"
    save_checkpoint(make_checkpoint(tiny_model, ema=ema, epoch=5, best_fitness=np.array([0.5]), updates=10,
                                    optimizer={"state": {}, "param_groups": []}), source)
    strip_optimizer(source, tmp_path / "final.pt")
    assert torch_safe_load(source)["optimizer"] is not None  # the source is untouched when s is given
    final = torch_safe_load(tmp_path / "final.pt")
    assert set(final) == UPSTREAM_KEYS and final["epoch"] == -1
    assert all(final[k] is None for k in ("optimizer", "best_fitness", "ema", "updates"))
    assert final["model"].names == {0: "from-ema", 1: "x"}
    assert all(p.dtype == torch.float16 and not p.requires_grad for p in final["model"].parameters())
    strip_optimizer(source)
    assert torch_safe_load(source)["optimizer"] is None


def test_checkpoint_module_imports_no_model_code_and_loads_lazily(upstream_checkpoint, tmp_path):
    """utils.checkpoint alone loads an upstream checkpoint: the modules it names register their classes."""
    code = ("import sys; import utils.checkpoint as c, utils.general;"
            "before = sorted(m for m in sys.modules if m.split('.')[0] in ('models', 'extensions', 'engine'));"
            "ckpt = c.torch_safe_load(sys.argv[1]);"
            "names = set(map(c._global_name, c.model_classes()));"
            "print(before, type(ckpt['model']).__module__, 'models.yolo.Detect' in names)")
    result = run_fresh_python(code, upstream_checkpoint, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-3:] == ["[]", "models.yolo", "True"]


def test_strip_optimizer_from_utils_general_in_a_fresh_process(tiny_model, tmp_path):
    source = tmp_path / "last.pt"
    save_checkpoint(make_checkpoint(tiny_model, ema=deepcopy(tiny_model), epoch=2, best_fitness=np.array([0.1]),
                                    optimizer={"state": {}, "param_groups": []}), source)
    result = run_fresh_python("import sys; from utils.general import strip_optimizer; strip_optimizer(sys.argv[1])",
                           source, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    stripped = torch_safe_load(source)
    assert stripped["optimizer"] is None and stripped["epoch"] == -1 and stripped["ema"] is None
    assert isinstance(stripped["model"], DetectionModel)


class Untrusted(nn.Module):
    """A module class outside the trusted packages (this test module)."""


def test_classes_outside_the_trusted_packages_are_refused(tmp_path):
    assert __name__.split(".")[0] not in TRUSTED_PACKAGES
    path = _save(tmp_path / "foreign.pt", {"model": Untrusted()})
    with pytest.raises(UnsafeCheckpointError, match="Untrusted"):
        torch_safe_load(path)


def test_unregistered_names_in_trusted_modules_are_refused(tmp_path):
    """A trusted module is imported, but only the classes it registered are allowed (not its other globals)."""

    class _Reach:
        def __reduce__(self):
            from models import yolo

            return yolo.check_yaml, ("x",)

    path = _save(tmp_path / "reach.pt", {"model": _Reach()})
    with pytest.raises(UnsafeCheckpointError, match="check_yaml"):
        torch_safe_load(path)


def test_model_classes_are_registered_with_their_aliases():
    import models.experimental  # noqa: F401  (importing a model module registers its classes)
    from utils.checkpoint import safe_globals

    names = {c.__module__ + "." + c.__qualname__ for c in model_classes()}
    assert {"models.yolo.DetectionModel", "models.common.Conv", "models.experimental.MixConv2d"} <= names
    aliases = {entry[1] for entry in safe_globals() if isinstance(entry, tuple)}
    assert {"models.yolo.Model", "models.experimental.GhostConv"} <= aliases



def test_classifier_transforms_and_torchvision_modules_load_but_torchvision_functions_do_not(tmp_path):
    import torchvision
    import torchvision.transforms as T

    from utils.data.classify_augment import classify_transforms

    good = tmp_path / "cls.pt"
    torch.save({"model": torchvision.models.resnet18(num_classes=3), "transforms": classify_transforms(32)}, good)
    loaded = torch_safe_load(good)
    assert type(loaded["model"]).__name__ == "ResNet" and type(loaded["transforms"]).__name__ == "Compose"
    lambda_transform = tmp_path / "lambda.pt"
    torch.save({"transforms": T.Compose([T.Lambda(torchvision.ops.box_iou)])}, lambda_transform)
    with pytest.raises(UnsafeCheckpointError, match=r"Lambda|box_iou"):
        torch_safe_load(lambda_transform)
    function = tmp_path / "function.pt"
    torch.save({"f": torchvision.ops.boxes.box_iou}, function)
    with pytest.raises(UnsafeCheckpointError, match=r"torchvision\.ops\.boxes\.box_iou"):
        torch_safe_load(function)
