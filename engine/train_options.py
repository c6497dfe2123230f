"""Training options: the ``TrainOptions`` dataclass (upstream ``opt`` keys), hyperparameter loading and resume lookup.

``train.py`` parses the command line into an ``argparse.Namespace`` (upstream's interface) and converts it here at
once; library code only sees ``TrainOptions`` and a plain ``hyp`` dict. ``TrainOptions.to_dict()`` gives exactly the
keys upstream writes to ``opt.yaml`` and ``ckpt['opt']`` (every CLI option, then ``save_dir``).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Union

import yaml

from utils.files import ROOT, check_file, check_yaml, increment_path, yaml_load
from utils.logging import LOGGER, colorstr

DEFAULT_CFG = "yolov5n.yaml"  # architecture trained when neither --weights nor --cfg is given
DEFAULT_DATA = str(ROOT / "data" / "shapes.yaml")  # the built-in dataset, generated on first use
DEFAULT_HYP = ROOT / "data" / "hyps" / "hyp.scratch-low.yaml"
DEFAULT_PROJECT = ROOT / "runs" / "train"
EVOLVE_PROJECT = ROOT / "runs" / "evolve"
RESUME_OVERRIDABLE = ("epochs", "device", "workers", "fp32")  # options a user may change when resuming
UPSTREAM_DEFAULTS = {"hyp": str(DEFAULT_HYP), "optimizer": "SGD", "epochs": 100}
# A built-in dataset (``builtin:`` in its YAML) trains with data/hyps/hyp.<builtin>.yaml and this preset unless the
# user passes --hyp / --optimizer / --epochs: yolov5n from scratch then learns visibly within minutes on a CPU.
BUILTIN_PRESET = {"optimizer": "Adam", "epochs": 20}
BUILTIN_FROZEN_LAYERS = 10  # the preset backbone is frozen (--freeze 10) unless --freeze is given
# The default architecture on a built-in dataset starts from a shipped classification-pretrained backbone (made by
# the command in the file's ``.json`` provenance record) unless the user passes --backbone-weights (``none``: from
# scratch). Keys: (builtin dataset name, default cfg).
BUILTIN_BACKBONES = {("shapes", "yolov5n.yaml"): ROOT / "data" / "pretrained" / "yolov5n-shapes-cls.pt"}
NO_BACKBONE = "none"  # --backbone-weights none: no backbone transfer, not even the built-in preset's


class TrainError(RuntimeError):
    """A training run could not start or had to stop; the message says why and what to do."""


class NothingToResumeError(TrainError):
    """``--resume`` pointed at a finished (stripped) checkpoint or no checkpoint at all."""


@dataclass
class TrainOptions:
    """Every ``train.py`` option with upstream's name and meaning (see ``python train.py --help``).

    ``hyp`` is a path to a hyperparameter YAML or an already loaded dict (after setup it is the unscaled dict, as
    upstream stores it in ``opt.yaml``). ``resume`` is False, True (newest ``last*.pt``) or a checkpoint path.
    ``hyp`` '', ``optimizer`` '' and ``epochs`` None mean "the default for the dataset" (see
    :func:`apply_dataset_defaults`): upstream's for any dataset, a short-run preset for a built-in one.
    """

    weights: str = ""
    cfg: str = ""
    data: Any = DEFAULT_DATA
    hyp: Any = ""
    epochs: int | None = None
    batch_size: int = 16
    imgsz: int = 320
    rect: bool = False
    resume: Union[bool, str] = False
    nosave: bool = False
    noval: bool = False
    noautoanchor: bool = False
    noplots: bool = False
    evolve: int | None = None
    evolve_population: str = str(ROOT / "data" / "hyps")
    resume_evolve: str | None = None
    bucket: str = ""
    cache: str | None = None
    image_weights: bool = False
    device: str = ""
    multi_scale: bool = False
    single_cls: bool = False
    optimizer: str = ""
    sync_bn: bool = False
    workers: int = 8
    project: str = str(DEFAULT_PROJECT)
    name: str = "exp"
    exist_ok: bool = False
    quad: bool = False
    cos_lr: bool = False
    label_smoothing: float = 0.0
    patience: int = 100
    freeze: list | None = None  # None: [0] (nothing), or the built-in preset's (see prepare_new_run)
    save_period: int = -1
    seed: int = 0
    local_rank: int = -1
    entity: str | None = None
    upload_dataset: Union[bool, str] = False
    bbox_interval: int = -1
    artifact_alias: str = "latest"
    backbone_weights: str = ""  # extension: backbone-only transfer (extensions/transfer.py)
    fp32: bool = False  # extension: plain fp32 NCHW instead of the CPU bf16 fast path (utils/precision.py)
    save_dir: str = ""

    default_cfg: ClassVar[str] = DEFAULT_CFG  # built when neither weights nor cfg is given
    default_project: ClassVar[Path] = DEFAULT_PROJECT  # the --project default (resume searches below it)

    @classmethod
    def field_names(cls) -> list[str]:
        """Return the option names in upstream's order."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: dict, strict: bool = True, source: str = "options") -> TrainOptions:
        """Build options from a dict; unknown keys raise (``strict``) or are dropped with one warning.

        Raises:
            TypeError: an unknown key when ``strict``, with the closest valid name suggested.
        """
        known = set(cls.field_names())
        unknown = [k for k in values if k not in known]
        if unknown and strict:
            hints = [f"'{k}'" + _suggest(k, known) for k in unknown]
            raise TypeError(f"unknown training option(s) {', '.join(hints)}; valid options: {', '.join(sorted(known))}")
        if unknown:
            LOGGER.warning(f"WARNING ⚠️ {source}: ignoring option(s) this version does not use: {', '.join(unknown)}")
        options = cls(**{k: v for k, v in values.items() if k in known})
        if options.freeze is not None:
            options.freeze = [int(x) for x in (options.freeze if isinstance(options.freeze, (list, tuple))
                                               else [options.freeze])]
        return options

    @classmethod
    def from_namespace(cls, namespace: argparse.Namespace) -> TrainOptions:
        """Convert the CLI namespace (``parse_opt()``'s result) into options."""
        return cls.from_dict(vars(namespace))

    def to_dict(self) -> dict:
        """Return upstream's ``vars(opt)``: every option (paths as strings, ``hyp`` as given) plus ``save_dir``."""
        return {k: _plain(v) for k, v in dataclasses.asdict(self).items()}

    def to_namespace(self) -> argparse.Namespace:
        """Return the options as the ``argparse.Namespace`` upstream's ``train.run()`` returns."""
        return argparse.Namespace(**self.to_dict())


