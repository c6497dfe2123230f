"""Benchmark segmentation against upstream YOLOv5, measured side by side in alternating rounds.

Three measurements (each one's variants alternate round by round, so other load on the machine hits both):

1. **train step**: yolov5n-seg (nc 80, random weights, calibrated BatchNorm), 320 px, batch 16, 4 objects per image
   with overlap index masks at 1/4 resolution: forward, loss, backward, SGD step. Ours runs as the trainer does
   (the precision policy of this CPU: bf16 + channels_last where native bf16 exists, else fp32 + channels_last;
   the loss outside autocast); upstream runs its own model and loss as its train.py does on a CPU (fp32 NCHW).
   Target: ours no slower than upstream. The loss + backward alone is also timed on the same outputs.
2. **mask NMS + post-processing** of a 16-image batch at val settings (640 px: 25,200 candidates per image, nc 80,
   32 mask coefficients, conf 0.001, IoU 0.6, multi-label, max_det 300): our NMS alone; what our validator does
   after the forward pass (NMS, masks of the detections that can match a label, box and mask matching against 20
   labels per image); and NMS + ``process_mask`` of every kept detection on the 160 x 160 prototypes, ours and
   upstream's (whose NMS gives up after 0.5 + 0.05 x 16 s and returns what it has). Target: complete and under
   0.5 s.
3. **loader with masks**: the mosaic training loader with overlap masks (``--mask-ratio 4``), batch 16, 2 workers,
   hyp.scratch-low, on 256 images of the built-in ``shapes-seg`` generator (each loader reads its own copy, as their
   label caches differ). Target: at least 1.3x upstream's images/s.

Upstream is imported from a ``pip install --no-deps --target DIR yolov5==7.0.14`` folder (see
``benchmarks/bench_precision.py``); without ``--upstream`` only our figures are printed.

    python benchmarks/bench_segment.py --upstream /work/upstream [--rounds 5] [--skip train nms loader]
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import cv2
import torch
import torch.nn as nn
from bench_nms import realistic_prediction
from bench_precision import calibrate_batchnorm, load_upstream, measure_round_robin, quiet

from engine.segment_validator import candidate_mask_rows
from engine.train_options import DEFAULT_HYP, load_hyp
from models.yolo import SegmentationModel
from utils.boxes import xywh2xyxy, xyxy2xywh
from utils.data.builtin import generate_shapes_dataset
from utils.mask_ops import process_mask
from utils.metrics import process_batch
from utils.nms import non_max_suppression
from utils.optim import smart_optimizer
from utils.precision import select_precision
from utils.segment.loss import ComputeLoss
from utils.segment.metrics import match_masks

NMS_BUDGET_S = 0.5
LOADER_TARGET = 1.3


def load_upstream_segment(folder: Path) -> types.SimpleNamespace:
    """Upstream's segmentation model, loss, NMS, ``process_mask`` and loader, imported from ``folder``."""
    upstream = load_upstream(folder)
    with quiet():
        from yolov5.models.yolo import SegmentationModel as UpstreamSegmentationModel
        from yolov5.utils.general import non_max_suppression as upstream_nms
        from yolov5.utils.segment.dataloaders import create_dataloader as upstream_loader
        from yolov5.utils.segment.general import process_mask as upstream_process_mask
        from yolov5.utils.segment.loss import ComputeLoss as UpstreamSegmentLoss
    return types.SimpleNamespace(folder=folder, Model=UpstreamSegmentationModel, ComputeLoss=UpstreamSegmentLoss,
                                 nms=upstream_nms, process_mask=upstream_process_mask,
                                 create_dataloader=upstream_loader, base=upstream)


# ------------------------------------------------------------------------------------------------------ train step
def synthetic_seg_batch(batch: int, imgsz: int, ratio: int = 4) -> tuple[torch.Tensor, ...]:
    """Images (b, 3, s, s), 4 targets per image ``[image, cls, x, y, w, h]`` and their overlap index masks."""
    images = torch.rand(batch, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(0))
    rows = [[i, (4 * i + k) % 80, 0.2 + 0.2 * k, 0.5, 0.1 + 0.05 * k, 0.2] for i in range(batch) for k in range(4)]
    targets = torch.tensor(rows)
    side = imgsz // ratio
    masks = torch.zeros(batch, side, side)
    for k, (i, _, x, y, w, h) in enumerate(rows):
        x1, x2, y1, y2 = (int(v * side) for v in (x - w / 2, x + w / 2, y - h / 2, y + h / 2))
        masks[int(i), y1:y2, x1:x2] = k % 4 + 1
    return images, targets, masks


