"""Backbone-only weight transfer (``train.py --backbone-weights PATH``).

Copies the tensors of a model's *backbone* — the rows of its YAML ``backbone:`` section, i.e. state-dict keys
``model.{i}.*`` for ``i < len(model.yaml['backbone'])`` — from another file, leaving the neck and the head as they
are. Nothing is matched by position: a destination tensor receives a source tensor only when their names agree
after prefix normalisation and their shapes are equal; everything else is reported with a reason.

Accepted sources (see :func:`extract_state_dict`):

- an upstream YOLOv5 or project detection/classification checkpoint (pickled model under ``ema`` / ``model``,
  loaded with :func:`utils.checkpoint.torch_safe_load`);
- an autoencoder/pretrainer checkpoint: a dict with a ``backbone`` state dict, or a ``model`` that is a module or a
  state dict whose encoder keys are ``backbone.{i}.*`` / ``encoder.{i}.*`` / ``model.{i}.*``;
- a plain state dict (``.pt``/``.pth``/``.bin`` via the safe loader, ``.safetensors`` via ``safetensors``), e.g. a
  timm state dict for a :class:`extensions.timm_backbone.TimmBackbone` row.

Key normalisation: leading ``module.`` (DDP), ``model.`` (any depth: ``model.model.`` of AutoShape), ``backbone.``
and ``encoder.`` tokens are stripped, leaving either a *layer-indexed* key ``"{i}.{rest}"`` or a *raw* key (e.g.
timm's ``stages.1.blocks.0.gamma``). A destination layer that declares ``raw_key_prefix`` (TimmBackbone:
``"body."``) also accepts raw keys, with timm's ``features_only`` renaming undone (``stages_1`` <- ``stages.1``).

Freezing exactly the backbone: upstream's ``--freeze N`` freezes ``model.0.`` .. ``model.{N-1}.``, so pass
``--freeze {backbone_length(model)}``: 10 for the yolov5 YAMLs, 8 for ``convnext_yolov5{n,s}.yaml``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, Union

import torch
import torch.nn as nn

from utils.logging import LOGGER

PREFIX_TOKENS = ("module", "model", "backbone", "encoder")
CONTAINER_KEYS = ("backbone", "ema", "model", "state_dict_ema", "model_ema", "state_dict", "encoder")
REASON_MISSING = "missing in source"
IGNORED_SUFFIXES = ("num_batches_tracked",)  # BN step counters: not weights, and any file "matches" them


@dataclass
class TransferReport:
    """Outcome of a backbone transfer.

    Attributes:
        source: where the tensors came from (a path or ``'<state dict>'``).
        total: number of destination backbone tensors (parameters and persistent buffers; BatchNorm
            ``num_batches_tracked`` counters are not weights and are neither counted nor copied).
        transferred: destination keys that received a source tensor, in state-dict order.
        skipped: destination key -> reason (``'missing in source'`` or ``'shape mismatch src (..) vs dst (..)'``).
        source_keys: destination key -> the (normalised) source key it was copied from.
    """

    source: str
    total: int
    transferred: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    source_keys: dict[str, str] = field(default_factory=dict)

    @property
    def num_transferred(self) -> int:
        """Number of tensors copied."""
        return len(self.transferred)

    def summary(self) -> str:
        """Return the one-line summary ``Transferred N/M backbone tensors from SOURCE``."""
        return f"Transferred {self.num_transferred}/{self.total} backbone tensors from {self.source}"

    def log(self, max_listed: int = 30) -> None:
        """Log the summary and up to ``max_listed`` skipped keys with their reasons."""
        LOGGER.info(self.summary())
        if self.skipped:
            LOGGER.warning(f"{len(self.skipped)} backbone tensors kept their initialisation:")
            for key, reason in list(self.skipped.items())[:max_listed]:
                LOGGER.warning(f"  {key}: {reason}")
            if len(self.skipped) > max_listed:
                LOGGER.warning(f"  ... and {len(self.skipped) - max_listed} more")


def backbone_length(model: nn.Module) -> int:
    """Return the number of backbone rows (``len(model.yaml['backbone'])``), the value for ``--freeze``."""
    model = getattr(model, "module", model)
    yaml_dict = getattr(model, "yaml", None)
    if not isinstance(yaml_dict, dict) or not yaml_dict.get("backbone"):
        raise ValueError("model has no YAML 'backbone:' section; pass backbone_layers explicitly")
    return len(yaml_dict["backbone"])


def normalize_key(key: str) -> str:
    """Strip wrapper prefixes (``module.``, ``model.``, ``backbone.``, ``encoder.``) from a source key.

    ``'module.model.3.conv.weight'`` -> ``'3.conv.weight'``; ``'stages.1.blocks.0.gamma'`` is unchanged.
    """
    parts = key.split(".")
    start = 0
    while start < len(parts) - 1 and parts[start] in PREFIX_TOKENS:
        start += 1
    return ".".join(parts[start:])


def normalize_source(state: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Return ``{normalised key: tensor}`` for the tensor entries of ``state`` (first occurrence wins)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if isinstance(value, torch.Tensor):
            out.setdefault(normalize_key(str(key)), value)
    return out


def raw_key_candidates(key: str) -> list[str]:
    """Return ``key`` and the names it may have outside timm's ``features_only`` wrapper.

    The wrapper flattens top-level ``nn.Sequential`` children, renaming ``stages.1`` to ``stages_1``; each single
    ``_`` of the first name component is tried as a ``.`` (``'stages_1.blocks.0.gamma'`` ->
    ``'stages.1.blocks.0.gamma'``).
    """
    head, dot, rest = key.partition(".")
    candidates = [key]
    for pos, char in enumerate(head):
        if char == "_":
            candidates.append(f"{head[:pos]}.{head[pos + 1:]}{dot}{rest}")
    return candidates


def backbone_candidates(model: nn.Module, backbone_layers: int) -> dict[str, list[str]]:
    """Return, for each destination backbone key ``model.{i}.{rest}``, the normalised source keys to try in order."""
    layers = model.model
    candidates: dict[str, list[str]] = {}
    for key in model.state_dict():
        if key.endswith(IGNORED_SUFFIXES):
            continue
        parts = key.split(".", 2)
        if len(parts) < 3 or parts[0] != "model" or not parts[1].isdigit() or int(parts[1]) >= backbone_layers:
            continue
        index, rest = int(parts[1]), parts[2]
        names = [f"{index}.{rest}"]
        prefix = getattr(layers[index], "raw_key_prefix", None)
        if prefix and rest.startswith(prefix):
            names += [rest] + raw_key_candidates(rest[len(prefix):])
        candidates[key] = names
    return candidates


def match_keys(src: Mapping[str, torch.Tensor], dst: Mapping[str, torch.Tensor],
               candidates: Mapping[str, list[str]], source: str = "<state dict>") -> TransferReport:
    """Pair destination keys with source tensors by name and shape (pure: nothing is copied).

    Args:
        src: normalised source ``{key: tensor}`` (see :func:`normalize_source`).
        dst: destination state dict; only the keys of ``candidates`` are considered.
        candidates: destination key -> source keys to try, best first.
        source: label for the report.
    """
    report = TransferReport(source=source, total=len(candidates))
    for dst_key, names in candidates.items():
        name = next((n for n in names if n in src), None)
        if name is None:
            report.skipped[dst_key] = REASON_MISSING
        elif tuple(src[name].shape) != tuple(dst[dst_key].shape):
            report.skipped[dst_key] = (f"shape mismatch src {tuple(src[name].shape)} vs dst "
                                       f"{tuple(dst[dst_key].shape)}")
        else:
            report.transferred.append(dst_key)
            report.source_keys[dst_key] = name
    return report


@torch.no_grad()
def apply_report(report: TransferReport, src: Mapping[str, torch.Tensor], module: nn.Module) -> None:
    """Copy the matched tensors of ``report`` into ``module`` in place (dtype/device of the destination kept)."""
    dst = module.state_dict(keep_vars=True)
    for dst_key in report.transferred:
        target = dst[dst_key]
        target.data.copy_(src[report.source_keys[dst_key]].to(device=target.device, dtype=target.dtype))


def transfer_backbone(src: Mapping[str, Any], model: nn.Module, backbone_layers: int | None = None,
                      source: str = "<state dict>") -> TransferReport:
    """Copy the backbone tensors of ``src`` into ``model`` (rows ``0 .. backbone_layers-1``); return the report.

    Args:
        src: a state dict with any of the supported key prefixes (module docstring); non-tensors are ignored.
        model: a ``DetectionModel``-like module with ``model`` (the layer sequence) and ``yaml``; DDP-wrapped ok.
        backbone_layers: number of backbone rows; default ``len(model.yaml['backbone'])``.
        source: label used in the report.

    Neck and head tensors are never touched. Nothing is logged and no error is raised for zero matches; see
    :func:`load_backbone_weights` for the CLI behaviour.
    """
    model = getattr(model, "module", model)
    backbone_layers = backbone_length(model) if backbone_layers is None else int(backbone_layers)
    normalised = normalize_source(src)
    dst = model.state_dict()
    report = match_keys(normalised, dst, backbone_candidates(model, backbone_layers), source)
    apply_report(report, normalised, model)
    return report


def read_weights(path: Union[str, Path]) -> Any:
    """Load a weights file without executing code: ``.safetensors`` via safetensors, else the safe torch loader."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.suffix.lower() == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as e:
            raise ImportError(f"{path}: reading .safetensors needs the 'safetensors' package") from e
        return load_file(str(path), device="cpu")
    from utils.checkpoint import torch_safe_load

    return torch_safe_load(path)


