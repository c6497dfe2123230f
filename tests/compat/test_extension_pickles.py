"""Class paths of ``extensions`` modules that our checkpoints pickle: they must stay importable under these names.

A model built from an extension YAML (``imports: [extensions.yolov3]`` ...) or the autoencoder pretrainer pickles
these classes by qualified name; renaming or moving one breaks every checkpoint written before.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch

from tests.module_support import run_fresh_python
from utils.checkpoint import model_classes, safe_globals

REPO_ROOT = Path(__file__).resolve().parents[2]
PICKLED_EXTENSION_CLASSES = {
    "extensions.darknet": ["DarknetConv", "DarknetResidual"],
    "extensions.yolov1": ["YOLOv1Head"],
    "extensions.yolov3": ["YOLOv3Head"],
    "extensions.timm_backbone": ["TimmBackbone", "Index"],
    "extensions.autoencoder.model": ["Autoencoder", "Encoder", "Decoder", "DecoderLevel", "UpConv"],
}


@pytest.mark.parametrize("module_name, class_name",
                         [(m, c) for m, classes in PICKLED_EXTENSION_CLASSES.items() for c in classes])
def test_extension_class_lives_at_its_pickled_path_and_is_allowed(module_name, class_name):
    cls = getattr(importlib.import_module(module_name), class_name)
    assert isinstance(cls, type) and (cls.__module__, cls.__qualname__) == (module_name, class_name)
    assert cls in safe_globals()


def test_registered_yaml_modules_may_be_referenced_with_their_methods():
    from extensions.darknet import DarknetConv
    from extensions.yolov3 import YOLOv3Head

    assert {DarknetConv, YOLOv3Head} <= set(model_classes())


def test_extension_checkpoint_loads_in_a_process_that_imported_no_extension(tmp_path):
    from extensions.darknet import DarknetConv, DarknetResidual

    torch.manual_seed(0)
    block = torch.nn.Sequential(DarknetConv(3, 8, 3), DarknetResidual(8, 8)).eval()
    path = tmp_path / "darknet.pt"
    torch.save({"model": block}, path)
    with torch.no_grad():
        expected = block(torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))).sum().item()
    code = ("import sys, torch; from utils.checkpoint import torch_safe_load;"
            "m = torch_safe_load(sys.argv[1])['model'];"
            "x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1));"
            "print(type(m[0]).__module__, m(x).sum().item())")
    result = run_fresh_python(code, path, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    module, total = result.stdout.split()[-2:]
    assert module == "extensions.darknet" and float(total) == pytest.approx(expected, rel=1e-6)
