"""timm backbones (e.g. ConvNeXt) as YAML rows: ``TimmBackbone`` + ``Index`` selectors, registered on import.

A model YAML that lists ``imports: [extensions.timm_backbone]`` may use::

    backbone:
      - [-1, 1, TimmBackbone, [convnext_tiny, [1, 2, 3]]]  # 0: list of 3 maps, strides 8/16/32 (192/384/768 ch)
      - [0, 1, Index, [0]]                                  # 1: P3/8 (192 channels)
      - [-1, 1, Conv, [256, 1, 1]]                          # 2: 1x1 Conv+BN+SiLU adapter, width-scaled
      ...

``TimmBackbone`` wraps ``timm.create_model(name, features_only=True, out_indices=...)`` and returns a list of
feature maps. Its channels and strides come from timm's ``feature_info`` (never hard-coded): the builder receives
a :class:`FeatureChannels` width so each ``Index(k)`` row knows the width of level ``k``. Channel alignment to the
neck is done with ordinary ``Conv`` rows, so it scales with ``width_multiple``. YOLOv5 feeds RGB in [0, 1];
the module applies the timm model's ``pretrained_cfg`` mean/std itself.

Row arguments: ``[model_name, out_indices=(1, 2, 3), pretrained=False, drop_path_rate=0.0, normalize=True]``.
``pretrained`` (also a top-level YAML key ``pretrained:``, overridden by the env var ``YOLOV5_TIMM_PRETRAINED``,
precedence env > top-level key > row argument) is one of:

- ``false``: random initialisation;
- ``true``: timm's default weights, which must already be on disk (Hugging Face cache or torch hub cache). Nothing
  is ever downloaded: a missing file raises :class:`PretrainedWeightsNotFoundError` at once, naming the file and
  where to put it;
- a path to a ``.pth``/``.pt``/``.bin``/``.safetensors`` timm state dict, read without executing code.

Only tensors of the backbone module come from the file; neck and head keep their initialisation.

Checkpoints: models containing a ``TimmBackbone`` are saved like every other model (pickled module, upstream
checkpoint layout), so ``load_model``, ``detect.py``, ``val.py`` and torch.hub ``custom`` need no special case. On
import this module adds to the safe loader's allow-list ``TimmBackbone``, ``Index``, timm's ``FeatureInfo`` and
``Format`` and every ``nn.Module`` subclass defined in the installed timm package that does not customise unpickling
(``__setstate__``/``__reduce__``): unpickling such a class only restores attributes. The safe loader imports this
module automatically when a checkpoint names ``extensions.timm_backbone.*``. Storing a state dict plus YAML instead
was rejected because it would break the upstream checkpoint layout every consumer relies on.

Norm layers: ``initialize_weights`` only changes ``nn.BatchNorm2d`` (eps 1e-3, momentum 0.03). ConvNeXt uses
LayerNorm, so it is untouched; BN-based timm models (e.g. ResNets) get YOLOv5's BN settings, like any YOLOv5 layer.
"""

from __future__ import annotations

import difflib
import os
import sys
from functools import lru_cache
from pathlib import Path
from typing import Sequence, Union
from urllib.parse import urlparse

import timm
import torch
import torch.nn as nn

from extensions.transfer import (
    IGNORED_SUFFIXES,
    apply_report,
    extract_state_dict,
    match_keys,
    normalize_source,
    raw_key_candidates,
    read_weights,
)
from models.registry import BuildContext, add_module
from utils.checkpoint import register_safe_globals
from utils.logging import LOGGER

ENV_PRETRAINED = "YOLOV5_TIMM_PRETRAINED"
WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")
HF_FILENAMES = ("model.safetensors", "pytorch_model.bin")
PretrainedArg = Union[bool, str, os.PathLike, None]


class PretrainedWeightsNotFoundError(FileNotFoundError):
    """``pretrained: true`` was asked for but timm's weights are not on disk (nothing is downloaded)."""


class FeatureChannels(int):
    """Width of a multi-output row: the int value is the last level's channels, ``levels`` lists every level."""

    levels: tuple[int, ...]
    strides: tuple[int, ...]

    def __new__(cls, levels: Sequence[int], strides: Sequence[int]) -> FeatureChannels:
        """Return the channel count of the last level as an int that also carries every level's channels and strides."""
        obj = super().__new__(cls, int(levels[-1]))
        obj.levels, obj.strides = tuple(int(c) for c in levels), tuple(int(s) for s in strides)
        return obj


