"""Training speed: one yolov5n step (forward, loss, backward, SGD step) and a real epoch vs pure model time.

    $ python benchmarks/bench_train.py                      # 320 px, batch 16, built-in shapes data
    $ python benchmarks/bench_train.py --imgsz 640 --steps 5

Targets (upstream on a 2-core CPU): a step <= 0.94 s; an epoch <= 1.3x the pure model time of its batches
(data loading, augmentation and bookkeeping must not dominate). Prints the figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch

from engine.train_options import DEFAULT_DATA, TrainOptions, load_hyp, prepare_new_run
from models.yolo import Model
from utils.loss import ComputeLoss
from utils.optim import smart_optimizer
from utils.precision import select_precision

STEP_TARGET_S, EPOCH_RATIO_TARGET = 0.94, 1.3


def synthetic_batch(batch: int, imgsz: int, nc: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Return images (batch, 3, imgsz, imgsz) in [0, 1] and 4 targets per image (n, 6) ``[i, cls, xywhn]``."""
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(batch, 3, imgsz, imgsz, generator=generator)
    rows = [[i, (i * 4 + k) % nc, 0.2 + 0.2 * k, 0.5, 0.1 + 0.05 * k, 0.2] for i in range(batch) for k in range(4)]
    return images, torch.tensor(rows)


def step_times(imgsz: int, batch: int, steps: int, warmup: int = 2, nc: int = 80, channels_last: bool = True,
               bf16: bool = False) -> list[float]:
    """Seconds per training step of yolov5n: forward, ComputeLoss, backward, SGD step (+ zero_grad).

    ``channels_last`` and ``bf16`` (CPU bf16 autocast) select the variant; :func:`main` times the trainer's own
    choice (``utils.precision.select_precision``) and, with ``--variants``, the others.
    """
    torch.manual_seed(0)
    model = Model(ROOT / "models" / "yolov5n.yaml", nc=nc).train()
    hyp = load_hyp(ROOT / "data" / "hyps" / "hyp.scratch-low.yaml")
    hyp["obj"] *= (imgsz / 640) ** 2
    model.hyp = hyp
    criterion = ComputeLoss(model)
    optimizer = smart_optimizer(model, "SGD", hyp["lr0"], hyp["momentum"], hyp["weight_decay"])
    images, targets = synthetic_batch(batch, imgsz, nc)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            predictions = model(images)
        loss, _ = criterion([p.float() for p in predictions], targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def epoch_time(imgsz: int, batch: int, workers: int, cache: str | None, epochs: int = 2) -> tuple[list[float], int]:
    """Wall seconds of real training epochs (Trainer.train_one_epoch) on the built-in data; returns ([s], nb).

    The first epoch includes the loader workers' start and the first-call costs of the kernels; later epochs reuse
    the workers (the loader is infinite), as every epoch after the first of a real run does.
    """
    from engine.trainer import Trainer

    options = prepare_new_run(TrainOptions(data=DEFAULT_DATA, imgsz=imgsz, batch_size=batch, workers=workers,
                                           epochs=epochs, device="cpu", noplots=True, nosave=True, noval=True,
                                           noautoanchor=True, cache=cache, project="/tmp/bench_train", name="exp"))
    trainer = Trainer(options, torch.device("cpu"))
    trainer.setup()
    trainer._start_schedule()
    trainer.state.mean_loss = torch.zeros(3)
    seconds = []
    for epoch in range(epochs):
        start = time.perf_counter()
        trainer.train_one_epoch(epoch)
        seconds.append(time.perf_counter() - start)
    return seconds, trainer.nb


def main() -> None:
    """Parse the flags, time the training step (and variants), then one real epoch."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cache", default=None, help="ram/disk image cache for the epoch measurement")
    parser.add_argument("--skip-epoch", action="store_true")
    parser.add_argument("--variants", action="store_true", help="also time channels_last and bf16 steps")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, imgsz {args.imgsz}, batch {args.batch}")
    policy = select_precision("cpu", log=False)
    times = step_times(args.imgsz, args.batch, args.steps, channels_last=policy.channels_last, bf16=policy.amp)
    step = statistics.median(times)
    print(f"train step = forward + loss + backward + SGD step, {policy.name} (the trainer's choice on this CPU: "
          f"{policy.reason})")
    print(f"train step: median {step:.3f} s, min {min(times):.3f} s over {len(times)} steps "
          f"(target <= {STEP_TARGET_S} s): {'OK' if step <= STEP_TARGET_S else 'SLOWER'}")
    if args.variants:
        for name, flags in (("fp32 NCHW (upstream layout)", {"channels_last": False}),
                            ("fp32 channels_last", {"channels_last": True}),
                            ("bf16 autocast + channels_last", {"bf16": True})):
            median = statistics.median(step_times(args.imgsz, args.batch, args.steps, **flags))
            print(f"  variant {name}: median {median:.3f} s")
    if args.skip_epoch:
        return
    all_seconds, batches = epoch_time(args.imgsz, args.batch, args.workers, args.cache)
    for epoch, seconds in enumerate(all_seconds):
        ratio = seconds / (batches * step)
        what = "first epoch (workers start)" if epoch == 0 else f"epoch {epoch} (workers kept)"
        print(f"{what}: {seconds:.1f} s for {batches} batches = {seconds / batches:.3f} s/batch; pure model "
              f"{batches * step:.1f} s; ratio {ratio:.2f}x (target <= {EPOCH_RATIO_TARGET}x): "
              f"{'OK' if ratio <= EPOCH_RATIO_TARGET else 'SLOWER'}")


if __name__ == "__main__":
    main()