@dataclass
class PretrainedSource:
    """What a ``--weights`` file provides: its checkpoint dict, its model (if pickled) and a float32 state dict."""

    checkpoint: dict
    model: nn.Module | None
    state_dict: dict


def _float_tensors(state: Mapping[str, Any]) -> dict:
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items() if isinstance(v, torch.Tensor)}


def read_pretrained(weights: Union[str, Path]) -> PretrainedSource:
    """Read a ``--weights`` file with :func:`read_weights`: a checkpoint (pickled model) or a plain state dict.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file holds neither a model nor a state dict (the message lists its keys).
    """
    ckpt = read_weights(weights)
    if isinstance(ckpt, nn.Module):
        ckpt = {"model": ckpt}
    if not isinstance(ckpt, dict):
        raise ValueError(f"{weights}: expected a checkpoint dict, got {type(ckpt).__name__}")
    model = ckpt.get("model")
    if isinstance(model, nn.Module):
        return PretrainedSource(ckpt, model, _float_tensors(model.state_dict()))
    tensors = _float_tensors(ckpt.get("state_dict", ckpt))
    if not tensors:
        raise ValueError(f"{weights}: no model or state dict found (keys: {', '.join(map(str, list(ckpt)[:8]))})")
    return PretrainedSource(ckpt, None, tensors)