def check_timm_model(model_name: str) -> None:
    """Raise ``ValueError`` with close matches when timm does not know ``model_name`` (tags like ``.fb_in1k`` ok)."""
    if not timm.is_model(model_name):
        close = difflib.get_close_matches(model_name.split(".")[0], timm.list_models(), n=5)
        hint = f"; close matches: {', '.join(close)}" if close else ""
        raise ValueError(f"unknown timm model {model_name!r}{hint}")


@lru_cache(maxsize=32)
def feature_contract(model_name: str, out_indices: tuple[int, ...], in_chans: int = 3) -> tuple[list[int], list[int]]:
    """Return ``(channels, strides)`` of the selected feature levels, read from timm's ``feature_info``.

    The model is instantiated on the ``meta`` device, so no memory is allocated and no weights are initialised.
    """
    check_timm_model(model_name)
    with torch.device("meta"):
        model = timm.create_model(model_name, pretrained=False, features_only=True, out_indices=out_indices,
                                  in_chans=in_chans)
    return list(model.feature_info.channels()), list(model.feature_info.reduction())


def parse_pretrained_value(value: PretrainedArg) -> Union[bool, str]:
    """Map a YAML/env value to ``False``, ``True`` or a path string (``'0'/'false'/'no'/''`` are False)."""
    if value is None or isinstance(value, bool):
        return bool(value)
    text = str(value).strip()
    if text.lower() in ("", "0", "false", "no", "off", "none"):
        return False
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    return text


