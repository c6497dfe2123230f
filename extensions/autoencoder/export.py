"""Pretrainer checkpoints and backbone-only files.

A pretrainer checkpoint (``weights/last.pt``, ``weights/best.pt``) is a dict of plain tensors, numbers and strings,
so it loads with :func:`utils.checkpoint.torch_safe_load` (``weights_only=True``) with nothing to allow-list:

- ``backbone``: the encoder's state dict keyed exactly like the detection model's backbone, ``model.{i}.*`` (fp32;
  the EMA's when EMA is on). ``state_dict`` is the same dict, so ``train.py --weights FILE --cfg yolov5s.yaml``
  also loads it. ``extensions.transfer.load_backbone_weights`` (``--backbone-weights``) reads ``backbone`` first;
- ``autoencoder``: the full autoencoder state dict (encoder + decoder), ``autoencoder_ema`` (or None);
- ``yaml``: the detection model YAML dict whose ``backbone:`` rows are the encoder; ``skips``: decoder mode;
- ``epoch``, ``best_fitness`` (= -best loss), ``best_loss``, ``optimizer`` (state dict; None once training ended),
  ``ema_updates``, ``opt`` (run options), ``format``, ``date``.

A backbone-only file (:func:`export_backbone`) is a bare ``OrderedDict`` ``{'model.{i}.*': tensor}``: it works with
``--backbone-weights FILE`` and with ``--weights FILE --cfg MODEL.yaml``.
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import datetime
from pathlib import Path
from typing import Any, Union

import torch
import torch.nn as nn

from extensions.autoencoder.model import Autoencoder, Encoder
from extensions.transfer import TransferReport, extract_state_dict, load_backbone_weights, transfer_backbone
from utils.checkpoint import contiguous_tensors, extract_model, save_checkpoint, torch_safe_load
from utils.logging import LOGGER

CHECKPOINT_FORMAT = "yolov5-autoencoder-pretrain/1"
PathLike = Union[str, Path]


def _float_state(module: nn.Module) -> OrderedDict[str, torch.Tensor]:
    return OrderedDict((k, v.detach().float().clone(memory_format=torch.contiguous_format) if v.is_floating_point()
                        else v.detach().clone()) for k, v in module.state_dict().items())


def make_pretrain_checkpoint(model: Autoencoder, epoch: int, best_loss: float,
                             optimizer: torch.optim.Optimizer | None = None, ema: Any = None,
                             opt: dict | None = None) -> dict:
    """Build the checkpoint dict described in the module docstring (``ema`` is a :class:`utils.ema.ModelEMA`)."""
    source = ema.ema if ema is not None else model
    backbone = source.backbone_state_dict()
    return {
        "format": CHECKPOINT_FORMAT,
        "epoch": int(epoch),
        "best_fitness": -float(best_loss),
        "best_loss": float(best_loss),
        "backbone": backbone,
        "state_dict": backbone,  # same object: stored once; lets `--weights FILE --cfg X.yaml` read the backbone
        "autoencoder": _float_state(model),
        "autoencoder_ema": _float_state(ema.ema) if ema is not None else None,
        "ema_updates": int(ema.updates) if ema is not None else 0,
        "optimizer": contiguous_tensors(optimizer.state_dict()) if optimizer is not None else None,
        "yaml": model.yaml,
        "skips": model.skips,
        "opt": dict(opt or {}),
        "date": datetime.now().isoformat(),
    }


def save_pretrain_checkpoint(ckpt: dict, file: PathLike) -> Path:
    """Write ``ckpt`` atomically (temporary file + rename); returns the path."""
    file = Path(file)
    file.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(ckpt, file)
    return file


def load_pretrain_checkpoint(file: PathLike) -> dict:
    """Load a pretrainer checkpoint with the safe loader.

    Raises:
        ValueError: the file is not a pretrainer checkpoint (the message lists its keys).
    """
    ckpt = torch_safe_load(file)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        keys = ", ".join(map(str, list(ckpt)[:8])) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"{file}: not an autoencoder pretraining checkpoint (format {CHECKPOINT_FORMAT!r} expected; "
                         f"found {keys})")
    return ckpt


def autoencoder_from_checkpoint(ckpt: Union[PathLike, dict], skips: bool | None = None,
                                use_ema: bool = True) -> Autoencoder:
    """Rebuild the autoencoder of a pretrainer checkpoint (EMA weights when present and ``use_ema``), eval mode."""
    if not isinstance(ckpt, dict):
        ckpt = load_pretrain_checkpoint(ckpt)
    model = Autoencoder(ckpt["yaml"], skips=ckpt.get("skips", True) if skips is None else skips)
    state = ckpt.get("autoencoder_ema") if use_ema and ckpt.get("autoencoder_ema") else ckpt["autoencoder"]
    model.load_state_dict(state)
    return model.eval()


def init_encoder_from(weights: PathLike, model: Autoencoder) -> TransferReport:
    """Start ``model``'s encoder from the backbone of a detection checkpoint (upstream or ours) or backbone file.

    Names and shapes must match (``extensions.transfer``); a partial match is logged with a warning.

    Raises:
        ValueError: no backbone tensor matched.
    """
    report = load_backbone_weights(weights, model.encoder)
    if report.num_transferred < report.total:
        LOGGER.warning(f"WARNING ⚠️ --weights {weights}: only {report.num_transferred}/{report.total} encoder tensors "
                       f"matched; the others keep their random initialisation")
    return report


def weights_model_yaml(weights: PathLike) -> dict | None:
    """Return the model YAML dict stored in a pretrainer or detection checkpoint, or None (e.g. a bare state dict)."""
    ckpt = torch_safe_load(weights)
    if isinstance(ckpt, dict) and ckpt.get("format") == CHECKPOINT_FORMAT:
        return ckpt["yaml"]
    try:
        model = extract_model(ckpt, weights)
    except ValueError:
        return None
    yaml_dict = getattr(model, "yaml", None)
    return yaml_dict if isinstance(yaml_dict, dict) else None


def detection_backbone(ckpt: Any, source: PathLike = "<checkpoint>") -> OrderedDict[str, torch.Tensor]:
    """Return the backbone tensors (``model.{i}.*``, fp32) of a loaded detection checkpoint, upstream or ours.

    Raises:
        ValueError: the checkpoint holds no model object, or none of its backbone tensors fits the rebuilt encoder.
    """
    detector = extract_model(ckpt, source)
    encoder = Encoder(detector.yaml)
    report = transfer_backbone(extract_state_dict(detector, str(source)), encoder, source=str(source))
    if report.num_transferred < report.total:
        raise ValueError(f"{source}: only {report.num_transferred}/{report.total} backbone tensors could be read")
    return _float_state(encoder)


def backbone_tensors(source: PathLike | Autoencoder | dict) -> OrderedDict[str, torch.Tensor]:
    """Return ``model.{i}.*`` backbone tensors from an autoencoder, a pretrainer checkpoint or a detection one."""
    if isinstance(source, Autoencoder):
        return source.backbone_state_dict()
    if isinstance(source, dict):
        return OrderedDict(source["backbone"])
    ckpt = torch_safe_load(source)
    if isinstance(ckpt, dict) and ckpt.get("format") == CHECKPOINT_FORMAT:
        return OrderedDict(ckpt["backbone"])
    return detection_backbone(ckpt, source)


def export_backbone(source: Union[PathLike, Autoencoder, dict], file: PathLike) -> Path:
    """Write a backbone-only file (bare ``OrderedDict`` of ``model.{i}.*`` tensors) atomically; returns its path."""
    tensors = backbone_tensors(source)
    path = save_pretrain_checkpoint(tensors, file)
    LOGGER.info(f"Backbone-only weights ({len(tensors)} tensors) saved to {path}")
    return path