def pretrained_model_yaml(source: PretrainedSource, weights: Any) -> Any:
    """Return the architecture (``model.yaml`` dict) stored in a pickled checkpoint.

    Raises:
        ValueError: the weights are a plain state dict, so ``--cfg`` is needed to know the architecture.
    """
    if source.model is None or not hasattr(source.model, "yaml"):
        raise ValueError(f"--weights {weights} holds a plain state dict without an architecture; also pass "
                         f"--cfg (e.g. --cfg yolov5n.yaml)")
    return source.model.yaml


def intersect_dicts(source: dict, target: dict, exclude: Sequence[str] = ()) -> dict:
    """Return the entries of ``source`` whose key exists in ``target`` with the same shape, minus ``exclude``.

    A key is excluded when any string of ``exclude`` is a substring of it (e.g. ``'anchor'``).
    """
    return {k: v for k, v in source.items()
            if k in target and not any(x in k for x in exclude) and v.shape == target[k].shape}


def transfer_weights(model: nn.Module, state_dict: dict, exclude: Sequence[str] = (), source: str = "") -> int:
    """Whole-model transfer (``--weights``): load the same-name, same-shape tensors of ``state_dict`` into ``model``
    (non-strict) and log ``Transferred N/M items``; returns N."""
    target = model.state_dict()
    matched = intersect_dicts(state_dict, target, exclude=exclude)
    model.load_state_dict(matched, strict=False)
    LOGGER.info(f"Transferred {len(matched)}/{len(target)} items from {source}")
    return len(matched)


