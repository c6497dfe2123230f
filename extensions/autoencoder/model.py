"""CSP-Darknet autoencoder for self-supervised backbone pretraining.

The **encoder** is the ``backbone:`` section of a detection YAML, built by :func:`models.builder.build_model`, so its
state-dict keys and shapes are exactly those of :class:`models.yolo.DetectionModel`'s backbone (``model.{i}.*``).
Any backbone the builder accepts works: yolov5n..x, the P6/P7 variants and the timm/ConvNeXt rows of
``extensions/cfg/convnext_yolov5*.yaml``.

The **decoder** ("transpose CSP-Darknet") mirrors the encoder's stages from the deepest to the shallowest:

1. ``Conv`` 3x3 (Conv+BN+SiLU) from the bottleneck (the last backbone layer) to the deepest stage's width;
2. per stage, deep to shallow: a ``C3`` with as many bottlenecks as the encoder used at that stride, then
   (with ``skips=True``) the encoder stage output is **added** (a U-Net with sums), then :class:`UpConv`
   (ConvTranspose2d k3 s2 p1 op1 + BN + SiLU, exactly doubling the size) to the next stage's width;
3. strides without an encoder stage (the stem, or strides 2-4 of ConvNeXt) get an ``UpConv`` only;
4. a 1x1 ``Conv2d`` to the image channels and a sigmoid, so the output lies in the input's range [0, 1].

A *stage* is the last layer at each stride; the stage at the bottleneck's stride is the layer before the
bottleneck (yolov5s: layers 2, 4, 6, 8 at strides 4, 8, 16, 32, the SPPF layer 9 is the bottleneck). Strides
below ``min_skip_stride`` (4) get no skip (the stem conv). ``skips=False`` keeps the same layers but drops the sums,
so every bit of the reconstruction must pass through the bottleneck; the two modes share parameter names.

Shapes: input (B, ch, H, W) float in [0, 1] with H and W multiples of :attr:`Autoencoder.stride` (32 for P5, 64
for P6); output (B, ch, H, W) in [0, 1].
"""

from __future__ import annotations

from collections import OrderedDict
from copy import deepcopy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import torch
import torch.nn as nn

from models.builder import build_model
from models.common import C3, Conv
from utils.checkpoint import register_safe_globals
from utils.files import check_yaml, yaml_load
from utils.torch_utils import initialize_weights

PROBE_SIZE = 256  # dry-run size used to measure each layer's stride (a multiple of 128, so P7 works too)
MIN_CHANNELS = 8  # narrowest decoder level without an encoder stage


def load_cfg(cfg: Union[str, Path, dict]) -> dict:
    """Return a deep copy of a detection model YAML (path, bare name such as ``yolov5s.yaml``, or dict)."""
    if isinstance(cfg, dict):
        return deepcopy(cfg)
    return yaml_load(check_yaml(cfg))


def backbone_only(cfg: dict) -> dict:
    """Return a copy of ``cfg`` whose ``head:`` is empty, so the builder builds exactly the backbone rows.

    Raises:
        ValueError: the YAML has no ``backbone:`` rows.
    """
    if not cfg.get("backbone"):
        raise ValueError("model YAML has no 'backbone:' rows; the autoencoder encoder is the backbone section")
    out = deepcopy(cfg)
    out["head"] = []
    return out


class Encoder(nn.Module):
    """The backbone rows of a detection YAML; ``state_dict()`` keys are ``model.{i}.*`` as in DetectionModel.

    Attributes:
        model: the layers (``nn.Sequential``, each with ``i, f, type, np``). save: indices whose outputs later rows
            read. yaml: the full detection YAML (``extensions.transfer.backbone_length`` reads its backbone).
    """

    def __init__(self, cfg: Union[str, Path, dict] = "yolov5s.yaml", ch: int = 3):
        super().__init__()
        self.yaml = load_cfg(cfg)
        self.yaml["ch"] = self.yaml.get("ch", ch)
        name = str(cfg) if not isinstance(cfg, dict) else "<dict>"
        built = build_model(backbone_only(self.yaml), ch=[self.yaml["ch"]], yaml_file=name, verbose=False)
        self.model, self.save, self.channels = built.model, built.save, built.channels

    def forward(self, x: torch.Tensor) -> list:
        """Return every layer's output, in layer order (tensors, or lists for multi-output rows such as timm)."""
        outputs: list = []
        for layer in self.model:
            if layer.f != -1:
                x = outputs[layer.f] if isinstance(layer.f, int) else [x if j == -1 else outputs[j] for j in layer.f]
            x = layer(x)
            outputs.append(x)
        return outputs