def _plain(value: Any) -> Any:
    """Return ``value`` with every ``Path`` (also inside dicts/lists) as a string, so YAML and pickles stay plain."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _suggest(name: str, choices: Any) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


# Keys a hyp file may add to upstream's: ``anchors`` (anchors per level, as upstream reads it), ``label_smoothing``
# and ``nbs`` (nominal batch size, default 64: gradients are accumulated to this many images per optimizer step).
OPTIONAL_HYP_KEYS = ("anchors", "label_smoothing", "nbs")


def load_hyp(hyp: Union[str, Path, dict]) -> dict:
    """Return a hyperparameter dict from a YAML path or dict, checked against the default file's keys.

    Keys missing from ``hyp`` are filled from ``hyp.scratch-low.yaml`` with a warning; keys the default does not
    know are kept (e.g. ``anchors``) unless they look like typos, which warn. Values must be numbers.

    Raises:
        ValueError: a value is not a number (the message names the file and key).
    """
    source = "hyp dict" if isinstance(hyp, dict) else str(hyp)
    values = dict(hyp) if isinstance(hyp, dict) else yaml_load(check_yaml(hyp))
    defaults = yaml_load(DEFAULT_HYP) if DEFAULT_HYP.is_file() else {}
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{source}: hyperparameter '{key}' must be a number, got {value!r}")
        if defaults and key not in defaults and key not in OPTIONAL_HYP_KEYS:
            LOGGER.warning(f"WARNING ⚠️ {source}: unknown hyperparameter '{key}'{_suggest(key, defaults)}")
    missing = [k for k in defaults if k not in values]
    if missing:
        LOGGER.warning(f"WARNING ⚠️ {source}: missing hyperparameter(s) {', '.join(missing)}, using the "
                       f"defaults from {DEFAULT_HYP.name}")
        values = {**{k: defaults[k] for k in missing}, **values}
    return values


def resolve_weights(weights: Union[str, Path]) -> str:
    """Return the path of an existing ``--weights`` file ('' stays ''); a bare name is also looked up in ROOT.

    Raises:
        FileNotFoundError: the file does not exist; the message says nothing is downloaded and where to put it.
    """
    weights = str(weights or "").strip()
    if not weights:
        return ""
    if weights.startswith(("http:/", "https:/")):
        raise FileNotFoundError(f"--weights {weights} is a URL; this project never downloads at run time. Download "
                                f"the file yourself and pass its local path.")
    for candidate in (Path(weights), ROOT / weights):
        if candidate.is_file():
            return str(candidate)
    raise FileNotFoundError(
        f"--weights file '{weights}' not found. Nothing is downloaded at run time: put the file at "
        f"{Path(weights).resolve()} (or {ROOT / Path(weights).name}) or pass its full path, or train from scratch "
        f"with --weights '' --cfg {Path(weights).stem if weights.endswith('.pt') else 'yolov5n'}.yaml")


def get_latest_run(search_dir: Union[str, Path] = ".") -> str:
    """Return the most recently created ``last*.pt`` under ``search_dir`` (recursive), or '' if there is none."""
    candidates = glob.glob(f"{search_dir}/**/last*.pt", recursive=True)
    return max(candidates, key=os.path.getctime) if candidates else ""


def _latest_resumable_checkpoint(options: TrainOptions) -> str:
    project = Path(options.project)
    default = type(options).default_project
    if project.resolve() != default.resolve():
        search = [project]
    elif default.resolve() == DEFAULT_PROJECT.resolve():  # detection: every run folder, as upstream
        search = [ROOT / "runs", Path.cwd() / "runs"]
    else:  # another task (segmentation): only its own runs, never a detection last.pt
        search = [default, Path.cwd() / "runs" / default.name]
    found = [f for f in (get_latest_run(d) for d in dict.fromkeys(search) if d.is_dir()) if f]
    if not found:
        raise NothingToResumeError(f"--resume: no last*.pt found under {', '.join(map(str, search))}. Pass the "
                                   f"checkpoint explicitly: --resume path/to/weights/last.pt")
    return max(found, key=os.path.getctime)


def restore_resume_options(options: TrainOptions, overrides: dict | None = None) -> TrainOptions:
    """Return the options of the run being resumed, read from its ``opt.yaml`` (else from ``ckpt['opt']``).

    ``weights`` becomes the checkpoint, ``cfg`` is cleared, ``resume`` is True and ``save_dir`` is the folder that
    holds ``weights/last.pt``, so the run continues in place (same ``results.csv``). ``overrides`` may change only
    :data:`RESUME_OVERRIDABLE` options (e.g. more ``epochs`` or another ``device``).

    Raises:
        NothingToResumeError: no checkpoint found. FileNotFoundError: the given checkpoint does not exist.
    """
    last = Path(options.resume if isinstance(options.resume, str) else _latest_resumable_checkpoint(options))
    if not last.is_file():
        raise FileNotFoundError(f"--resume {last}: checkpoint not found")
    opt_yaml = last.parent.parent / "opt.yaml"
    if opt_yaml.is_file():
        saved, source = yaml_load(opt_yaml), str(opt_yaml)
    else:
        from utils.checkpoint import torch_safe_load

        saved, source = dict(torch_safe_load(last).get("opt") or {}), f"{last} ['opt']"
        if not saved:
            raise TrainError(f"--resume {last}: neither {opt_yaml} nor the checkpoint's 'opt' entry holds the run's "
                             f"options; start a new run with --weights {last} instead")
    restored = type(options).from_dict(saved, strict=False, source=source)
    restored.cfg, restored.weights, restored.resume = "", str(last), True
    restored.save_dir = str(last.parent.parent)
    for key, value in (overrides or {}).items():
        if key in RESUME_OVERRIDABLE:
            LOGGER.info(f"{colorstr('resume:')} overriding {key}={getattr(restored, key)!r} with {value!r}")
            setattr(restored, key, value)
    LOGGER.info(f"{colorstr('resume:')} resuming training from {last}")
    return restored


def builtin_dataset_name(data: Any) -> str:
    """Return the ``builtin:`` name of a dataset YAML (path or dict), or '' for a user dataset."""
    if isinstance(data, dict):
        return str(data.get("builtin") or "")
    try:
        return str(yaml_load(data).get("builtin") or "") if data and Path(data).is_file() else ""
    except (OSError, ValueError, yaml.YAMLError):
        return ""


def apply_dataset_defaults(options: TrainOptions) -> TrainOptions:
    """Fill unset ``hyp``/``optimizer``/``epochs``: upstream's defaults, or a built-in dataset's preset.

    A built-in dataset uses ``data/hyps/hyp.<builtin>.yaml`` (when it exists) and :data:`BUILTIN_PRESET`, which
    are logged; values the user set are never changed.
    """
    opt = dataclasses.replace(options)
    builtin = builtin_dataset_name(opt.data)
    preset = dict(UPSTREAM_DEFAULTS)
    builtin_hyp = ROOT / "data" / "hyps" / f"hyp.{builtin}.yaml"
    if builtin and builtin_hyp.is_file():
        preset.update(BUILTIN_PRESET, hyp=str(builtin_hyp))
    chosen = {k: v for k, v in preset.items() if getattr(opt, k) in ("", None)}
    for key, value in chosen.items():
        setattr(opt, key, value)
    if builtin and chosen:
        LOGGER.info(f"{colorstr('built-in dataset:')} '{builtin}' preset " + ", ".join(
            f"--{k} {Path(v).name if k == 'hyp' else v}" for k, v in chosen.items())
            + " (pass these flags to change them)")
    return opt


def backbone_provenance(path: Path) -> dict:
    """Return the provenance record (``<weights>.json``: command, epochs, top-1, minutes, date) of a shipped
    backbone file, or {} when there is none."""
    try:
        return yaml_load(Path(path).with_suffix(".json"))
    except (OSError, ValueError, yaml.YAMLError):
        return {}


def preset_backbone(opt: TrainOptions) -> str:
    """Return the ``backbone_weights`` of a run of the default cfg: the user's value, or the built-in dataset's
    shipped classification-pretrained backbone (:data:`BUILTIN_BACKBONES`, logged with its provenance), else ''."""
    if opt.backbone_weights:
        return str(opt.backbone_weights)
    path = BUILTIN_BACKBONES.get((builtin_dataset_name(opt.data), Path(opt.default_cfg).name))
    if path is None or not path.is_file():
        return ""
    record = backbone_provenance(path)
    made = (f" (made by '{record['command']}': {record['epochs']} epochs, top-1 {record['top1']:.3f}, "
            f"{record['minutes']:.0f} min on {record['machine']})") if {"command", "epochs", "top1", "minutes",
                                                                         "machine"} <= set(record) else ""
    LOGGER.info(f"{colorstr('built-in dataset:')} preset --backbone-weights {path.relative_to(ROOT)}{made}; "
                f"pass --backbone-weights {NO_BACKBONE} to train from scratch")
    return str(path)


def prepare_new_run(options: TrainOptions) -> TrainOptions:
    """Check the files of a new run (data, cfg, hyp, weights) and choose its ``save_dir``; returns new options.

    With neither ``weights`` nor ``cfg`` the run trains :data:`DEFAULT_CFG`, on a built-in dataset from its preset
    backbone (:func:`preset_backbone`; ``--backbone-weights none`` for none), frozen unless ``freeze`` is given.
    ``--evolve`` moves the
    default project to ``runs/evolve`` and turns ``--resume`` into "continue in the same folder" (upstream).
    """
    opt = dataclasses.replace(options, freeze=None if options.freeze is None else list(options.freeze))
    if isinstance(opt.data, (str, Path)):
        opt.data = check_file(opt.data)
    if not opt.cfg and not opt.weights:
        opt.backbone_weights = preset_backbone(opt)
        if opt.freeze is None and Path(opt.backbone_weights) in BUILTIN_BACKBONES.values():
            opt.freeze = [BUILTIN_FROZEN_LAYERS]
            LOGGER.info(f"{colorstr('built-in dataset:')} preset --freeze {BUILTIN_FROZEN_LAYERS} (the pretrained "
                        f"backbone stays fixed; --freeze 0 fine-tunes it too)")
    opt.freeze = [0] if opt.freeze is None else opt.freeze
    opt = apply_dataset_defaults(opt)
    if isinstance(opt.hyp, (str, Path)):
        opt.hyp = check_yaml(opt.hyp)
    opt.weights = resolve_weights(opt.weights)
    opt.project = str(opt.project)
    if not opt.cfg and not opt.weights:
        start = f"from the backbone {Path(opt.backbone_weights).name}" if opt.backbone_weights else "from scratch"
        LOGGER.info(f"No --weights or --cfg given: training {opt.default_cfg} {start}")
        opt.cfg = opt.default_cfg
    if str(opt.backbone_weights).lower() == NO_BACKBONE:
        opt.backbone_weights = ""
    opt.cfg = check_yaml(opt.cfg) if opt.cfg else ""
    if opt.evolve:
        if Path(opt.project).resolve() == opt.default_project.resolve():
            opt.project = str(EVOLVE_PROJECT)
        opt.exist_ok, opt.resume = bool(opt.resume), False
    if opt.name == "cfg":
        opt.name = Path(opt.cfg).stem
    opt.save_dir = str(increment_path(Path(opt.project) / opt.name, exist_ok=opt.exist_ok))
    return opt


def explicit_overrides(options: TrainOptions, given: set | None = None) -> dict:
    """Return the :data:`RESUME_OVERRIDABLE` options that differ from their defaults (or were ``given``)."""
    defaults = type(options)()
    return {k: getattr(options, k) for k in RESUME_OVERRIDABLE
            if (given is not None and k in given) or getattr(options, k) != getattr(defaults, k)}
