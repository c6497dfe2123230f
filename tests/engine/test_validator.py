"""Tests for engine.validator.Validator: exact metrics with a perfect fake model, outputs, callbacks, loss, COCO
scoring, the caller's model left unchanged, loading weights, and ValOptions."""

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

from engine.val_options import ValOptions
from engine.validator import TABLE_HEADER, Validator
from utils.callbacks import HOOK_NAMES, Callbacks

FIXTURES = Path("/work/shared/fixtures/upstream")
NAMES = {0: "red", 1: "green"}


def validate(data, model, loader, save_dir, callbacks=None, compute_loss=None, **settings):
    """Validate a built ``model`` on ``loader`` with ``ValOptions(**settings)``; return upstream's result tuple."""
    return Validator(model, loader, ValOptions(**settings), data=data, save_dir=save_dir, callbacks=callbacks,
                     compute_loss=compute_loss)()


def validate_weights(data, weights, **settings):
    """Load ``weights`` and validate them on ``data`` with ``ValOptions(**settings)``."""
    return Validator.from_weights(weights, ValOptions(**settings), data=data)()


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
    (mp, mr, map50, map50_95, *losses), maps, speeds = validate(dataset, model, loader, tmp_path, half=False,
                                                                plots=False)
    assert mp == pytest.approx(1.0, abs=1e-6) and mr == pytest.approx(1.0, abs=1e-6)
    assert map50 == pytest.approx(0.995, abs=1e-9) and map50_95 == pytest.approx(0.995, abs=1e-9)
    np.testing.assert_allclose(maps, [0.995, 0.995])
    assert losses == [0.0, 0.0, 0.0] and len(speeds) == 3


def test_voc_ap_option_reports_all_point_map50(dataset, loader, tmp_path):
    model = FakeModel(label_predictions(loader))
    (_, _, map50, map50_95, *_), _, _ = validate(dataset, model, loader, tmp_path, half=False, plots=False,
                                                 voc_ap=True)
    assert map50 == 1.0  # VOC all-point AP of a perfect ranking; the 101-point scheme gives 0.995
    assert map50_95 == pytest.approx(0.995)


def test_wrong_classes_and_shifted_boxes_score_zero(dataset, loader, tmp_path):
    wrong = FakeModel(label_predictions(loader, class_shift=1))
    results, maps, _ = validate(dataset, wrong, loader, tmp_path, half=False, plots=False)
    assert results[:4] == (0.0, 0.0, 0.0, 0.0) and (maps == 0).all()
    shifted = FakeModel(label_predictions(loader, jitter=40.0))
    assert validate(dataset, shifted, loader, tmp_path, half=False, plots=False)[0][2] == 0.0


def test_single_cls_merges_classes(dataset, loader, tmp_path):
    wrong = FakeModel(label_predictions(loader, class_shift=1))
    results, maps, _ = validate(dataset, wrong, loader, tmp_path, half=False, plots=False, single_cls=True)
    assert results[2] == pytest.approx(0.995) and maps.shape == (1,)


def test_callbacks_fire_in_order(dataset, loader, tmp_path):
    callbacks, events = Callbacks(), []
    for hook in HOOK_NAMES:
        if hook.startswith("on_val"):
            callbacks.register_action(hook, hook, lambda *a, _h=hook, **k: events.append((_h, len(a))))
    model = FakeModel(label_predictions(loader))
    validate(dataset, model, loader, tmp_path, half=False, plots=True, callbacks=callbacks)
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
    (_, _, map50, _, *_), _, _ = validate(dataset, empty, loader, tmp_path, half=False, plots=False,
                                          save_hybrid=True)
    assert map50 == pytest.approx(0.995)
    assert len(list((tmp_path / "labels").glob("*.txt"))) == 6


