"""The always-on run logger: ``results.csv``, ``results.png``, ``labels.jpg`` and ``train_batch*.jpg``.

It plugs into training only through :class:`utils.callbacks.Callbacks` hooks (upstream's names and arguments), the
same way optional loggers (TensorBoard, Comet, ...) do, and it is registered on the main process only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from utils.files import atomic_write_bytes
from utils.logging import LOGGER
from utils.plotting.results import format_csv_header, format_csv_row, plot_results, read_csv_table

RESULTS_KEYS = (
    "train/box_loss", "train/obj_loss", "train/cls_loss",  # train loss
    "metrics/precision", "metrics/recall", "metrics/mAP_0.5", "metrics/mAP_0.5:0.95",  # metrics
    "val/box_loss", "val/obj_loss", "val/cls_loss",  # val loss
    "x/lr0", "x/lr1", "x/lr2",  # learning rate of each parameter group
)
TRAIN_BATCH_PLOTS = 3  # train_batch0..2.jpg


class RunLogger:
    """Write a run's CSV and plots into ``save_dir`` from training callbacks.

    Args:
        save_dir: the run folder (``runs/train/exp``). plots: False skips every image (``--noplots``, evolve).
        keys: the ``on_fit_epoch_end`` value names = the CSV columns after ``epoch``. batch_plots: False leaves
            ``train_batch*.jpg`` to the trainer (segmentation draws masks).
    """

    def __init__(self, save_dir: Path, plots: bool = True, keys: Sequence[str] = RESULTS_KEYS,
                 batch_plots: bool = True) -> None:
        self.save_dir = Path(save_dir)
        self.plots = plots
        self.keys = tuple(keys)
        self.batch_plots = batch_plots
        self.csv = self.save_dir / "results.csv"
        self.active = True

    def register(self, callbacks: Any) -> RunLogger:
        """Register this logger's actions on ``callbacks``; returns self.

        The logger serves one run: after ``teardown`` its actions do nothing, so a ``Callbacks`` object reused for
        another run never writes into this run's folder.
        """
        for hook in ("on_pretrain_routine_end", "on_train_batch_end", "on_fit_epoch_end", "on_train_end"):
            action = getattr(self, hook)
            callbacks.register_action(hook, name=f"run_logger.{hook}",
                                      callback=lambda *a, _action=action, **k: self.active and _action(*a, **k))
        callbacks.register_action("teardown", name="run_logger.teardown", callback=self.teardown)
        return self

    def teardown(self) -> None:
        """End of the run: deactivate every action of this logger."""
        self.active = False

    def on_pretrain_routine_end(self, labels: np.ndarray, names: Any) -> None:
        """Plot the label statistics (``labels.jpg``) of the training set: ``labels`` (n, 5) ``[cls, xywhn]``."""
        if self.plots:
            from utils.plotting.annotate import plot_labels

            plot_labels(labels, names, self.save_dir)

    def on_train_batch_end(self, model: Any, ni: int, imgs: Any, targets: Any, paths: Sequence[str],
                           vals: Sequence[float]) -> None:
        """Save the first three training batches as ``train_batch{ni}.jpg`` mosaics with their labels."""
        if self.plots and self.batch_plots and ni < TRAIN_BATCH_PLOTS:
            from utils.plotting.annotate import plot_images

            plot_images(imgs, targets, paths, self.save_dir / f"train_batch{ni}.jpg")

    def on_fit_epoch_end(self, vals: Sequence[float], epoch: int, best_fitness: Any, fi: Any) -> None:
        """Append ``epoch`` and ``vals`` (one value per key, in order) to ``results.csv``, atomically."""
        values = [float(v) for v in vals]
        if len(values) != len(self.keys):
            raise ValueError(f"results.csv expects {len(self.keys)} values, got {len(values)}")
        text = self.csv.read_text() if self.csv.is_file() else format_csv_header(("epoch", *self.keys)) + "\n"
        atomic_write_bytes(self.csv, (text + format_csv_row([epoch, *values]) + "\n").encode())

    def on_train_end(self, last: Path, best: Path, epoch: int, results: Sequence[float]) -> None:
        """Plot ``results.png`` from ``results.csv``."""
        if self.plots and self.csv.is_file():
            plot_results(file=self.csv)

    def truncate_from(self, epoch: int) -> None:
        """Drop ``results.csv`` rows for ``epoch`` and later (a resumed run re-trains them); keeps the header."""
        if not self.csv.is_file():
            return
        header, values = read_csv_table(self.csv)
        keep = values[:, 0] < epoch if values.size else np.zeros(0, dtype=bool)
        if keep.all():
            return
        rows = [format_csv_row(row) for row in values[keep]]
        atomic_write_bytes(self.csv, ("\n".join([format_csv_header(header), *rows]) + "\n").encode())
        LOGGER.info(f"results.csv: dropped {int((~keep).sum())} row(s) from epoch {epoch} on (they are re-trained)")