def _hf_hub_cache() -> Path:
    """Return the Hugging Face hub cache directory from the environment, read now (not at import)."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def _hf_cached_file(repo_id: str, filename: str) -> Path | None:
    """Return ``filename`` of ``repo_id`` from the local HF cache layout (``refs/<rev>`` -> snapshot), or None."""
    repo, _, revision = repo_id.partition("@")
    repo_dir = _hf_hub_cache() / f"models--{repo.replace('/', '--')}"
    ref_file = repo_dir / "refs" / (revision or "main")
    commit = ref_file.read_text().strip() if ref_file.is_file() else revision
    if commit and (repo_dir / "snapshots" / commit / filename).is_file():
        return repo_dir / "snapshots" / commit / filename
    found = sorted((repo_dir / "snapshots").glob(f"*/{filename}")) if not revision else []
    return found[0] if found else None


def _expected_locations(model_name: str) -> tuple[list[Path], list[str]]:
    """Return (files that would satisfy ``pretrained: true``, human-readable descriptions of where they go)."""
    cfg = timm.models.get_pretrained_cfg(model_name)
    files: list[Path] = []
    where: list[str] = []
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if hub_id:
        names = (cfg.hf_hub_filename,) if getattr(cfg, "hf_hub_filename", None) else HF_FILENAMES
        for name in names:
            cached = _hf_cached_file(hub_id, name)
            files += [cached] if cached else []
        repo_dir = _hf_hub_cache() / f"models--{hub_id.split('@')[0].replace('/', '--')}"
        where.append(f"{repo_dir}/snapshots/<commit>/{names[0]} (Hugging Face cache; download "
                     f"https://huggingface.co/{hub_id.split('@')[0]}/resolve/main/{names[0]})")
    url = getattr(cfg, "url", None) if cfg is not None else None
    if url:
        target = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)
        files += [target] if target.is_file() else []
        where.append(f"{target} (torch hub cache; download {url})")
    return files, where


def find_cached_weights(model_name: str) -> Path | None:
    """Return the locally cached default weights of a timm model (HF cache, then torch hub cache), or None."""
    return next(iter(_expected_locations(model_name)[0]), None)


def resolve_pretrained(value: PretrainedArg, model_name: str) -> Path | None:
    """Return the weights file for a ``pretrained`` value, or None for False. Never touches the network.

    Raises:
        PretrainedWeightsNotFoundError: ``True`` but nothing cached; the message names the file and where to put it.
        FileNotFoundError / ValueError: a path that does not exist / has an unsupported suffix.
    """
    value = parse_pretrained_value(value)
    if value is False:
        return None
    if value is True:
        cached = find_cached_weights(model_name)
        if cached is not None:
            return cached
        raise PretrainedWeightsNotFoundError(_not_cached_message(model_name))
    path = Path(value).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights file for timm model {model_name!r} not found: {value} "
                                f"(relative paths are resolved from {os.getcwd()})")
    if path.suffix.lower() not in WEIGHT_SUFFIXES:
        raise ValueError(f"pretrained weights file {path}: expected one of {WEIGHT_SUFFIXES}")
    return path


def _not_cached_message(model_name: str) -> str:
    where = _expected_locations(model_name)[1]
    places = "\n".join(f"  - {w}" for w in where) or "  - (timm lists no default weights for this model)"
    return (f"pretrained: true for timm model {model_name!r} needs its weights on disk and this project never "
            f"downloads. Expected one of:\n{places}\nFix: download the file on a machine with network, then either "
            f"put it at one of the locations above, set 'pretrained: /path/to/file' in the model YAML, or export "
            f"{ENV_PRETRAINED}=/path/to/file. Use 'pretrained: false' (or {ENV_PRETRAINED}=0) to train from scratch.")


class TimmBackbone(nn.Module):
    """A timm ``features_only`` model as one YAML row; returns the selected feature maps as a list.

    Args:
        c1: input channels (3 for RGB).
        model_name: timm model name, optionally with a pretrained tag (``'convnext_tiny.fb_in1k'``).
        out_indices: feature levels to return (ConvNeXt ``(1, 2, 3)`` = strides 8, 16, 32).
        pretrained: False, True (cached timm weights) or a weights file; see the module docstring.
        drop_path_rate: stochastic depth rate of the timm model (0 disables).
        normalize: apply the model's pretrained mean/std to the RGB [0, 1] input.

    Shapes: input (B, c1, H, W) float in [0, 1]; output ``[(B, channels[k], H / strides[k], W / strides[k])]``.
    """

    raw_key_prefix = "body."  # extensions.transfer maps raw timm state-dict keys under this prefix

    def __init__(self, c1: int = 3, model_name: str = "convnext_tiny", out_indices: Sequence[int] = (1, 2, 3),
                 pretrained: PretrainedArg = False, drop_path_rate: float = 0.0, normalize: bool = True):
        super().__init__()
        check_timm_model(model_name)
        weights = resolve_pretrained(pretrained, model_name)
        self.model_name = model_name
        self.out_indices = tuple(int(i) for i in out_indices)
        extra = {"drop_path_rate": float(drop_path_rate)} if drop_path_rate else {}
        self.body = timm.create_model(model_name, pretrained=False, features_only=True, out_indices=self.out_indices,
                                      in_chans=c1, **extra)
        self.channels = list(self.body.feature_info.channels())
        self.strides = list(self.body.feature_info.reduction())
        mean, std = _input_normalization(self.body, c1, normalize)
        self.register_buffer("mean", mean.view(1, c1, 1, 1), persistent=False)
        self.register_buffer("std", std.view(1, c1, 1, 1), persistent=False)
        self.pretrained_file = str(weights) if weights is not None else None
        if weights is not None:
            self.load_pretrained(weights)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return the backbone's feature maps, one per level, for x normalised with the backbone's mean and std."""
        return self.body((x - self.mean) / self.std)

    def load_pretrained(self, path: Union[str, Path]) -> int:
        """Load timm-format weights from ``path`` into the backbone; return the number of tensors loaded.

        Raises:
            ValueError: no tensor of the file matches this backbone by name and shape.
        """
        state = normalize_source(extract_state_dict(read_weights(path), str(path)))
        dst = self.body.state_dict()
        candidates = {k: raw_key_candidates(k) for k in dst if not k.endswith(IGNORED_SUFFIXES)}
        report = match_keys(state, dst, candidates, source=str(path))
        if report.num_transferred == 0:
            raise ValueError(f"{path}: no tensor matches timm model {self.model_name!r} (expected keys like "
                             f"{list(dst)[:2]}, file has {list(state)[:2]})")
        apply_report(report, state, self.body)
        LOGGER.info(f"{self.model_name}: loaded {report.num_transferred}/{report.total} pretrained tensors from {path}")
        for key, reason in list(report.skipped.items())[:20]:
            LOGGER.warning(f"  {key}: {reason}")
        return report.num_transferred


