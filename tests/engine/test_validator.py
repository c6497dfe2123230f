"""Tests for engine.validator: exact metrics with a perfect fake model, outputs, callbacks, loss, COCO scoring."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn as nn
import yaml

from utils.callbacks import HOOK_NAMES, Callbacks
from engine.validator import TABLE_HEADER, run

FIXTURES = Path("/work/shared/fixtures/upstream")
NAMES = {0: "red", 1: "green"}


def make_dataset(root: Path, n_images: int = 6, names: dict = NAMES, seed: int = 0) -> Path:
    """Write ``n_images`` small images with filled rectangles and YOLO labels; return the data YAML path."""
    rng = np.random.default_rng(seed)
    for sub in ("images/val", "labels/val"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n_images):
        w, h = (96, 64) if i % 2 == 0 else (64, 96)
        image = np.full((h, w, 3), 40, np.uint8)
        lines = []
        for half in range(2):  # one box in each half of the image: no overlaps, so NMS keeps every box
            bw, bh = (int(v) for v in rng.integers(12, 30, 2))
            x0, y0 = int(rng.integers(half * w // 2, (half + 1) * w // 2 - bw)), int(rng.integers(0, h - bh))
            cls = int(rng.integers(0, 2))
            cv2.rectangle(image, (x0, y0), (x0 + bw, y0 + bh), (0, 200, 0) if cls else (0, 0, 200), -1)
            lines.append(f"{cls} {(x0 + bw / 2) / w:.6f} {(y0 + bh / 2) / h:.6f} {bw / w:.6f} {bh / h:.6f}")
        cv2.imwrite(str(root / "images/val" / f"{i + 1}.jpg"), image)
        (root / "labels/val" / f"{i + 1}.txt").write_text("\n".join(lines) + "\n")
    data = {"path": str(root), "train": "images/val", "val": "images/val", "names": names}
    file = root / "data.yaml"
    file.write_text(yaml.safe_dump(data))
    return file


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def loader(dataset):
    from utils.data.loaders import create_dataloader

    return create_dataloader(str(dataset.parent / "images/val"), 64, 4, 32, pad=0.5, rect=True, workers=0)[0]


class FakeModel(nn.Module):
    """Returns pre-computed (B, N, 5 + nc) predictions, one batch per call, in dataloader order."""

    def __init__(self, batches: list[torch.Tensor], names: dict = NAMES):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))
        self.batches, self.calls, self.names, self.stride = batches, 0, names, torch.tensor([32.0])

    def forward(self, x: torch.Tensor, augment: bool = False):
        out = self.batches[self.calls % len(self.batches)].to(x.dtype)
        self.calls += 1
        return out, None


def label_predictions(loader, nc: int = 2, class_shift: int = 0, jitter: float = 0.0) -> list[torch.Tensor]:
    """Predictions equal to the labels: xywh pixels of the letterboxed batch, obj 1, one-hot class."""
    batches = []
    for images, targets, _, _ in loader:
        b, _, h, w = images.shape
        counts = torch.bincount(targets[:, 0].long(), minlength=b)
        out = torch.zeros(b, int(counts.max()) + 1, 5 + nc)
        for i in range(b):
            rows = targets[targets[:, 0] == i]
            out[i, :len(rows), :4] = rows[:, 2:6] * torch.tensor([w, h, w, h]) + jitter
            out[i, :len(rows), 4] = 1.0
            out[i, torch.arange(len(rows)), 5 + (rows[:, 1].long() + class_shift) % nc] = 1.0
        batches.append(out)
    return batches


def test_perfect_predictions_give_exact_metrics(dataset, loader, tmp_path):
    model = FakeModel(label_predictions(loader))
    (mp, mr, map50, map50_95, *losses), maps, speeds = run(dataset, model=model, dataloader=loader, half=False,
                                                           save_dir=tmp_path, plots=False)
    assert mp == pytest.approx(1.0, abs=1e-6) and mr == pytest.approx(1.0, abs=1e-6)
    assert map50 == pytest.approx(0.995, abs=1e-9) and map50_95 == pytest.approx(0.995, abs=1e-9)
    np.testing.assert_allclose(maps, [0.995, 0.995])
    assert losses == [0.0, 0.0, 0.0] and len(speeds) == 3


def test_voc_ap_option_reports_all_point_map50(dataset, loader, tmp_path):
    model = FakeModel(label_predictions(loader))
    (_, _, map50, map50_95, *_), _, _ = run(dataset, model=model, dataloader=loader, half=False, save_dir=tmp_path,
                                            plots=False, voc_ap=True)
    assert map50 == 1.0  # VOC all-point AP of a perfect ranking; the 101-point scheme gives 0.995
    assert map50_95 == pytest.approx(0.995)


def test_wrong_classes_and_shifted_boxes_score_zero(dataset, loader, tmp_path):
    wrong = FakeModel(label_predictions(loader, class_shift=1))
    results, maps, _ = run(dataset, model=wrong, dataloader=loader, half=False, save_dir=tmp_path, plots=False)
    assert results[:4] == (0.0, 0.0, 0.0, 0.0) and (maps == 0).all()
    shifted = FakeModel(label_predictions(loader, jitter=40.0))
    assert run(dataset, model=shifted, dataloader=loader, half=False, save_dir=tmp_path, plots=False)[0][2] == 0.0


def test_single_cls_merges_classes(dataset, loader, tmp_path):
    wrong = FakeModel(label_predictions(loader, class_shift=1))
    results, maps, _ = run(dataset, model=wrong, dataloader=loader, half=False, save_dir=tmp_path, plots=False,
                           single_cls=True)
    assert results[2] == pytest.approx(0.995) and maps.shape == (1,)


def test_callbacks_fire_in_order(dataset, loader, tmp_path):
    callbacks, events = Callbacks(), []
    for hook in HOOK_NAMES:
        if hook.startswith("on_val"):
            callbacks.register_action(hook, hook, lambda *a, _h=hook, **k: events.append((_h, len(a))))
    model = FakeModel(label_predictions(loader))
    run(dataset, model=model, dataloader=loader, half=False, save_dir=tmp_path, plots=True, callbacks=callbacks)
    hooks = [e[0] for e in events]
    assert hooks[0] == "on_val_start" and hooks[-1] == "on_val_end"
    assert hooks.count("on_val_batch_start") == hooks.count("on_val_batch_end") == len(loader)
    assert hooks.count("on_val_image_end") == 6
    assert dict(events)["on_val_image_end"] == 5 and dict(events)["on_val_end"] == 10
    for name in ("confusion_matrix.png", "PR_curve.png", "F1_curve.png", "P_curve.png", "R_curve.png",
                 "val_batch0_labels.jpg", "val_batch0_pred.jpg", "val_batch1_pred.jpg"):
        assert (tmp_path / name).is_file(), name


def test_save_hybrid_labels_give_high_map(dataset, loader, tmp_path):
    empty = FakeModel([torch.zeros(4, 1, 7), torch.zeros(2, 1, 7)])
    (_, _, map50, _, *_), _, _ = run(dataset, model=empty, dataloader=loader, half=False, save_dir=tmp_path,
                                     plots=False, save_hybrid=True)
    assert map50 == pytest.approx(0.995)
    assert len(list((tmp_path / "labels").glob("*.txt"))) == 6


def test_coco_json_scored_with_pycocotools(dataset, loader, tmp_path):
    pytest.importorskip("pycocotools")
    anno = _coco_annotations(loader)
    (tmp_path / "anno.json").write_text(json.dumps(anno))
    data = yaml.safe_load(dataset.read_text())
    data["coco_annotations"] = str(tmp_path / "anno.json")
    model = FakeModel(label_predictions(loader))
    (_, _, map50, map50_95, *_), _, _ = run(data, model=model, dataloader=loader, half=False, save_dir=tmp_path,
                                            plots=False, save_json=True)
    predictions = json.loads((tmp_path / "_predictions.json").read_text())
    assert len(predictions) == 12 and {p["score"] for p in predictions} == {1.0}
    # pycocotools' values replace ours (0.995 / 0.995): its AP50 of a perfect ranking is 1.0, and its AP50-95 sees
    # the sub-pixel error of the letterbox round trip against ground truth taken straight from the label files
    assert map50 == pytest.approx(1.0) and 0.95 < map50_95 < 0.995


def _coco_annotations(loader) -> dict:
    """Ground truth in COCO format (ids = file stems, category id = class index, bbox in original pixels)."""
    ds = loader.dataset
    images, annotations = [], []
    for file, (w, h), labels in zip(ds.im_files, ds.shapes, ds.labels, strict=True):
        image_id = int(Path(file).stem)
        images.append({"id": image_id, "width": int(w), "height": int(h), "file_name": Path(file).name})
        for cls, x, y, bw, bh in labels.tolist():
            box = [(x - bw / 2) * w, (y - bh / 2) * h, bw * w, bh * h]
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(cls),
                                "bbox": box, "area": box[2] * box[3], "iscrowd": 0})
    return {"images": images, "annotations": annotations,
            "categories": [{"id": i, "name": n} for i, n in NAMES.items()]}


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory) -> Path:
    from models.yolo import DetectionModel
    from utils.checkpoint import make_checkpoint, save_checkpoint

    torch.manual_seed(0)
    model = DetectionModel("yolov5n.yaml", nc=2)
    model.names = NAMES
    file = tmp_path_factory.mktemp("weights") / "random.pt"
    save_checkpoint(make_checkpoint(model), file)
    return file


def test_standalone_run_prints_table_and_writes_outputs(dataset, random_weights, tmp_path, caplog):
    logger = logging.getLogger("yolov5")
    logger.addHandler(caplog.handler)
    try:
        results, maps, speeds = run(dataset, weights=random_weights, imgsz=64, batch_size=4, workers=0,
                                    project=tmp_path, name="exp", save_txt=True, save_conf=True, save_json=True)
    finally:
        logger.removeHandler(caplog.handler)
    save_dir = tmp_path / "exp"
    assert len(results) == 7 and all(np.isfinite(results)) and maps.shape == (2,) and all(s >= 0 for s in speeds)
    text = caplog.text
    assert "                   all          6         12" in text  # seen images and instances
    assert "                   red          6" in text and "                 green          6" in text
    assert "Speed: " in text and "per image at shape (4, 3, 64, 64)" in text
    labels = sorted(save_dir.glob("labels/*.txt"))
    assert labels and all(len(line.split()) == 6 for f in labels for line in f.read_text().splitlines())
    assert (save_dir / "random_predictions.json").is_file()
    assert (save_dir / "confusion_matrix.png").is_file() and (save_dir / "val_batch0_labels.jpg").is_file()
    assert TABLE_HEADER.split() == ["Class", "Images", "Instances", "P", "R", "mAP50", "mAP50-95"]


def test_class_count_mismatch_is_reported(tmp_path, random_weights):
    data = make_dataset(tmp_path, n_images=2, names={0: "a", 1: "b", 2: "c"})
    with pytest.raises(ValueError, match=r"\(2 classes\) trained on different --data .* \(3 classes\)"):
        run(data, weights=random_weights, imgsz=64, workers=0, project=tmp_path, plots=False)


@pytest.fixture(scope="module")
def upstream_model():
    if not (FIXTURES / "yolov5n-trained.pt").is_file():
        pytest.skip("upstream fixtures not available")
    from utils.checkpoint import load_model

    return load_model(FIXTURES / "yolov5n-trained.pt", fuse=False)


def test_upstream_checkpoint_with_validation_loss(tmp_path, upstream_model):
    from utils.data.loaders import create_dataloader
    from utils.loss import ComputeLoss

    data = make_dataset(tmp_path, n_images=4, names={i: c for i, c in enumerate("ABCDEFGHIJ")})
    val_loader = create_dataloader(str(tmp_path / "images/val"), 64, 2, 32, pad=0.5, rect=True, workers=0)[0]
    results, maps, _ = run(data, model=upstream_model, dataloader=val_loader, half=False, save_dir=tmp_path,
                           plots=False, compute_loss=ComputeLoss(upstream_model))
    assert all(np.isfinite(results)) and maps.shape == (10,)
    assert all(x > 0 for x in results[4:])  # box, obj, cls validation losses
    assert next(upstream_model.parameters()).dtype == torch.float32


def test_augment_and_speed_task(dataset, random_weights, tmp_path):
    results, maps, speeds = run(dataset, weights=random_weights, imgsz=64, batch_size=4, workers=0,
                                project=tmp_path, plots=False, augment=True, task="speed")
    assert len(results) == 7 and all(np.isfinite(results)) and maps.shape == (2,)


@pytest.mark.gpu
def test_half_precision_on_cuda(dataset, random_weights, tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    results, _, _ = run(dataset, weights=random_weights, imgsz=64, batch_size=4, workers=0, device="0",
                        project=tmp_path, plots=False, half=True)
    assert all(np.isfinite(results))