def test_coco_json_scored_with_pycocotools(dataset, loader, tmp_path):
    pytest.importorskip("pycocotools")
    anno = _coco_annotations(loader)
    (tmp_path / "anno.json").write_text(json.dumps(anno))
    data = yaml.safe_load(dataset.read_text())
    data["coco_annotations"] = str(tmp_path / "anno.json")
    model = FakeModel(label_predictions(loader))
    (_, _, map50, map50_95, *_), _, _ = validate(data, model, loader, tmp_path, half=False, plots=False,
                                                 save_json=True)
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
        results, maps, speeds = validate_weights(dataset, random_weights, imgsz=64, batch_size=4, workers=0,
                                                 project=tmp_path, name="exp", save_txt=True, save_conf=True,
                                                 save_json=True)
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
        validate_weights(data, random_weights, imgsz=64, workers=0, project=tmp_path, plots=False)


@pytest.fixture(scope="module")
def upstream_model():
    if not (FIXTURES / "yolov5n-trained.pt").is_file():
        pytest.skip("upstream fixtures not available")
    from models.loading import load_model

    return load_model(FIXTURES / "yolov5n-trained.pt", fuse=False)


def test_upstream_checkpoint_with_validation_loss(tmp_path, upstream_model):
    from utils.data.loaders import create_dataloader
    from utils.loss import ComputeLoss

    data = make_dataset(tmp_path, n_images=4, names={i: c for i, c in enumerate("ABCDEFGHIJ")})
    val_loader = create_dataloader(str(tmp_path / "images/val"), 64, 2, 32, pad=0.5, rect=True, workers=0)[0]
    results, maps, _ = validate(data, upstream_model, val_loader, tmp_path, half=False, plots=False,
                                compute_loss=ComputeLoss(upstream_model))
    assert all(np.isfinite(results)) and maps.shape == (10,)
    assert all(x > 0 for x in results[4:])  # box, obj, cls validation losses
    assert next(upstream_model.parameters()).dtype == torch.float32


def test_augment_and_speed_task(dataset, random_weights, tmp_path):
    results, maps, speeds = validate_weights(dataset, random_weights, imgsz=64, batch_size=4, workers=0,
                                             project=tmp_path, plots=False, augment=True, task="speed")
    assert len(results) == 7 and all(np.isfinite(results)) and maps.shape == (2,)


