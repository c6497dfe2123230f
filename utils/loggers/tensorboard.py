"""TensorBoard logging: the ``results.csv`` scalars per epoch, the run's images and (optionally) the model graph.

Active only when ``torch.utils.tensorboard`` imports (the ``tensorboard`` package is installed). Event files go into
the run folder (``events.out.tfevents.*``); view them with ``tensorboard --logdir runs/train``.
"""

from __future__ import annotations

import warnings
from copy import deepcopy
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from utils.logging import LOGGER, colorstr

PREFIX = colorstr("TensorBoard: ")
END_IMAGES = ("results.png", "confusion_matrix.png", "F1_curve.png", "PR_curve.png", "P_curve.png", "R_curve.png")


def tensorboard_available() -> bool:
    """True when ``torch.utils.tensorboard.SummaryWriter`` can be imported."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except Exception:  # ImportError, or a broken tensorboard/protobuf install
        return False
    return True


def read_rgb(file: Path) -> np.ndarray | None:
    """Return an image file as an RGB uint8 (H, W, 3) array, or None if it is missing/unreadable."""
    import cv2

    image = cv2.imread(str(file)) if Path(file).is_file() else None
    return None if image is None else np.ascontiguousarray(image[..., ::-1])


class TensorBoardLogger:
    """Write TensorBoard events into ``save_dir`` from upstream's callback hooks (main process only).

    Args:
        save_dir: the run folder. imgsz: training image size (pixels) for the graph trace.
        graph: trace and log the model graph once (skipped with ``sync_bn``, as upstream).
        keys: scalar names of the ``on_fit_epoch_end`` values (default: the ``results.csv`` columns).
    """

    def __init__(self, save_dir: Path, imgsz: int = 640, graph: bool = True, sync_bn: bool = False,
                 keys: Sequence[str] | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        from utils.loggers.csv_logger import RESULTS_KEYS

        self.save_dir = Path(save_dir)
        self.keys = tuple(keys or RESULTS_KEYS)
        self.imgsz = int(imgsz)
        self.graph = graph and not sync_bn
        self.writer = SummaryWriter(str(self.save_dir))
        LOGGER.info(f"{PREFIX}Start with 'tensorboard --logdir {self.save_dir.parent}', view at http://localhost:6006/")

    def add_image_file(self, file: Path, step: int) -> None:
        """Log an image file (if it exists) under its stem as tag."""
        image = read_rgb(file)
        if image is not None:
            self.writer.add_image(Path(file).stem, image, step, dataformats="HWC")

    def on_pretrain_routine_end(self, labels: Any, names: Any) -> None:
        """Log ``labels.jpg`` and ``labels_correlogram.jpg`` (plotted just before by the CSV/plots logger)."""
        for name in ("labels.jpg", "labels_correlogram.jpg"):
            self.add_image_file(self.save_dir / name, 0)

    def on_train_batch_end(self, model: Any, ni: int, imgs: Any, targets: Any, paths: Sequence[str],
                           vals: Sequence[float]) -> None:
        """First batch: the model graph; first three batches: ``train_batch{ni}.jpg``."""
        if ni == 0 and self.graph:
            self.graph = False
            log_graph(self.writer, model, self.imgsz)
        if ni < 3:
            self.add_image_file(self.save_dir / f"train_batch{ni}.jpg", ni)

    def on_fit_epoch_end(self, vals: Sequence[float], epoch: int, best_fitness: Any, fi: Any) -> None:
        """Log the epoch's values as scalars named like the ``results.csv`` columns, at step ``epoch``."""
        for key, value in zip(self.keys, vals, strict=True):
            self.writer.add_scalar(key, float(value), int(epoch))
        self.writer.flush()

    def on_train_end(self, last: Path, best: Path, epoch: int, results: Any) -> None:
        """Log the final plots (results, confusion matrix, curves) and close the writer."""
        for name in END_IMAGES:
            self.add_image_file(self.save_dir / name, int(epoch))
        self.writer.close()

    def teardown(self) -> None:
        """Close the writer (also after an error); closing twice is harmless."""
        self.writer.close()


def log_graph(writer: Any, model: torch.nn.Module, imgsz: int) -> None:
    """Trace a copy of ``model`` (eval mode, so batch-norm statistics of the real model are untouched) on a zero
    image (1, 3, imgsz, imgsz) and log its graph; a failing trace only warns."""
    from utils.torch_utils import de_parallel

    try:
        module = de_parallel(model)
        parameter = next(module.parameters())
        copy = deepcopy(module).float().eval()
        image = torch.zeros((1, 3, imgsz, imgsz), device=parameter.device)
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer warnings about data-dependent shapes
            writer.add_graph(torch.jit.trace(copy, image, strict=False, check_trace=False), [])
    except Exception as e:
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        LOGGER.warning(f"{PREFIX}WARNING ⚠️ model graph visualization failed ({type(e).__name__}: {reason})")
