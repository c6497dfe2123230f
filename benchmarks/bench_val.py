"""Benchmark validation (``Validator.from_weights``) with the upstream-trained yolov5n fixture at conf 0.001.

Setting: 64 synthetic JPEGs (~400x300 px, 4 filled shapes each, 10 classes) in a temp folder, 320 px,
batch 32, rect batches, CPU. Prints the per-image pre-process / inference / NMS times reported by the validator,
the wall time, and the slowest NMS batch next to upstream's NMS time limit (0.5 + 0.05 * batch s), which upstream
would hit and silently truncate results at; ours has no limit.

    python benchmarks/bench_val.py [--images 64] [--imgsz 320] [--batch 32] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

import engine.validator as validator  # noqa: E402
from engine.val_options import ValOptions  # noqa: E402

WEIGHTS = Path("/work/shared/fixtures/upstream/yolov5n-trained.pt")


def make_dataset(root: Path, count: int, seed: int = 0) -> Path:
    """Write ``count`` images with 4 coloured rectangles each and their labels; return the data YAML."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir(parents=True)
    for i in range(count):
        rng = np.random.default_rng([seed, i])
        w, h = int(rng.integers(380, 420)), int(rng.integers(280, 320))
        image = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
        lines = []
        for _ in range(4):
            bw, bh = int(rng.integers(20, 120)), int(rng.integers(20, 120))
            x0, y0, cls = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh)), int(rng.integers(0, 10))
            cv2.rectangle(image, (x0, y0), (x0 + bw, y0 + bh), tuple(int(c) for c in rng.integers(80, 255, 3)), -1)
            lines.append(f"{cls} {(x0 + bw / 2) / w:.6f} {(y0 + bh / 2) / h:.6f} {bw / w:.6f} {bh / h:.6f}")
        cv2.imwrite(str(root / "images" / f"{i}.jpg"), image)
        (root / "labels" / f"{i}.txt").write_text("\n".join(lines) + "\n")
    data = root / "data.yaml"
    data.write_text(yaml.safe_dump({"path": str(root), "train": "images", "val": "images",
                                    "names": list("ABCDEFGHIJ")}))
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    nms_times: list[float] = []
    original_nms = validator.non_max_suppression

    def timed_nms(*a, **k):
        t0 = time.perf_counter()
        out = original_nms(*a, **k)
        nms_times.append(time.perf_counter() - t0)
        return out

    validator.non_max_suppression = timed_nms
    with tempfile.TemporaryDirectory() as tmp:
        data = make_dataset(Path(tmp) / "data", args.images)
        options = ValOptions(batch_size=args.batch, imgsz=args.imgsz, workers=0, plots=False,
                             project=Path(tmp) / "runs", device="cpu")
        validator.Validator.from_weights(WEIGHTS, replace(options, name="warmup"), data=data)()
        nms_times.clear()
        t0 = time.perf_counter()
        results, _, speeds = validator.Validator.from_weights(WEIGHTS, options, data=data)()
        wall = time.perf_counter() - t0
    print(f"\ntorch {torch.__version__}, threads {torch.get_num_threads()}, {args.images} images, {args.imgsz} px, "
          f"batch {args.batch}, weights {WEIGHTS.name}")
    print(f"per image: pre-process {speeds[0]:.2f} ms, inference {speeds[1]:.2f} ms, NMS {speeds[2]:.2f} ms")
    print(f"wall {wall:.2f} s ({wall / args.images * 1e3:.1f} ms/image); mAP50 {results[2]:.3f}")
    print(f"slowest NMS batch {max(nms_times[1:]):.3f} s vs upstream time limit {0.5 + 0.05 * args.batch:.2f} s")


if __name__ == "__main__":
    main()