def seg_train_step(model: nn.Module, criterion: Callable, images: torch.Tensor, targets: torch.Tensor,
                   masks: torch.Tensor, policy=None) -> Callable[[], None]:
    """One forward (under ``policy``'s autocast, if any) + loss + backward + SGD step + zero_grad."""
    hyp = model.hyp
    with quiet():
        optimizer = smart_optimizer(model, "SGD", hyp["lr0"], hyp["momentum"], hyp["weight_decay"])
    x = policy.prepare_input(images) if policy is not None else images

    def step() -> None:
        if policy is not None:
            with policy.autocast():
                predictions = model(x)
        else:
            predictions = model(x)
        loss, _ = criterion(predictions, targets, masks)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    return step


def _hyp(imgsz: int) -> dict:
    hyp = load_hyp(DEFAULT_HYP)
    hyp["obj"] *= (imgsz / 640) ** 2
    return hyp


def train_figures(args: argparse.Namespace, upstream: types.SimpleNamespace | None) -> dict[str, tuple]:
    """Round-robin timing of one training step, ours and upstream's."""
    images, targets, masks = synthetic_seg_batch(args.batch, args.imgsz)
    steps = {}
    torch.manual_seed(0)
    with quiet():
        ours = calibrate_batchnorm(SegmentationModel(ROOT / "models/segment/yolov5n-seg.yaml", nc=80), args.imgsz)
        policy = select_precision(torch.device("cpu"), log=False)
        policy.prepare_model(ours)
    ours.hyp = _hyp(args.imgsz)
    steps[f"ours ({policy.name})"] = seg_train_step(ours, ComputeLoss(ours, overlap=True), images, targets, masks,
                                                    policy)
    if upstream is not None:
        torch.manual_seed(0)
        with quiet():
            theirs = calibrate_batchnorm(upstream.Model(upstream.folder / "yolov5/models/segment/yolov5n-seg.yaml",
                                                        nc=80), args.imgsz)
        theirs.hyp = _hyp(args.imgsz)
        steps["upstream (fp32 NCHW)"] = seg_train_step(theirs, upstream.ComputeLoss(theirs, overlap=True), images,
                                                       targets, masks)
    return measure_round_robin(steps, warmup=1, runs=args.rounds)


def loss_figures(args: argparse.Namespace, upstream: types.SimpleNamespace) -> tuple[dict[str, tuple], bool]:
    """Round-robin timing of the segmentation loss + backward on the same raw outputs, ours and upstream's; also
    whether the two give the same loss items."""
    images, targets, masks = synthetic_seg_batch(args.batch, args.imgsz)
    torch.manual_seed(0)
    with quiet():
        model = SegmentationModel(ROOT / "models/segment/yolov5n-seg.yaml", nc=80)
    model.hyp = _hyp(args.imgsz)
    with torch.no_grad():
        levels, protos = model.train()(images)
    preds = ([p.requires_grad_() for p in levels], protos.requires_grad_())
    criteria = {"ours": ComputeLoss(model, overlap=True), "upstream": upstream.ComputeLoss(model, overlap=True)}

    def step(criterion: Callable) -> torch.Tensor:
        loss, items = criterion(preds, targets, masks)
        loss.backward()
        return items

    same = torch.allclose(step(criteria["ours"]), step(criteria["upstream"]), atol=1e-5)
    return measure_round_robin({k: (lambda c=c: step(c)) for k, c in criteria.items()}, 1, args.rounds), same


