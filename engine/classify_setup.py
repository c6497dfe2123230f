"""Options and setup steps of classification training (``classify/train.py``): the options dataclass, the built-in
dataset preset and the ``--model`` resolution (detection YAML, checkpoint or torchvision name).

``--model`` accepts, nothing ever downloads:

* a detection YAML (path or bare name: ``yolov5s.yaml``, ``convnext_yolov5n.yaml``, ``yolov1.yaml``,
  ``yolov3-legacy.yaml``): its first ``--cutoff`` rows (default: the ``backbone:`` section) plus a ``Classify``
  head, random init (:class:`models.yolo.ClassificationModel`);
* a ``.pt`` checkpoint: a classification model (head resized to the dataset's classes) or a detection model cut to
  a classifier as upstream does (layers ``[:cutoff]``, default 10, the last replaced by ``Classify``);
* a torchvision model name (``resnet18``, ``mobilenet_v3_small``, ...): random init, or with ``--pretrained`` its
  default weights if they are already in the local torch hub cache, or ``--pretrained path/to/weights.pth``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import torch
import torch.nn as nn

from utils.files import ROOT
from utils.logging import LOGGER, colorstr

DEFAULT_MODEL = "yolov5n.yaml"  # upstream: yolov5s-cls.pt (a download); here a YAML trained from scratch
DEFAULT_DATA = str(ROOT / "data" / "shapes-cls.yaml")
DEFAULT_PROJECT = ROOT / "runs" / "train-cls"
UPSTREAM_DEFAULTS = {"imgsz": 224, "epochs": 10, "batch_size": 64}
# The built-in images are 96-160 px (224 would only upsample them); from scratch the shapes need ~5 epochs at 64 px
# before accuracy leaves chance (the README's curve), so the preset trains longer at a small size.
BUILTIN_PRESET = {"imgsz": 64, "epochs": 20, "batch_size": 32}
CLS_RESULTS_KEYS = ("train/loss", "val/loss", "metrics/accuracy_top1", "metrics/accuracy_top5", "lr/0")
OPTIMIZERS = ("SGD", "Adam", "AdamW", "RMSProp")


class ClassifyError(RuntimeError):
    """A classification run could not start; the message says why and what to do."""


@dataclass
class ClassifyOptions:
    """Every ``classify/train.py`` option under upstream's name (``python classify/train.py --help``).

    ``imgsz``/``epochs``/``batch_size`` None mean "the default for the dataset" (upstream's 224 px, 10 epochs,
    batch 64, or the built-in dataset's preset).
    ``pretrained`` is True/False or a path to local torchvision weights. ``fp32`` and ``noplots`` are additions.
    """

    model: str = DEFAULT_MODEL
    data: Any = DEFAULT_DATA
    epochs: int | None = None
    batch_size: int | None = None
    imgsz: int | None = None
    nosave: bool = False
    cache: str | None = None
    device: str = ""
    workers: int = 8
    project: str = str(DEFAULT_PROJECT)
    name: str = "exp"
    exist_ok: bool = False
    pretrained: Union[bool, str] = True
    optimizer: str = "Adam"
    lr0: float = 0.001
    decay: float = 5e-5
    label_smoothing: float = 0.1
    cutoff: int | None = None
    dropout: float | None = None
    verbose: bool = False
    seed: int = 0
    local_rank: int = -1
    fp32: bool = False
    noplots: bool = False
    save_dir: str = ""

    @classmethod
    def from_dict(cls, values: dict) -> ClassifyOptions:
        """Build options from a dict of option names.

        Raises:
            TypeError: an unknown option name (the valid names are listed).
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise TypeError(f"unknown classification option(s) {unknown}; valid options: {', '.join(sorted(known))}")
        return cls(**values)

    def to_dict(self) -> dict:
        """Return ``vars(opt)`` as upstream stores it (paths as strings)."""
        return {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(self).items()}


def parse_pretrained(value: Any) -> Union[bool, str]:
    """``--pretrained`` value: booleans and 'true'/'false'/'1'/'0' strings become bools; anything else a path."""
    if isinstance(value, bool) or value is None:
        return bool(value)
    text = str(value).strip()
    if text.lower() in ("true", "1", "yes", ""):
        return True
    if text.lower() in ("false", "0", "no", "none"):
        return False
    return text


def apply_dataset_defaults(opt: ClassifyOptions, builtin: bool) -> ClassifyOptions:
    """Fill unset ``imgsz``/``epochs``/``batch_size``: upstream's defaults, or the built-in dataset's preset."""
    preset = BUILTIN_PRESET if builtin else UPSTREAM_DEFAULTS
    chosen = {k: v for k, v in preset.items() if getattr(opt, k) is None}
    opt = dataclasses.replace(opt, **chosen)
    if builtin and chosen:
        LOGGER.info(f"{colorstr('built-in dataset:')} preset " + ", ".join(f"--{k} {v}" for k, v in chosen.items())
                    + " (pass these flags to change them)")
    return opt


def prepare_run(opt: ClassifyOptions, builtin: bool) -> ClassifyOptions:
    """Defaults for the dataset, ``--pretrained`` parsed and ``save_dir`` chosen (``project/name`` incremented)."""
    from utils.files import increment_path

    opt = apply_dataset_defaults(dataclasses.replace(opt, pretrained=parse_pretrained(opt.pretrained)), builtin)
    if opt.optimizer.lower() not in {o.lower() for o in OPTIMIZERS}:
        raise ClassifyError(f"--optimizer {opt.optimizer} is not one of {', '.join(OPTIMIZERS)}")
    opt.save_dir = str(increment_path(Path(opt.project) / opt.name, exist_ok=opt.exist_ok))
    return opt


def torchvision_names() -> list[str]:
    """Return the torchvision classification model names (``torchvision.models.list_models``)."""
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def build_torchvision(name: str, nc: int, pretrained: Union[bool, str]) -> nn.Module:
    """Build a torchvision classifier without downloading: random init, cached default weights, or a local file.

    Raises:
        ClassifyError: ``pretrained`` names a file that does not exist.
    """
    import torchvision

    from models.classifier import reshape_classifier_output

    model = torchvision.models.get_model(name, weights=None)
    if isinstance(pretrained, str):
        if not Path(pretrained).is_file():
            raise ClassifyError(f"--pretrained {pretrained}: file not found (a torchvision state dict .pth/.pt)")
        from extensions.transfer import extract_state_dict, read_weights

        model.load_state_dict(extract_state_dict(read_weights(pretrained), pretrained))
        LOGGER.info(f"{name}: weights loaded from {pretrained}")
    elif pretrained:
        _load_cached_torchvision_weights(model, name)
    reshape_classifier_output(model, nc)
    return model


def _load_cached_torchvision_weights(model: nn.Module, name: str) -> None:
    """Load torchvision's default weights for ``name`` only when the file is already in the torch hub cache."""
    import torchvision

    weights = torchvision.models.get_model_weights(name).DEFAULT
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    if not cached.is_file():
        LOGGER.warning(f"WARNING ⚠️ --pretrained: {name} ImageNet weights are not in the local cache ({cached}); "
                       f"nothing is downloaded, training from random initialisation. Put the file there or pass "
                       f"--pretrained path/to/weights.pth")
        return
    model.load_state_dict(torch.load(cached, map_location="cpu", weights_only=True))
    LOGGER.info(f"{name}: ImageNet weights loaded from {cached}")


def _reset_parameters(model: nn.Module) -> None:
    for module in model.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()


def _from_checkpoint(path: str, nc: int, cutoff: int | None, pretrained: Union[bool, str]) -> nn.Module:
    from models.classifier import reshape_classifier_output
    from models.loading import load_model
    from models.yolo import ClassificationModel, DetectionModel

    model = load_model(path, fuse=False)
    for p in model.parameters():
        p.requires_grad = True
    if isinstance(model, DetectionModel):
        LOGGER.info(f"{path}: detection model cut to a classifier at layer {10 if cutoff is None else cutoff}")
        model = ClassificationModel(model=model, nc=nc, cutoff=cutoff)
    else:
        reshape_classifier_output(model, nc)
    if pretrained is False:
        _reset_parameters(model)
    return model.train()


def build_classifier(opt: ClassifyOptions, nc: int) -> nn.Module:
    """Return the model ``--model`` names, with ``nc`` outputs, ``--dropout`` applied, in training mode.

    Raises:
        ClassifyError: the name is neither a YAML, a checkpoint nor a torchvision model.
    """
    from models.classifier import set_dropout
    from models.yolo import ClassificationModel

    name = str(opt.model)
    if name.endswith(".pt"):
        if not Path(name).is_file():
            raise ClassifyError(f"--model {name}: file not found. Nothing is downloaded at run time: put the "
                                f"checkpoint there, or train from a YAML such as --model yolov5s.yaml")
        model = _from_checkpoint(name, nc, opt.cutoff, opt.pretrained)
    elif name.endswith((".yaml", ".yml")):
        model = ClassificationModel(name, nc=nc, cutoff=opt.cutoff)
    elif name in torchvision_names():
        model = build_torchvision(name, nc, opt.pretrained)
    else:
        raise ClassifyError(f"--model {name}: not a .yaml, a .pt file or a torchvision model name (e.g. resnet18, "
                            f"mobilenet_v3_small, efficientnet_b0)")
    if opt.dropout is not None:
        changed = set_dropout(model, opt.dropout)
        LOGGER.info(f"--dropout {opt.dropout}: set on {changed} dropout layer(s)")
    return model.train()
