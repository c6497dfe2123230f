"""Comet experiment tracking through the real ``comet_ml`` SDK: optional, rank-0 only, and never fatal.

Comet is used when ``comet_ml`` imports and is configured: ``COMET_API_KEY`` (or a ``.comet.config`` file) for online
logging, or ``COMET_MODE=offline``, which writes ``<COMET_OFFLINE_DIRECTORY>/<experiment key>.zip`` for a later
``comet upload <zip>``. Online mode without credentials falls back to offline with one warning. Any Comet failure
(import, experiment creation, a logging call) logs one warning and turns Comet off; training goes on unchanged.

Environment variables (upstream YOLOv5's names and defaults):

=================================== ========== ===================================================================
variable                            default    effect
=================================== ========== ===================================================================
``COMET_MODE``                      online     ``offline``: OfflineExperiment / ExistingOfflineExperiment
``COMET_PROJECT_NAME``              yolov5     Comet project (else the comet config's ``comet.project_name``)
``COMET_OFFLINE_DIRECTORY``         (SDK)      where offline archives go (the SDK default is ``.cometml-runs``)
``COMET_MODEL_NAME``                yolov5     registered model name of the logged checkpoints
``COMET_LOG_BATCH_METRICS``         false      per-batch train losses (``COMET_UPLOAD_BATCH_METRICS`` is an alias)
``COMET_BATCH_LOGGING_INTERVAL``    1          log batch metrics every N batches
``COMET_LOG_CONFUSION_MATRIX``      true       ``confusion-matrix-epoch-{e}.json`` at each plotted validation
``COMET_LOG_PREDICTIONS``           true       val images with ground-truth and predicted boxes
``COMET_MAX_IMAGE_UPLOADS``         100        cap on logged prediction images
``COMET_LOG_PER_CLASS_METRICS``     false      per-class P, R, F1, mAP, TP, FP, support (prefixed by class name)
``COMET_DEFAULT_CHECKPOINT_FILENAME`` last.pt  file name of the checkpoint logged as the model's resume point
``CONF_THRES`` / ``IOU_THRES``      0.001/0.6  thresholds reported with the prediction images (conf filters them)
=================================== ========== ===================================================================

``--resume`` of a run that logged to Comet continues the same experiment: its key is kept in
``<save_dir>/comet_experiment.json`` and reopened with ExistingExperiment / ExistingOfflineExperiment.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from utils.files import atomic_write_bytes
from utils.loggers.comet_media import log_confusion_matrix, log_per_class_metrics, prediction_layers
from utils.logging import LOGGER, colorstr

PREFIX = colorstr("Comet: ")
KEY_FILE = "comet_experiment.json"  # run-folder file holding the experiment key for --resume
CONFIG_FILES = (Path.home() / ".comet.config", Path(".comet.config"))
TRUE = ("1", "true", "yes", "on")


def _env_flag(environ: Mapping[str, str], name: str, default: bool) -> bool:
    value = environ.get(name)
    return default if value is None or not value.strip() else value.strip().lower() in TRUE


def _env_number(environ: Mapping[str, str], name: str, default: float, kind: type = int) -> Any:
    value = environ.get(name, "").strip()
    if not value:
        return default
    try:
        return kind(value)
    except ValueError:
        LOGGER.warning(f"{PREFIX}WARNING ⚠️ {name}={value!r} is not a valid {kind.__name__}; using {default}")
        return default


@dataclass(frozen=True)
class CometSettings:
    """Comet options read from the environment (see the module docstring for names and defaults)."""

    mode: str = "online"
    project_name: str | None = None
    offline_directory: str | None = None
    model_name: str = "yolov5"
    log_batch_metrics: bool = False
    batch_logging_interval: int = 1
    log_confusion_matrix: bool = True
    log_predictions: bool = True
    max_image_uploads: int = 100
    log_per_class_metrics: bool = False
    default_checkpoint_filename: str = "last.pt"
    conf_thres: float = 0.001
    iou_thres: float = 0.6

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> CometSettings:
        """Read the settings from ``environ`` (default ``os.environ``); bad numbers warn and keep the default."""
        env = os.environ if environ is None else environ
        mode = env.get("COMET_MODE", "online").strip().lower() or "online"
        if mode not in ("online", "offline"):
            LOGGER.warning(f"{PREFIX}WARNING ⚠️ COMET_MODE={mode!r} is not 'online' or 'offline'; using online")
            mode = "online"
        batch_metrics = _env_flag(env, "COMET_LOG_BATCH_METRICS", _env_flag(env, "COMET_UPLOAD_BATCH_METRICS", False))
        return cls(mode=mode, project_name=env.get("COMET_PROJECT_NAME") or None,
                   offline_directory=env.get("COMET_OFFLINE_DIRECTORY") or None,
                   model_name=env.get("COMET_MODEL_NAME") or "yolov5", log_batch_metrics=batch_metrics,
                   batch_logging_interval=max(_env_number(env, "COMET_BATCH_LOGGING_INTERVAL", 1), 1),
                   log_confusion_matrix=_env_flag(env, "COMET_LOG_CONFUSION_MATRIX", True),
                   log_predictions=_env_flag(env, "COMET_LOG_PREDICTIONS", True),
                   max_image_uploads=_env_number(env, "COMET_MAX_IMAGE_UPLOADS", 100),
                   log_per_class_metrics=_env_flag(env, "COMET_LOG_PER_CLASS_METRICS", False),
                   default_checkpoint_filename=env.get("COMET_DEFAULT_CHECKPOINT_FILENAME") or "last.pt",
                   conf_thres=_env_number(env, "CONF_THRES", 0.001, float),
                   iou_thres=_env_number(env, "IOU_THRES", 0.6, float))


def comet_configured(environ: Mapping[str, str] | None = None) -> bool:
    """True when the user asked for Comet: ``COMET_API_KEY``, ``COMET_MODE=offline`` or a comet config file.

    Cheap: ``comet_ml`` is not imported (it takes seconds), so an unconfigured run never pays for it.
    """
    env = os.environ if environ is None else environ
    if env.get("COMET_API_KEY", "").strip() or env.get("COMET_MODE", "").strip().lower() == "offline":
        return True
    config = env.get("COMET_CONFIG", "").strip()
    return any(Path(f).is_file() for f in ((config,) if config else CONFIG_FILES))


def read_experiment_key(save_dir: Path) -> str | None:
    """Return the Comet experiment key stored in ``save_dir`` by an earlier run, or None."""
    file = Path(save_dir) / KEY_FILE
    try:
        return json.loads(file.read_text()).get("experiment_key") or None
    except (OSError, ValueError, AttributeError):
        return None


def _guarded(method: Callable) -> Callable:
    """Run a logging method; the first failure warns once and turns Comet off for the rest of the run."""

    @functools.wraps(method)
    def wrapper(self: CometLogger, *args: Any, **kwargs: Any) -> Any:
        if self.disabled:
            return None
        try:
            return method(self, *args, **kwargs)
        except Exception as e:  # Comet must never change or stop training
            self.disabled = True
            LOGGER.warning(f"{PREFIX}WARNING ⚠️ {method.__name__} failed ({type(e).__name__}: {e}); Comet logging is "
                           f"off for the rest of this run, training continues")
            self._end_quietly()
            return None

    return wrapper


class CometLogger:
    """Log a training run to one Comet experiment; methods are upstream's callback hooks (main process only).

    Args:
        opt: the run options (``TrainOptions`` or a namespace with upstream's keys; ``save_dir`` is used).
        hyp: the hyperparameter dict. run_id: key of an existing experiment to continue (resume), else None.
        job_type: "Training" (logged as an "other"). settings: Comet options (default: from the environment).
        keys: metric names of the ``on_fit_epoch_end`` values (default: the 13 ``results.csv`` columns); batch
            metrics use the first ``len(vals)`` of them.
        experiment_kwargs: extra keyword arguments for the ``comet_ml`` experiment class.

    Raises:
        ImportError: ``comet_ml`` is not installed. Any SDK error while creating the experiment is raised too;
        :class:`utils.loggers.Loggers` turns both into one warning.
    """

    def __init__(self, opt: Any, hyp: Mapping[str, Any], run_id: str | None = None, job_type: str = "Training",
                 settings: CometSettings | None = None, keys: Sequence[str] | None = None,
                 **experiment_kwargs: Any) -> None:
        import comet_ml

        from utils.loggers.csv_logger import RESULTS_KEYS

        self.opt, self.hyp, self.job_type = opt, dict(hyp), job_type
        self.keys = tuple(keys or RESULTS_KEYS)
        self.save_dir = Path(opt.save_dir)
        self.settings = settings or CometSettings.from_env()
        self.disabled, self.ended, self.resumed = False, False, run_id is not None
        self.class_names: dict[int, str] = {}
        self.epoch, self.logged_images, self.image_metadata = 0, 0, {}
        epochs = int(getattr(opt, "epochs", 1) or 1)
        interval = int(getattr(opt, "bbox_interval", -1) or -1)
        self.prediction_interval = interval if interval > 0 else (epochs // 10 if epochs >= 10 else 1)
        kwargs = {"log_code": False, "log_env_gpu": True, "log_env_cpu": True, "parse_args": False,
                  "auto_output_logging": False, "auto_metric_logging": False, "auto_param_logging": False,
                  "project_name": self.settings.project_name or _config_project_name(comet_ml),
                  **experiment_kwargs}
        self.experiment = self._create_experiment(comet_ml, run_id, kwargs)
        self.offline = self.experiment.__class__.__name__.endswith("OfflineExperiment")
        try:
            self._save_key()
            self._log_run_setup()
        except Exception:
            self._end_quietly()
            raise

    def _create_experiment(self, comet_ml: Any, run_id: str | None, kwargs: dict) -> Any:
        """Create (or continue, with ``run_id``) an online or offline experiment; online without a key -> offline."""
        if self.settings.mode == "online":
            try:
                if run_id:
                    return comet_ml.ExistingExperiment(previous_experiment=run_id, **kwargs)
                return comet_ml.Experiment(**kwargs)
            except ValueError as e:
                LOGGER.warning(f"{PREFIX}WARNING ⚠️ Comet credentials have not been set ({e}). Comet will default to "
                               f"offline logging; set COMET_API_KEY to log online, or upload later with `comet "
                               f"upload <zip>`")
        offline = {"offline_directory": self.settings.offline_directory, **kwargs}
        if run_id:
            return comet_ml.ExistingOfflineExperiment(previous_experiment=run_id, **offline)
        return comet_ml.OfflineExperiment(**offline)

    def _save_key(self) -> None:
        record = {"experiment_key": self.experiment.get_key(), "mode": "offline" if self.offline else "online",
                  "project_name": getattr(self.experiment, "project_name", None)}
        atomic_write_bytes(self.save_dir / KEY_FILE, (json.dumps(record, indent=2) + "\n").encode())

    def _log_run_setup(self) -> None:
        """Name, options, hyperparameters, config files and the Comet settings, as upstream logs them."""
        experiment, opt = self.experiment, self.opt
        experiment.set_name(str(getattr(opt, "name", "") or self.save_dir.name))
        experiment.log_other("Created from", "YOLOv5")
        experiment.log_other("job_type", self.job_type)
        if not self.offline:
            workspace, project = getattr(experiment, "workspace", None), getattr(experiment, "project_name", None)
            experiment.log_other("Run Path", f"{workspace}/{project}/{experiment.get_key()}")
        options = _options_dict(opt)
        experiment.log_parameters({k: v for k, v in options.items() if k != "hyp"})
        experiment.log_parameters(self.hyp)
        experiment.log_asset_data(self.hyp, name="hyperparameters.json")
        for file, kind in ((self.save_dir / "opt.yaml", "opt-config-file"), (options.get("data"), "data-config-file")):
            if isinstance(file, (str, Path)) and Path(file).is_file():
                experiment.log_asset(str(file), metadata={"type": kind})
        experiment.log_parameters({"val_iou_threshold": self.settings.iou_thres,
                                   "val_conf_threshold": self.settings.conf_thres})
        experiment.log_others({f"comet_{k}": v for k, v in asdict(self.settings).items()})

    # ----------------------------------------------------------------------------------------------- training hooks
    @_guarded
    def on_pretrain_routine_end(self, labels: Any, names: Any) -> None:
        """Keep the class names; log the label plots (``labels*.jpg``) of a new run."""
        self.class_names = dict(names) if isinstance(names, Mapping) else dict(enumerate(names))
        if not self.resumed:
            for path in sorted(self.save_dir.glob("labels*.jpg")):
                self.experiment.log_asset(str(path), metadata={"type": "label-plot"})

    @_guarded
    def on_train_start(self) -> None:
        """Log the hyperparameters (as upstream does at train start)."""
        self.experiment.log_parameters(self.hyp)

    @_guarded
    def on_train_epoch_end(self, epoch: int) -> None:
        """Remember the epoch (used for prediction image names and the confusion matrix file)."""
        self.epoch = int(epoch)
        self.experiment.set_epoch(self.epoch)

    @_guarded
    def on_train_batch_end(self, model: Any, ni: int, imgs: Any, targets: Any, paths: Sequence[str],
                           vals: Sequence[float]) -> None:
        """With ``COMET_LOG_BATCH_METRICS``, log the running train losses every ``COMET_BATCH_LOGGING_INTERVAL``."""
        self.experiment.set_step(int(ni))
        if self.settings.log_batch_metrics and ni % self.settings.batch_logging_interval == 0:
            values = [float(v) for v in vals]
            self.experiment.log_metrics(dict(zip(self.keys[:len(values)], values, strict=True)), step=int(ni))

    @_guarded
    def on_val_batch_end(self, batch_i: int, im: Any, targets: Any, paths: Sequence[str], shapes: Any,
                         out: Any) -> None:
        """Log val images with ground-truth and predicted boxes every ``bbox_interval`` batches (capped)."""
        settings = self.settings
        if not settings.log_predictions or (batch_i + 1) % self.prediction_interval:
            return
        for si, path in enumerate(paths):
            if self.logged_images >= settings.max_image_uploads:
                return
            shape = shapes[si] if shapes is not None else None
            layers, metadata = prediction_layers(im, targets, out, si, shape, self.class_names, settings.conf_thres)
            name = f"{Path(path).stem}_curr_epoch_{self.epoch}"
            self.experiment.log_image(str(path), name=name, annotations=layers or None)
            self.image_metadata[name] = metadata
            self.logged_images += 1

    @_guarded
    def on_val_end(self, nt: Any, tp: Any, fp: Any, p: Any, r: Any, f1: Any, ap: Any, ap50: Any, ap_class: Any,
                   confusion_matrix: Any) -> None:
        """Per-class metrics (``COMET_LOG_PER_CLASS_METRICS``) and the confusion matrix of a plotted validation."""
        if self.settings.log_per_class_metrics:
            log_per_class_metrics(self.experiment, self.class_names, nt, tp, fp, p, r, f1, ap, ap50, ap_class,
                                  epoch=self.epoch)
        if self.settings.log_confusion_matrix and confusion_matrix is not None:
            log_confusion_matrix(self.experiment, confusion_matrix.matrix, self.class_names, self.epoch)

    @_guarded
    def on_fit_epoch_end(self, vals: Sequence[float], epoch: int, best_fitness: Any, fi: Any) -> None:
        """Log the epoch's values under the ``results.csv`` names (13 for detection training), with ``epoch``."""
        self.experiment.log_metrics(dict(zip(self.keys, map(float, vals), strict=True)), epoch=int(epoch))

    @_guarded
    def on_model_save(self, last: Path, epoch: int, final_epoch: bool, best_fitness: Any, fi: Any) -> None:
        """With ``--save-period N``, log the weights folder every N epochs (not at the final epoch)."""
        period = int(getattr(self.opt, "save_period", -1) or -1)
        if period > 0 and (epoch + 1) % period == 0 and not final_epoch:
            self._log_model(Path(last).parent, epoch, fi, file_name=None)

    @_guarded
    def on_train_end(self, last: Path, best: Path, epoch: int, results: Any) -> None:
        """Log the run's plots, ``results.csv``, prediction metadata and the best model, then end the experiment."""
        experiment = self.experiment
        for path in sorted([*self.save_dir.glob("*.png"), *self.save_dir.glob("*.jpg")]):
            experiment.log_image(str(path), name=path.stem, overwrite=False)
        if (self.save_dir / "results.csv").is_file():
            experiment.log_asset(str(self.save_dir / "results.csv"))
        if self.image_metadata:
            experiment.log_asset_data(self.image_metadata, name="image-metadata.json")
        best, last = Path(best), Path(last)
        if best.is_file() or last.is_file():
            self._log_model(best if best.is_file() else last, epoch, None, file_name="best.pt")
        self.end()

    @_guarded
    def on_params_update(self, params: Mapping[str, Any]) -> None:
        """Log parameters changed during setup (e.g. the AutoBatch size)."""
        self.experiment.log_parameters(dict(params))

    def teardown(self) -> None:
        """End the experiment if training stopped early (error or interrupt), so the offline archive is written."""
        self._end_quietly()

    # ----------------------------------------------------------------------------------------------------- helpers
    def _log_model(self, file_or_folder: Path, epoch: int, fitness: Any, file_name: str | None) -> None:
        metadata = {"epochs_trained": int(epoch) + 1, "save_period": int(getattr(self.opt, "save_period", -1)),
                    "total_epochs": int(getattr(self.opt, "epochs", 0)),
                    "resume_checkpoint": self.settings.default_checkpoint_filename}
        if fitness is not None:
            metadata["fitness_score"] = float(fitness)
        self.experiment.log_model(self.settings.model_name, str(file_or_folder), file_name=file_name,
                                  overwrite=True, metadata=metadata)

    def end(self) -> None:
        """End the experiment (offline: write the archive and print the ``comet upload`` command)."""
        if not self.ended:
            self.ended = True
            self.experiment.end()

    def _end_quietly(self) -> None:
        try:
            self.end()
        except Exception as e:
            LOGGER.warning(f"{PREFIX}WARNING ⚠️ ending the experiment failed ({type(e).__name__}: {e})")


def _config_project_name(comet_ml: Any) -> str:
    """The comet config's ``comet.project_name`` (``.comet.config``), else upstream's default ``yolov5``."""
    try:
        return comet_ml.get_config().get_string(None, "comet.project_name") or "yolov5"
    except Exception:
        return "yolov5"


def _options_dict(opt: Any) -> dict[str, Any]:
    """Plain dict of the run options: ``TrainOptions.to_dict()``, a namespace's ``vars``, or a mapping."""
    if hasattr(opt, "to_dict"):
        return dict(opt.to_dict())
    if isinstance(opt, Mapping):
        return dict(opt)
    return {k: str(v) if isinstance(v, Path) else v for k, v in vars(opt).items()}