@dataclass
class EncoderLayout:
    """Where the encoder's stages are, measured by a dry run.

    Attributes:
        strides: per layer, its output stride (None for non-tensor outputs such as a timm feature list, and for
            transient sizes such as yolov3-tiny's padded 9x9 map).
        channels: per layer, its output channels (None where the stride is None).
        bottleneck: index of the last layer (the decoder's input). stride: the bottleneck's stride.
        skip_layers: stride -> layer whose output is added at that decoder level.
        repeats: stride -> number of CSP bottlenecks the encoder used at that stride (mirrored by the decoder).
    """

    strides: list
    channels: list
    bottleneck: int
    stride: int
    skip_layers: dict = field(default_factory=dict)
    repeats: dict = field(default_factory=dict)


def _csp_repeats(layer: nn.Module) -> int:
    """Number of inner blocks of a CSP-style layer (C3, C3Ghost, BottleneckCSP ...: an ``m`` Sequential), else 0."""
    inner = getattr(layer, "m", None)
    return len(inner) if isinstance(inner, nn.Sequential) else 0


def _shape(output) -> tuple:
    return tuple(output.shape) if isinstance(output, torch.Tensor) else ()


def _power_of_two_stride(output, size: int) -> int | None:
    """Stride of a square feature map for a ``size`` input, or None (not a tensor, or not a power-of-two stride)."""
    if not isinstance(output, torch.Tensor) or output.dim() != 4 or size % output.shape[-1]:
        return None
    stride = size // output.shape[-1]
    return stride if stride & (stride - 1) == 0 else None


@torch.no_grad()
def measure_layout(encoder: Encoder, ch: int, min_skip_stride: int = 4, size: int = PROBE_SIZE) -> EncoderLayout:
    """Dry-run ``encoder`` on a ``size`` x ``size`` zero image and locate its stages (see :class:`EncoderLayout`).

    Raises:
        ValueError: the last layer is not a feature map at a power-of-two stride.
    """
    was_training = encoder.training
    encoder.eval()
    outputs = encoder(torch.zeros(1, ch, size, size))
    encoder.train(was_training)
    strides = [_power_of_two_stride(o, size) for o in outputs]
    channels = [o.shape[1] if s is not None else None for o, s in zip(outputs, strides, strict=True)]
    bottleneck = len(outputs) - 1
    if strides[bottleneck] is None:
        raise ValueError(f"the last backbone row must output one feature map at a power-of-two stride (the "
                         f"autoencoder's bottleneck), got {type(outputs[-1]).__name__} {_shape(outputs[-1])}")
    layout = EncoderLayout(strides, channels, bottleneck, strides[bottleneck])
    for i, (stride, layer) in enumerate(zip(strides, encoder.model, strict=True)):
        if stride is None:
            continue
        layout.repeats[stride] = layout.repeats.get(stride, 0) + _csp_repeats(layer)
        if i != bottleneck and stride >= min_skip_stride:
            layout.skip_layers[stride] = i
    return layout


