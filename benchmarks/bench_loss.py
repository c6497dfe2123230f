"""Benchmark ComputeLoss (target assignment + CIoU/BCE terms) and its backward pass.

Setting: yolov5n head outputs at 320 px, batch 16, 10 classes, ~6 targets per image (96 targets),
hyp.scratch-low gains. Prints ms per call for ``build_targets`` alone, the loss forward, and forward + backward
through the head outputs (not the network), so the loss's share of a training step can be read off.

    python benchmarks/bench_loss.py [--batch 16] [--imgsz 320] [--targets 6] [--runs 50] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from utils.loss import YoloLoss  # noqa: E402

ANCHORS = torch.tensor([[[1.25, 1.625], [2.0, 3.75], [4.125, 2.875]],
                        [[1.875, 3.8125], [3.875, 2.8125], [3.6875, 7.4375]],
                        [[3.625, 2.8125], [4.875, 6.1875], [11.65625, 10.1875]]])
HYP = {"box": 0.05, "obj": 0.25, "cls": 0.0625, "cls_pw": 1.0, "obj_pw": 1.0, "anchor_t": 4.0, "fl_gamma": 0.0}


def make_inputs(batch: int, imgsz: int, per_image: int, nc: int = 10, seed: int = 0):
    """Return random head outputs (3 levels) and (batch * per_image, 6) normalised targets."""
    g = torch.Generator().manual_seed(seed)
    outputs = [torch.randn(batch, 3, imgsz // s, imgsz // s, 5 + nc, generator=g) for s in (8, 16, 32)]
    n = batch * per_image
    image = torch.arange(batch).repeat_interleave(per_image).float()
    cls = torch.randint(0, nc, (n,), generator=g).float()
    xy = torch.rand(n, 2, generator=g) * 0.8 + 0.1
    wh = torch.rand(n, 2, generator=g) * 0.3 + 0.02
    return outputs, torch.cat((image[:, None], cls[:, None], xy, wh), 1)


def timed(fn, runs: int) -> float:
    """Return mean milliseconds of ``fn()`` over ``runs`` calls after two warm-up calls."""
    for _ in range(2):
        fn()
    t0 = time.perf_counter()
    for _ in range(runs):
        fn()
    return (time.perf_counter() - t0) / runs * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--targets", type=int, default=6, help="targets per image")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    outputs, targets = make_inputs(args.batch, args.imgsz, args.targets)
    criterion = YoloLoss(HYP, ANCHORS, nc=10, strides=(8, 16, 32))
    leaves = [o.clone().requires_grad_(True) for o in outputs]

    def forward_backward() -> None:
        loss, _ = criterion(leaves, targets)
        loss.backward()

    positives = sum(len(t) for t in criterion.build_targets(outputs, targets)[0])
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch {args.batch}, {args.imgsz} px, "
          f"{len(targets)} targets -> {positives} positives")
    print(f"build_targets      {timed(lambda: criterion.build_targets(outputs, targets), args.runs):8.2f} ms")
    with torch.no_grad():
        print(f"loss forward       {timed(lambda: criterion(outputs, targets), args.runs):8.2f} ms")
    print(f"forward + backward {timed(forward_backward, args.runs):8.2f} ms")


if __name__ == "__main__":
    main()