@pytest.mark.gpu
def test_half_precision_on_cuda(dataset, random_weights, tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    results, _, _ = validate_weights(dataset, random_weights, imgsz=64, batch_size=4, workers=0, device="0",
                                     project=tmp_path, plots=False, half=True)
    assert all(np.isfinite(results))


def _model_state(model: nn.Module) -> dict:
    """Everything a caller could observe: per-module modes, tensor values, dtypes, devices, strides, grad flags."""
    tensors = {k: (v.detach().clone(), v.dtype, v.device, v.stride(), v.requires_grad)
               for k, v in model.state_dict(keep_vars=True).items()}
    return {"modes": [m.training for m in model.modules()], "tensors": tensors,
            "stride": model.stride.clone(), "type": type(model)}


def _assert_same_state(before: dict, model: nn.Module) -> None:
    after = _model_state(model)
    assert after["modes"] == before["modes"] and after["type"] is before["type"]
    assert torch.equal(after["stride"], before["stride"]) and after["stride"].dtype == before["stride"].dtype
    assert after["tensors"].keys() == before["tensors"].keys()
    for key, (value, dtype, device, stride, grad) in before["tensors"].items():
        now = after["tensors"][key]
        assert (now[1], now[2], now[3], now[4]) == (dtype, device, stride, grad), key
        assert torch.equal(now[0], value), key


@pytest.fixture()
def training_model():
    from models.yolo import DetectionModel

    torch.manual_seed(0)
    model = DetectionModel("yolov5n.yaml", nc=2)
    model.names = NAMES
    model.hyp = yaml.safe_load((Path(__file__).parents[2] / "data/hyps/hyp.scratch-low.yaml").read_text())
    model.train()
    model.model[0].eval()  # mixed modes must come back exactly as they were
    return model


@pytest.mark.parametrize("fp32", [False, True])  # fp32: the model is used in place; else the CPU layout may differ
def test_callers_model_is_unchanged_with_half_and_loss(dataset, loader, tmp_path, training_model, fp32):
    from utils.loss import ComputeLoss

    before = _model_state(training_model)
    results, maps, _ = validate(dataset, training_model, loader, tmp_path, half=True, plots=False, fp32=fp32,
                                compute_loss=ComputeLoss(training_model))
    assert all(np.isfinite(results)) and all(x > 0 for x in results[4:]) and maps.shape == (2,)
    _assert_same_state(before, training_model)


def test_model_of_another_dtype_is_validated_on_a_copy(dataset, loader, tmp_path, training_model):
    options = dict(half=False, plots=False, fp32=True)
    reference = validate(dataset, training_model, loader, tmp_path, **options)
    training_model.double()
    before = _model_state(training_model)
    results, maps, speeds = validate(dataset, training_model, loader, tmp_path, **options)
    assert results == reference[0] and np.array_equal(maps, reference[1])  # fp64 -> fp32 copy: the same weights
    _assert_same_state(before, training_model)
    assert next(training_model.parameters()).dtype == torch.float64


def test_training_flags_restored_when_validation_raises(dataset, loader, tmp_path, training_model):
    modes = [m.training for m in training_model.modules()]

    def broken_loss(*_):
        assert not training_model.training  # validation runs in eval mode
        raise RuntimeError("loss failed")

    with pytest.raises(RuntimeError, match="loss failed"):
        validate(dataset, training_model, loader, tmp_path, half=False, plots=False, fp32=True,
                 compute_loss=broken_loss)
    assert [m.training for m in training_model.modules()] == modes


def test_from_weights_loads_rounds_and_repeats(dataset, random_weights, tmp_path):
    from models.backends import DetectMultiBackend

    options = ValOptions(imgsz=70, batch_size=4, workers=0, project=tmp_path, name="w", plots=False, save_txt=True)
    validator = Validator.from_weights(random_weights, options, data=dataset)
    assert isinstance(validator.model, DetectMultiBackend) and validator.opt.imgsz == 96  # stride-32 multiple
    assert options.imgsz == 70 and options.half is True  # the given options are not changed
    assert validator.save_dir == tmp_path / "w" and (tmp_path / "w" / "labels").is_dir()
    assert len(validator.dataloader.dataset) == 6 and validator.names == NAMES
    first, second = validator(), validator()
    assert first[0] == second[0] and np.array_equal(first[1], second[1])  # each call starts from zero
    assert Validator.from_weights(random_weights, options, data=dataset).save_dir == tmp_path / "w2"


def test_val_options_reject_unknown_keys_and_are_frozen():
    import dataclasses

    with pytest.raises(ValueError, match=r"unknown validation option\(s\): 'batchsize' \(did you mean "
                                         r"'batch_size'\?\), 'colour'"):
        ValOptions.from_mapping({"batchsize": 4, "colour": "red", "imgsz": 64})
    with pytest.raises(TypeError):
        ValOptions(bogus=1)
    options = ValOptions.from_mapping({"imgsz": 64, "save_hybrid": True})
    assert options.imgsz == 64 and options.save_txt is True  # hybrid labels are written as label files
    assert ValOptions().split == "val" and ValOptions(task="speed").split == "val"
    assert ValOptions(task="test").split == "test"
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.imgsz = 32


@pytest.mark.gpu
def test_half_on_cuda_runs_an_fp16_copy_and_leaves_the_model_fp32(dataset, loader, tmp_path, training_model):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    from utils.loss import ComputeLoss

    model = training_model.cuda()
    before = _model_state(model)
    results, _, _ = validate(dataset, model, loader, tmp_path, half=True, plots=False,
                             compute_loss=ComputeLoss(model))
    assert all(np.isfinite(results))
    _assert_same_state(before, model)