# -------------------------------------------------------------------------------------------- NMS + mask processing
def seg_prediction(batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(batch, 25200, 117) head output with 32 random mask coefficients, and (batch, 32, 160, 160) prototypes."""
    g = torch.Generator().manual_seed(seed)
    boxes = realistic_prediction(batch, seed=seed)
    coefficients = torch.randn(batch, boxes.shape[1], 32, generator=g)
    return torch.cat((boxes, coefficients), 2), torch.randn(batch, 32, 160, 160, generator=g)


def postprocess(nms: Callable, process: Callable, prediction: torch.Tensor, protos: torch.Tensor) -> int:
    """NMS with mask coefficients, then ``process_mask`` of every kept detection; returns the detections kept."""
    kept = 0
    for i, det in enumerate(nms(prediction.clone(), 0.001, 0.6, multi_label=True, max_det=300, nm=32)):
        process(protos[i], det[:, 6:], det[:, :4], (640, 640))
        kept += len(det)
    return kept


def val_labels(prediction: torch.Tensor, objects: int = 20) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Per image ``objects`` label rows ``[cls, x, y, w, h]`` (input px, taken from confident NMS boxes) and their
    overlap index masks (B, 160, 160)."""
    labels, masks = [], torch.zeros(prediction.shape[0], 160, 160)
    for i, det in enumerate(non_max_suppression(prediction, 0.25, 0.6, max_det=objects)):
        labels.append(torch.cat((det[:, 5:6], xyxy2xywh(det[:, :4])), 1))
        for k, (x1, y1, x2, y2) in enumerate((det[:, :4] / 4).round().long().tolist()):
            masks[i, y1:y2, x1:x2] = k + 1
    return labels, masks


def validator_postprocess(prediction: torch.Tensor, protos: torch.Tensor, labels: list[torch.Tensor],
                          masks: torch.Tensor) -> int:
    """What ``SegmentValidator`` does per batch after the forward pass: NMS, masks of the candidate detections,
    box and mask matching; returns the detections kept."""
    iouv = torch.linspace(0.5, 0.95, 10)
    kept = 0
    for i, det in enumerate(non_max_suppression(prediction, 0.001, 0.6, multi_label=True, max_det=300, nm=32)):
        rows = candidate_mask_rows(det, labels[i])
        pred_masks = process_mask(protos[i], det[rows, 6:], det[rows, :4], (640, 640))
        label_xyxy = torch.cat((labels[i][:, :1], xywh2xyxy(labels[i][:, 1:])), 1)
        process_batch(det[:, :6], label_xyxy, iouv)
        match_masks(det[rows], label_xyxy, iouv, pred_masks, masks[[i]], overlap=True)
        kept += len(det)
    return kept


def nms_figures(args: argparse.Namespace,
                upstream: types.SimpleNamespace | None) -> tuple[dict[str, tuple], dict[str, int]]:
    """Round-robin timing of the 16-image post-processing variants; also the detections each returns."""
    prediction, protos = seg_prediction(args.batch)
    labels, masks = val_labels(prediction)
    steps: dict[str, Callable] = {
        "ours: NMS (32 coefficients)": lambda: sum(len(d) for d in non_max_suppression(
            prediction, 0.001, 0.6, multi_label=True, max_det=300, nm=32)),
        "ours: validator post-processing": lambda: validator_postprocess(prediction, protos, labels, masks),
        "ours: NMS + every mask": lambda: postprocess(non_max_suppression, process_mask, prediction, protos),
    }
    if upstream is not None:
        steps["upstream: NMS + every mask"] = lambda: postprocess(upstream.nms, upstream.process_mask, prediction,
                                                                  protos)
    with quiet():
        kept = {label: step() for label, step in steps.items()}
    return measure_round_robin(steps, warmup=0, runs=args.rounds), kept


# ---------------------------------------------------------------------------------------------------------- loader
def _forever(loader):
    while True:
        yield from loader


def loader_figures(args: argparse.Namespace, upstream: types.SimpleNamespace | None) -> dict[str, float]:
    """Images/s of the mosaic loader with masks, ours and upstream's, in alternating rounds of batches."""
    from utils.data.segment_dataset import create_dataloader

    hyp = load_hyp(DEFAULT_HYP)
    cv2.setNumThreads(0)
    with tempfile.TemporaryDirectory() as folder:
        ours_root = generate_shapes_dataset(Path(folder) / "ours", {"train": 256}, "shapes-seg")
        kwargs = dict(hyp=hyp, augment=True, workers=args.workers, shuffle=True, mask_downsample_ratio=4,
                      overlap_mask=True)
        with quiet():
            loaders = {"ours": create_dataloader(str(ours_root / "images/train"), args.loader_imgsz, 16, 32,
                                                 **kwargs)[0]}
            if upstream is not None:
                theirs_root = Path(folder) / "upstream"
                shutil.copytree(ours_root, theirs_root, ignore=shutil.ignore_patterns("*.cache"))
                loaders["upstream"] = upstream.create_dataloader(str(theirs_root / "images/train"),
                                                                 args.loader_imgsz, 16, 32, **kwargs)[0]
        iterators = {k: iter(_forever(v)) for k, v in loaders.items()}
        for iterator in iterators.values():
            for _ in range(3):  # workers started, first batches out
                next(iterator)
        times: dict[str, list[float]] = {k: [] for k in loaders}
        for _ in range(args.rounds):
            for label, iterator in iterators.items():
                start = time.perf_counter()
                for _ in range(args.loader_batches):
                    next(iterator)
                times[label].append(time.perf_counter() - start)
        iterators.clear()  # stop the workers before their image folders are deleted
        loaders.clear()
        gc.collect()
    return {k: 16 * args.loader_batches / statistics.median(v) for k, v in times.items()}


# ----------------------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstream", type=Path, default=None,
                        help="folder of 'pip install --no-deps --target DIR yolov5==7.0.14': time upstream too")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per measurement")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--imgsz", type=int, default=320, help="training-step image size")
    parser.add_argument("--loader-imgsz", type=int, default=640, help="loader image size")
    parser.add_argument("--loader-batches", type=int, default=8, help="batches per loader round")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (upstream's figures: 2)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["train", "nms", "loader"])
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    upstream = load_upstream_segment(args.upstream.resolve()) if args.upstream else None
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"segmentation benchmark: {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, load average "
          f"{load:.1f}, {args.rounds} alternating rounds", flush=True)
    if "train" not in args.skip:
        figures = train_figures(args, upstream)
        print(f"\ntrain step yolov5n-seg@{args.imgsz} batch {args.batch} (median / min s):")
        for label, (median, fastest, _) in figures.items():
            print(f"  {label:32s} {median:8.3f} {fastest:8.3f}")
        if upstream is not None:
            ours, theirs = (figures[k][0] for k in figures)
            print(f"  ours / upstream: {ours / theirs:.2f}x (target <= 1.00x)")
    if "train" not in args.skip and upstream is not None:
        figures, same = loss_figures(args, upstream)
        print(f"\nsegmentation loss + backward on the same outputs (median / min s; same loss items: {same}):")
        for label, (median, fastest, _) in figures.items():
            print(f"  {label:32s} {median:8.3f} {fastest:8.3f}")
    if "nms" not in args.skip:
        figures, kept = nms_figures(args, upstream)
        print(f"\npost-processing of {args.batch} images x 25,200 candidates at conf 0.001 (val settings; median / "
              f"min s, detections returned; complete = {args.batch} x 300):")
        for label, (median, fastest, _) in figures.items():
            print(f"  {label:36s} {median:8.3f} {fastest:8.3f} {kept[label]:8d}")
        median = figures["ours: validator post-processing"][0]
        complete = kept["ours: validator post-processing"] == args.batch * 300
        print(f"  ours complete and under {NMS_BUDGET_S} s: {complete and median < NMS_BUDGET_S} "
              f"({median:.3f} s)")
    if "loader" not in args.skip:
        rates = loader_figures(args, upstream)
        print(f"\nloader with overlap masks, {args.loader_imgsz} px, batch 16, {args.workers} workers (images/s, "
              f"median of {args.rounds} rounds of {args.loader_batches} batches):")
        for label, rate in rates.items():
            print(f"  {label:32s} {rate:8.1f}")
        if "upstream" in rates:
            print(f"  ours / upstream: {rates['ours'] / rates['upstream']:.2f}x (target >= {LOADER_TARGET}x)")


if __name__ == "__main__":
    main()