def _is_tensor_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and any(isinstance(v, torch.Tensor) for v in obj.values())


def extract_state_dict(obj: Any, source: str = "<checkpoint>") -> dict[str, torch.Tensor]:
    """Return the float state dict to transfer from a loaded file.

    A module gives ``module.float().state_dict()``; a dict whose values are tensors is used as is; otherwise the
    first usable entry of ``backbone``, ``ema``, ``model``, ``state_dict_ema``, ``model_ema``, ``state_dict``,
    ``encoder`` (a module or a tensor dict) is taken.

    Raises:
        ValueError: nothing usable was found (the message lists the file's top-level keys).
    """
    if isinstance(obj, nn.Module):
        return {k: v.float() if v.is_floating_point() else v for k, v in obj.state_dict().items()}
    if isinstance(obj, Mapping):
        if all(isinstance(v, torch.Tensor) for v in obj.values()) and obj:
            return dict(obj)
        for name in CONTAINER_KEYS:
            entry = obj.get(name)
            if isinstance(entry, nn.Module) or _is_tensor_dict(entry):
                return extract_state_dict(entry, source)
        if _is_tensor_dict(obj):
            return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        keys = ", ".join(map(str, list(obj)[:10]))
        raise ValueError(f"{source}: no model or state dict found (top-level keys: {keys}); expected a checkpoint "
                         f"with one of {CONTAINER_KEYS} or a plain state dict")
    raise ValueError(f"{source}: cannot read weights from a {type(obj).__name__}")


def load_backbone_weights(path: Union[str, Path], model: nn.Module,
                          backbone_layers: int | None = None) -> TransferReport:
    """Implement ``--backbone-weights PATH``: copy only backbone tensors from ``path`` into ``model`` and log it.

    Call it after any whole-model ``--weights`` transfer and after the model is fully built (so head bias
    initialisation has already run), and before the optimizer is created.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: no backbone tensor matched (the message gives the first expected and source keys).
    """
    state = extract_state_dict(read_weights(path), str(path))
    report = transfer_backbone(state, model, backbone_layers, source=str(path))
    if report.num_transferred == 0:
        raise ValueError(_nothing_matched_message(report, state, model))
    report.log()
    return report


def _nothing_matched_message(report: TransferReport, state: Mapping[str, Any], model: nn.Module) -> str:
    expected = ", ".join(list(report.skipped)[:3])
    found = ", ".join(list(state)[:3])
    reasons = {r.split(" src")[0] for r in report.skipped.values()}
    return (f"--backbone-weights {report.source}: 0/{report.total} backbone tensors matched ({', '.join(reasons)}). "
            f"Model backbone keys look like [{expected}], the file's keys look like [{found}]. Use a checkpoint of "
            f"the same backbone architecture (matching YAML 'backbone:' rows or a timm state dict for a timm row).")


def freeze_layers(model: nn.Module, freeze: Sequence[int]) -> list[str]:
    """Set ``requires_grad`` for every parameter: False for frozen layers, True for the rest; returns frozen names.

    ``freeze`` is upstream's ``--freeze``: one value N freezes layers ``0..N-1`` (``[10]`` = the YOLOv5 backbone,
    ``[0]`` = nothing); several values freeze exactly those layer indices.
    """
    indices = list(freeze) if len(freeze) > 1 else list(range(int(freeze[0]) if freeze else 0))
    prefixes = tuple(f"model.{i}." for i in indices)
    frozen = []
    for name, param in model.named_parameters():
        param.requires_grad = not (prefixes and name.startswith(prefixes))
        if not param.requires_grad:
            frozen.append(name)
            LOGGER.info(f"freezing {name}")
    return frozen


def freeze_backbone(model: nn.Module, backbone_layers: int | None = None) -> list[str]:
    """Set ``requires_grad=False`` on backbone parameters (what ``--freeze N`` does); return the frozen names."""
    model = getattr(model, "module", model)
    n = backbone_length(model) if backbone_layers is None else int(backbone_layers)
    prefixes = tuple(f"model.{i}." for i in range(n))
    frozen = []
    for name, param in model.named_parameters():
        if name.startswith(prefixes):
            param.requires_grad = False
            frozen.append(name)
    return frozen