def _input_normalization(body: nn.Module, in_chans: int, normalize: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the (mean, std) the model was pretrained with, or (0, 1) when disabled or not per-channel."""
    cfg = getattr(body, "pretrained_cfg", None) or {}
    mean, std = cfg.get("mean"), cfg.get("std")
    if normalize and mean is not None and std is not None and len(mean) == in_chans == len(std):
        return torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)
    if normalize and mean is not None:
        LOGGER.warning(f"timm mean/std has {len(mean)} channels but the input has {in_chans}; not normalising")
    return torch.zeros(in_chans), torch.ones(in_chans)


class Index(nn.Module):
    """Select one tensor of a list-valued input (one level of a ``TimmBackbone``); no parameters."""

    def __init__(self, index: int = 0):
        super().__init__()
        self.index = int(index)

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        """Return the ``index``-th tensor of the input list."""
        return x[self.index]


def _row_options(args: list, ctx: BuildContext) -> tuple[str, tuple[int, ...], PretrainedArg, float, bool]:
    """Return (name, out_indices, pretrained, drop_path_rate, normalize) with YAML/env overrides applied."""
    if not args or not isinstance(args[0], str):
        raise ValueError("TimmBackbone args must start with a timm model name, e.g. [convnext_tiny, [1, 2, 3]]")
    name = args[0]
    out_indices = tuple(int(i) for i in (args[1] if len(args) > 1 else (1, 2, 3)))
    pretrained = args[2] if len(args) > 2 else False
    drop_path = float(args[3]) if len(args) > 3 else 0.0
    normalize = bool(args[4]) if len(args) > 4 else True
    pretrained = ctx.yaml.get("pretrained", pretrained)
    pretrained = os.environ.get(ENV_PRETRAINED, pretrained)
    drop_path = float(ctx.yaml.get("drop_path_rate", drop_path))
    return name, out_indices, pretrained, drop_path, normalize


def _parse_timm_backbone(args: list, ch_in: list[int], ctx: BuildContext) -> tuple[list, int]:
    name, out_indices, pretrained, drop_path, normalize = _row_options(args, ctx)
    channels, strides = feature_contract(name, out_indices, int(ch_in[0]))
    weights = resolve_pretrained(pretrained, name)  # fail fast, before any weights are allocated
    resolved = str(weights) if weights is not None else False
    return [int(ch_in[0]), name, out_indices, resolved, drop_path, normalize], FeatureChannels(channels, strides)


def _parse_index(args: list, ch_in: list[int], ctx: BuildContext) -> tuple[list, int]:
    levels = getattr(ch_in[0], "levels", None)
    if levels is None:
        raise ValueError("Index selects one output of a multi-output row: its 'from' must be a TimmBackbone row")
    k = int(args[0]) if args else 0
    if not -len(levels) <= k < len(levels):
        raise ValueError(f"Index {k} is out of range for a row with {len(levels)} feature levels")
    return [k], levels[k]


def _unpickles_plainly(cls: type) -> bool:
    """True when no class between ``cls`` and ``nn.Module`` customises unpickling."""
    hooks = ("__setstate__", "__reduce__", "__reduce_ex__", "__new__")
    return not any(h in vars(base) for base in cls.__mro__ if base not in (nn.Module, object) for h in hooks)


def timm_safe_globals() -> list[type]:
    """Return the timm classes a pickled ``TimmBackbone`` may reference (see the module docstring)."""
    from timm.layers import Format
    from timm.models._features import FeatureInfo

    classes: set[type] = {FeatureInfo, Format}
    for module_name, module in list(sys.modules.items()):
        if module is None or not (module_name == "timm" or module_name.startswith("timm.")):
            continue
        for value in vars(module).values():
            if (isinstance(value, type) and issubclass(value, nn.Module) and value.__module__.startswith("timm")
                    and _unpickles_plainly(value)):
                classes.add(value)
    return sorted(classes, key=lambda c: f"{c.__module__}.{c.__qualname__}")


add_module("TimmBackbone", TimmBackbone, role="custom", parse=_parse_timm_backbone)
add_module("Index", Index, role="custom", parse=_parse_index)
register_safe_globals(TimmBackbone, Index, *timm_safe_globals())
