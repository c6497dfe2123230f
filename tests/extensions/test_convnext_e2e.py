"""ConvNeXt-YOLO end to end: train.py -> best.pt -> val.py, detect.py, torch.hub 'custom' and the safe loader.

One short run of ``convnext_yolov5n.yaml`` (ConvNeXt-Atto, from scratch) on a tiny built-in-style dataset at 64 px
produces the checkpoint every other test here consumes, the way a user would chain the entry scripts.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from utils.checkpoint import torch_safe_load

IMGSZ = 64


@pytest.fixture(scope="module")
def tiny_shapes(tiny_data) -> Path:
    """The shared tiny dataset YAML (8 train / 4 val images of the built-in shapes generator)."""
    return Path(tiny_data)


@pytest.fixture(scope="module")
def convnext_run(tiny_shapes, tmp_path_factory) -> Path:
    """Train convnext_yolov5n.yaml for one epoch; returns the run folder."""
    import train

    opt = train.run(cfg="convnext_yolov5n.yaml", data=str(tiny_shapes), epochs=1, imgsz=IMGSZ, batch_size=4,
                    workers=0, device="cpu", noautoanchor=True, noplots=True,
                    project=str(tmp_path_factory.mktemp("runs")), name="exp")
    return Path(opt.save_dir)


def test_train_writes_safe_loadable_convnext_checkpoints(convnext_run):
    from extensions.timm_backbone import TimmBackbone

    for name in ("best.pt", "last.pt"):
        ckpt = torch_safe_load(convnext_run / "weights" / name)
        model = ckpt["model"]
        assert isinstance(model.model[0], TimmBackbone)
        assert model.stride.tolist() == [8.0, 16.0, 32.0] and len(model.names) == 8
        assert next(model.parameters()).dtype == torch.float16  # upstream's stored dtype
    assert len((convnext_run / "results.csv").read_text().splitlines()) == 2  # header + one epoch


def test_val_on_convnext_checkpoint(convnext_run, tiny_shapes, tmp_path):
    import val

    results, maps, speeds = val.run(data=str(tiny_shapes), weights=str(convnext_run / "weights" / "best.pt"),
                                    imgsz=IMGSZ, batch_size=4, workers=0, device="cpu", project=str(tmp_path),
                                    plots=False)
    assert len(results) == 7 and maps.shape == (8,)
    assert all(0.0 <= float(v) <= 1.0 for v in results[:4])
    assert len(speeds) == 3 and all(s >= 0 for s in speeds)


def test_detect_on_convnext_checkpoint(convnext_run, tiny_shapes, tmp_path):
    import detect

    images = tiny_shapes.parent / "tiny" / "images" / "val"
    save_dir = detect.run(weights=str(convnext_run / "weights" / "best.pt"), source=str(images), imgsz=IMGSZ,
                          conf_thres=0.0, device="cpu", save_txt=True, save_conf=True, project=str(tmp_path),
                          name="exp")
    saved = sorted(p.name for p in Path(save_dir).glob("*.jpg"))
    assert saved == sorted(p.name for p in images.glob("*.jpg"))
    rows = [line.split() for f in (Path(save_dir) / "labels").glob("*.txt") for line in f.read_text().splitlines()]
    assert rows and all(len(r) == 6 and 0 <= int(r[0]) < 8 for r in rows)


def test_hub_custom_loads_convnext_checkpoint(convnext_run, tiny_shapes, hubconf):
    model = hubconf.custom(path=str(convnext_run / "weights" / "best.pt"), _verbose=False)
    model.conf = 0.0
    image = cv2.imread(str(next((tiny_shapes.parent / "tiny" / "images" / "val").glob("*.jpg"))))[..., ::-1]
    result = model(np.ascontiguousarray(image), size=IMGSZ)
    assert type(model).__name__ == "AutoShape" and len(model.names) == 8
    assert result.pred[0].shape[1] == 6 and len(result.pred[0]) > 0
