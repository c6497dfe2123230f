"""Experiment loggers behind upstream's callback hooks: CSV (always), TensorBoard and Comet (when available).

``Loggers(save_dir, opt=opt, hyp=hyp).register(callbacks)`` on the main process is all a training loop needs: every
hook method below is registered under its upstream name on a :class:`utils.callbacks.Callbacks`. Each active logger
is called in turn and isolated from the others: an error in one warns once (per logger and hook) and the others,
and training, go on.

* ``csv``: :class:`utils.loggers.csv_logger.RunLogger` (``results.csv``, ``results.png``,
  ``labels.jpg``, train batches).
* ``tb``: :class:`utils.loggers.tensorboard.TensorBoardLogger` when ``torch.utils.tensorboard`` imports.
* ``comet``: :class:`utils.loggers.comet.CometLogger` when ``comet_ml`` imports and is configured
  (``COMET_API_KEY``, a comet config file, or ``COMET_MODE=offline``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Sequence

from utils.dist import is_main_process
from utils.loggers.csv_logger import RESULTS_KEYS, RunLogger
from utils.logging import LOGGER

__all__ = ["HOOKS", "LOGGERS", "Loggers", "RESULTS_KEYS"]

LOGGERS = ("csv", "tb", "comet")  # upstream's names for the loggers this project has
HOOKS = ("on_pretrain_routine_start", "on_pretrain_routine_end", "on_train_start", "on_train_epoch_start",
         "on_train_batch_end", "on_train_epoch_end", "on_val_start", "on_val_image_end", "on_val_batch_end",
         "on_val_end", "on_fit_epoch_end", "on_model_save", "on_train_end", "on_params_update", "teardown")


class Loggers:
    """The run's active loggers, called from upstream-named hook methods.

    Args:
        save_dir: the run folder. weights: the ``--weights`` path (kept for upstream's signature).
        opt: run options (``TrainOptions`` or namespace: ``imgsz``, ``sync_bn``, ``resume``, ``noplots``,
            ``evolve``, ``epochs``, ``save_period``, ``bbox_interval``, ``name``, ``data``). hyp: hyperparameters.
        logger: unused (upstream passes its console logger). include: names from :data:`LOGGERS` to enable
            (``csv`` is always on for detection training, as upstream).
        plots: False skips all image files (default: ``not opt.noplots and not opt.evolve``).
        tb_graph: log the model graph to TensorBoard once (a traced copy; about a second for small models).
        keys: names of the ``on_fit_epoch_end`` values (default: the 13 ``results.csv`` columns). A loop with other
            keys (the autoencoder pretrainer) writes its own CSV; TensorBoard and Comet use these names.
        job_type: Comet's job type ("Training", "Pretraining").
        run_logger: write ``results.csv`` etc. with :class:`RunLogger` under ``keys`` (None: only for the default
            detection keys). batch_plots: let the run logger draw ``train_batch*.jpg`` (a task that draws its own,
            with masks, turns it off).

    Attributes:
        csv: the :class:`RunLogger` (None with custom ``keys`` or without ``csv``). tb / comet_logger: the optional
        loggers, or None. keys: the metric names.
    """

    def __init__(self, save_dir: Path | str | None = None, weights: Any = None, opt: Any = None, hyp: Any = None,
                 logger: Any = None, include: Sequence[str] = LOGGERS, plots: bool | None = None,
                 tb_graph: bool = True, keys: Sequence[str] = RESULTS_KEYS, job_type: str = "Training",
                 run_logger: bool | None = None, batch_plots: bool = True) -> None:
        self.save_dir = Path(save_dir if save_dir is not None else getattr(opt, "save_dir", "."))
        self.weights, self.opt, self.hyp = weights, opt, dict(hyp or {})
        self.include = tuple(include)
        self.keys = list(keys)
        if plots is None:
            plots = not getattr(opt, "noplots", False) and not getattr(opt, "evolve", None)
        own_csv = "csv" in self.include and (tuple(keys) == RESULTS_KEYS if run_logger is None else run_logger)
        self.csv = RunLogger(self.save_dir, plots=plots, keys=keys, batch_plots=batch_plots) if own_csv else None
        self.tb = self.comet_logger = None
        self._warned: set[tuple[str, str]] = set()
        self.closed = False  # after teardown: a Callbacks object reused by another run never writes here
        if not is_main_process():  # loggers belong to rank 0; a stray construction elsewhere logs nothing extra
            return
        if "tb" in self.include:
            self.tb = _make_tensorboard(self.save_dir, opt, tb_graph, self.keys)
        if "comet" in self.include:
            self.comet_logger = _make_comet(self.save_dir, opt, self.hyp, self.keys, job_type)

    def active(self) -> Iterator[tuple[str, Any]]:
        """Yield ``(name, logger)`` for each logger in use, CSV first (its files feed the others)."""
        for name, logger in (("csv", self.csv), ("tb", self.tb), ("comet", self.comet_logger)):
            if logger is not None:
                yield name, logger

    def register(self, callbacks: Any) -> Loggers:
        """Register every hook method on ``callbacks`` under upstream's hook names; returns self."""
        for hook in HOOKS:
            callbacks.register_action(hook, name=f"loggers.{hook}", callback=getattr(self, hook))
        return self

    def _dispatch(self, hook: str, *args: Any) -> None:
        if self.closed:
            return
        for name, logger in self.active():
            method = getattr(logger, hook, None)
            if method is None:
                continue
            try:
                method(*args)
            except Exception as e:  # one logger's failure never reaches the others or the training loop
                if (name, hook) not in self._warned:
                    self._warned.add((name, hook))
                    LOGGER.warning(f"WARNING ⚠️ {name} logger failed in {hook} ({type(e).__name__}: {e}); training "
                                   f"continues")

    # Upstream's hook methods (same names and arguments).
    def on_pretrain_routine_start(self) -> None:
        """Start of setup."""
        self._dispatch("on_pretrain_routine_start")

    def on_pretrain_routine_end(self, labels: Any, names: Any) -> None:
        """Labels (n, 5) ``[cls, xywhn]`` of the training set and the class names: label plots."""
        self._dispatch("on_pretrain_routine_end", labels, names)

    def on_train_start(self) -> None:
        """Before the first epoch."""
        self._dispatch("on_train_start")

    def on_train_epoch_start(self) -> None:
        """Start of an epoch."""
        self._dispatch("on_train_epoch_start")

    def on_train_batch_end(self, model: Any, ni: int, imgs: Any, targets: Any, paths: Sequence[str],
                           vals: Sequence[float]) -> None:
        """After batch ``ni``: images (B, 3, H, W), targets (n, 6), running mean losses ``vals`` (3,)."""
        self._dispatch("on_train_batch_end", model, ni, imgs, targets, paths, vals)

    def on_train_epoch_end(self, epoch: int) -> None:
        """End of the training part of ``epoch``."""
        self._dispatch("on_train_epoch_end", epoch)

    def on_val_start(self) -> None:
        """Start of a validation."""
        self._dispatch("on_val_start")

    def on_val_image_end(self, pred: Any, predn: Any, path: Any, names: Any, im: Any) -> None:
        """One validated image: detections in letterbox (``pred``) and native (``predn``) pixels."""
        self._dispatch("on_val_image_end", pred, predn, path, names, im)

    def on_val_batch_end(self, batch_i: int, im: Any, targets: Any, paths: Sequence[str], shapes: Any,
                         out: Any) -> None:
        """One validated batch: images, pixel targets (n, 6), paths, shapes and per-image detections."""
        self._dispatch("on_val_batch_end", batch_i, im, targets, paths, shapes, out)

    def on_val_end(self, nt: Any, tp: Any, fp: Any, p: Any, r: Any, f1: Any, ap: Any, ap50: Any, ap_class: Any,
                   confusion_matrix: Any) -> None:
        """End of a plotted validation: per-class statistics and the confusion matrix."""
        self._dispatch("on_val_end", nt, tp, fp, p, r, f1, ap, ap50, ap_class, confusion_matrix)

    def on_fit_epoch_end(self, vals: Sequence[float], epoch: int, best_fitness: Any, fi: Any) -> None:
        """End of ``epoch``: the 13 values of :attr:`keys` (train losses, metrics, val losses, learning rates)."""
        self._dispatch("on_fit_epoch_end", vals, epoch, best_fitness, fi)

    def on_model_save(self, last: Path, epoch: int, final_epoch: bool, best_fitness: Any, fi: Any) -> None:
        """After ``last.pt`` (and maybe ``best.pt``) was written."""
        self._dispatch("on_model_save", last, epoch, final_epoch, best_fitness, fi)

    def on_train_end(self, last: Path, best: Path, epoch: int, results: Any) -> None:
        """After training and the final validation."""
        self._dispatch("on_train_end", last, best, epoch, results)

    def on_params_update(self, params: dict) -> None:
        """Run parameters changed during setup (e.g. the AutoBatch size)."""
        self._dispatch("on_params_update", params)

    def teardown(self) -> None:
        """Always called last (also after an error): close writers and end experiments; later hooks do nothing."""
        self._dispatch("teardown")
        self.closed = True


def _make_tensorboard(save_dir: Path, opt: Any, graph: bool, keys: Sequence[str]) -> Any:
    from utils.loggers.tensorboard import TensorBoardLogger, tensorboard_available

    if not tensorboard_available():
        return None
    try:
        return TensorBoardLogger(save_dir, imgsz=int(getattr(opt, "imgsz", 640) or 640), graph=graph,
                                 sync_bn=bool(getattr(opt, "sync_bn", False)), keys=keys)
    except Exception as e:
        LOGGER.warning(f"WARNING ⚠️ TensorBoard logging is off: {type(e).__name__}: {e}")
        return None


def _make_comet(save_dir: Path, opt: Any, hyp: dict, keys: Sequence[str], job_type: str) -> Any:
    """Create the Comet logger if configured; any failure is one warning and no Comet (training is unaffected)."""
    from utils.loggers.comet import PREFIX, CometLogger, comet_configured, read_experiment_key

    if opt is None or not comet_configured():
        return None
    run_id = read_experiment_key(save_dir) if getattr(opt, "resume", False) else None
    try:
        logger = CometLogger(opt, hyp, run_id=run_id, job_type=job_type, keys=keys)
    except ImportError as e:
        LOGGER.warning(f"{PREFIX}WARNING ⚠️ Comet is configured but comet_ml cannot be imported ({e}); Comet logging "
                       f"is off (pip install comet_ml)")
        return None
    except Exception as e:
        LOGGER.warning(f"{PREFIX}WARNING ⚠️ Comet is installed but could not start ({type(e).__name__}: {e}); not "
                       f"logging this run to Comet, training continues")
        return None
    if run_id:
        LOGGER.info(f"{PREFIX}continuing experiment {run_id}")
    return logger