class UpConv(nn.Module):
    """ConvTranspose2d(k=3, s=2, p=1, output_padding=1) + BatchNorm + SiLU: (B, c1, H, W) -> (B, c2, 2H, 2W)."""

    def __init__(self, c1: int, c2: int):
        super().__init__()
        self.conv = nn.ConvTranspose2d(c1, c2, 3, 2, padding=1, output_padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Upsample (B, c1, H, W) to (B, c2, 2H, 2W)."""
        return self.act(self.bn(self.conv(x)))


class DecoderLevel(nn.Module):
    """One decoder stride: optional C3 (``n`` blocks), optional skip sum, then an optional UpConv to ``c_next``.

    Attributes:
        skip_layer: encoder layer index whose output is added after the C3 (None: no skip at this stride).
    """

    def __init__(self, c: int, n: int, skip_layer: int | None, c_next: int | None):
        super().__init__()
        self.csp = C3(c, c, n) if n > 0 else nn.Identity()
        self.skip_layer = skip_layer
        self.up = UpConv(c, c_next) if c_next is not None else nn.Identity()

    def forward(self, x: torch.Tensor, features: list, skips: bool) -> torch.Tensor:
        """Decode one stride: ``x`` (B, c, H, W), ``features`` the encoder outputs by layer index."""
        x = self.csp(x)
        if skips and self.skip_layer is not None:
            x = x + features[self.skip_layer]
        return self.up(x)


def _level_width(layout: EncoderLayout, stride: int, previous: int | None) -> int:
    """Decoder width at ``stride``: the skip's width, the bottleneck's at the top, the encoder's, or half the last."""
    skip = layout.skip_layers.get(stride)
    if skip is not None:
        return layout.channels[skip]
    if previous is None:
        return layout.channels[layout.bottleneck]
    own = [c for s, c in zip(layout.strides, layout.channels, strict=True) if s == stride]
    return own[-1] if own else max(previous // 2, MIN_CHANNELS)


def _level_plan(layout: EncoderLayout) -> list[tuple[int, int, int, int | None]]:
    """Return ``(stride, channels, csp repeats, skip layer)`` per decoder level, deep to shallow, down to stride 1."""
    plan, width, stride = [], None, layout.stride
    while stride >= 1:
        skip = layout.skip_layers.get(stride)
        width = _level_width(layout, stride, width)
        repeats = max(layout.repeats.get(stride, 0), 1) if skip is not None else 0
        plan.append((stride, width, repeats, skip))
        stride //= 2
    return plan


class Decoder(nn.Module):
    """Transpose CSP-Darknet decoder built from an :class:`EncoderLayout` (see the module docstring).

    Shapes: the encoder's outputs (bottleneck (B, C, H/s, W/s)) -> image (B, ch, H, W) in [0, 1].
    """

    def __init__(self, layout: EncoderLayout, ch: int = 3):
        super().__init__()
        plan = _level_plan(layout)
        self.bottleneck = layout.bottleneck
        self.stem = Conv(layout.channels[layout.bottleneck], plan[0][1], 3, 1)
        widths = [c for _, c, _, _ in plan]
        self.levels = nn.ModuleList(
            DecoderLevel(c, n, skip, widths[k + 1] if k + 1 < len(plan) else None)
            for k, (_, c, n, skip) in enumerate(plan))
        self.head = nn.Conv2d(widths[-1], ch, 1)

    def forward(self, features: list, skips: bool = True) -> torch.Tensor:
        """Reconstruct (B, ch, H, W) in [0, 1] from the encoder outputs ``features`` (by layer index)."""
        x = self.stem(features[self.bottleneck])
        for level in self.levels:
            x = level(x, features, skips)
        return torch.sigmoid(self.head(x))


class Autoencoder(nn.Module):
    """Backbone encoder + transpose-CSP decoder; ``forward(x)`` returns the reconstruction of ``x``.

    Args:
        cfg: detection model YAML (path, bare name or dict); only its ``backbone:`` rows are built.
        ch: image channels. skips: add the encoder stage outputs in the decoder (the original design); False makes
            the bottleneck carry everything. min_skip_stride: shallowest stride that gets a skip.

    Attributes:
        encoder (:class:`Encoder`), decoder (:class:`Decoder`), layout (:class:`EncoderLayout`), yaml (the full
        detection YAML), skips, stride (int, input sizes must be multiples of it).
    """

    def __init__(self, cfg: Union[str, Path, dict] = "yolov5s.yaml", ch: int = 3, skips: bool = True,
                 min_skip_stride: int = 4):
        super().__init__()
        self.encoder = Encoder(cfg, ch)
        self.yaml = self.encoder.yaml
        self.ch = self.yaml["ch"]
        self.layout = measure_layout(self.encoder, self.ch, min_skip_stride)
        self.decoder = Decoder(self.layout, self.ch)
        self.skips = bool(skips)
        self.stride = int(self.layout.stride)
        initialize_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruct ``x`` (B, ch, H, W), H and W multiples of :attr:`stride`; output in [0, 1]."""
        h, w = x.shape[-2:]
        if h % self.stride or w % self.stride:
            raise ValueError(f"autoencoder input size {h}x{w} must be a multiple of the model stride {self.stride}")
        return self.decoder(self.encoder(x), self.skips)

    @property
    def backbone_layers(self) -> int:
        """Number of backbone rows (``--freeze`` value that freezes exactly this encoder in the detector)."""
        return len(self.encoder.model)

    def backbone_state_dict(self) -> OrderedDict[str, torch.Tensor]:
        """Return the encoder's tensors (detached fp32 contiguous copies for floating ones) keyed ``model.{i}.*``."""
        return OrderedDict((k, v.detach().float().clone(memory_format=torch.contiguous_format)
                            if v.is_floating_point() else v.detach().clone())
                           for k, v in self.encoder.state_dict().items())


register_safe_globals(Autoencoder, Encoder, Decoder, DecoderLevel, UpConv)
