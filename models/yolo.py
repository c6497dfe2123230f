"""YOLOv5 heads and models (pickle surface), plus ``python models/yolo.py --cfg yolov5s.yaml``.

Checkpoints pickle ``DetectionModel`` (older ones ``Model``) and ``Detect`` with their instance attributes, so the
names below are frozen: ``Detect.{nc, no, nl, na, grid, anchor_grid, anchors, m, inplace, stride}`` and
``DetectionModel.{yaml, yaml_file, model, save, names, inplace, stride}``; each layer of ``model`` carries
``i, f, type, np``.
"""

from __future__ import annotations

import argparse
import math
import sys
from copy import deepcopy
from pathlib import Path
from typing import Any, Optional, Union

import torch
import torch.nn as nn

if __name__ == "__main__":  # `python models/yolo.py ...` from any cwd: run the CLI of the importable module, so
    # the classes are models.yolo.* (not __main__.*) and register only once
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from models.yolo import main, parse_opt

    main(parse_opt())
    raise SystemExit(0)

from models.builder import build_model
from models.common import Classify, Conv, DWConv, Proto
from models.registry import add_module
from utils.autoanchor import check_anchor_order
from utils.checkpoint import allow_module_classes
from utils.cpu_fast import PackableConv, packed_kernel
from utils.files import check_yaml, yaml_load
from utils.logging import LOGGER
from utils.torch_utils import (
    fuse_conv_and_bn,
    initialize_weights,
    is_tracing,
    layer_flops,
    model_info,
    scale_img,
    time_sync,
)


class Detect(nn.Module):
    """Anchor-based detection head: one 1x1 Conv per level and the YOLOv5 box decode.

    Training returns the raw per-level tensors (bs, na, ny, nx, no). Inference returns
    ``(cat(decoded), raw)`` where decoded rows are ``[x, y, w, h, obj, cls...]`` in input pixels (xywh), or
    ``(cat,)`` when ``export`` is set. ``anchors`` is stored in grid units (pixels / stride).
    """

    stride = None
    dynamic = False
    export = False

    def __init__(self, nc: int = 80, anchors: Any = (), ch: tuple = (), inplace: bool = True):
        super().__init__()
        self.nc = nc
        self.no = nc + 5
        self.nl = len(anchors)
        self.na = len(anchors[0]) // 2
        self.grid = [torch.empty(0) for _ in range(self.nl)]
        self.anchor_grid = [torch.empty(0) for _ in range(self.nl)]
        self.register_buffer("anchors", torch.tensor(anchors).float().view(self.nl, -1, 2))
        self.m = nn.ModuleList(nn.Conv2d(x, self.no * self.na, 1) for x in ch)
        self.inplace = inplace

    def forward(self, x: list[torch.Tensor]):
        """Training: the raw per-level (bs, na, ny, nx, no) outputs; inference: ``(decoded, raw)`` (see the class)."""
        for i in range(self.nl):
            x[i] = self._level_conv(i, x[i])
            bs, _, ny, nx = x[i].shape
            x[i] = x[i].view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous()
        if self.training:
            return x
        for i in range(self.nl):
            if self.dynamic or self.grid[i].shape[2:4] != x[i].shape[2:4]:
                self.grid[i], self.anchor_grid[i] = self._make_grid(x[i].shape[3], x[i].shape[2], i)
        if self._decodes_in_place():
            z = self._decode_levels_in_place(x)
        else:
            z = torch.cat([self._decode(xi, i).view(xi.shape[0], -1, self.no) for i, xi in enumerate(x)], 1)
        return (z,) if self.export else (z, x)

    def _level_conv(self, i: int, xi: torch.Tensor) -> torch.Tensor:
        """The 1x1 output convolution of level ``i``; a packed bf16 kernel when the CPU fast path installed one."""
        kernel = packed_kernel(self.m[i], xi)  # CPU bf16 inference (utils/cpu_fast.py)
        return kernel(xi) if kernel is not None else self.m[i](xi)

    def packable_convs(self) -> list[PackableConv]:
        """The per-level 1x1 output convolutions (no activation), packed by the CPU fast path on fused models."""
        return [PackableConv(conv, conv, None, head=True) for conv in self.m if isinstance(conv, nn.Conv2d)]

    def _decodes_in_place(self) -> bool:
        """True when the levels can be decoded straight into the output tensor.

        That needs no autograd recording (the decode overwrites its own intermediates), no export or tracing
        (traced graphs keep the out-of-place ops) and this class's ``_decode`` formula (subclasses that override
        ``_decode`` keep using it).
        """
        return (not torch.is_grad_enabled() and not self.export and not is_tracing()
                and type(self)._decode is Detect._decode)

    def _decode(self, xi: torch.Tensor, i: int) -> torch.Tensor:
        """Decode one level (bs, na, ny, nx, no) of logits to ``[xywh px, obj, cls...]`` probabilities.

        The logits are first cast to the grid's dtype, so under bf16/fp16 autocast the sigmoid and the grid
        arithmetic run in fp32 (a ``.half()`` model keeps decoding in fp16, as upstream).
        """
        xy, wh, conf = xi.to(self.grid[i].dtype).sigmoid().split((2, 2, self.nc + 1), 4)
        xy = (xy * 2 + self.grid[i]) * self.stride[i]
        wh = (wh * 2) ** 2 * self.anchor_grid[i]
        return torch.cat((xy, wh, conf), 4)

    def _decode_levels_in_place(self, x: list[torch.Tensor]) -> torch.Tensor:
        """``_decode`` of every level written into one (bs, sum(na*ny*nx), no) tensor, in the grid's dtype.

        The same operations in the same order as ``_decode`` (bit-identical results), without its temporaries:
        each level is cast once into its rows of the output, then sigmoid and the box arithmetic run in place.
        """
        rows = [xi.shape[1] * xi.shape[2] * xi.shape[3] for xi in x]
        z = x[0].new_empty((x[0].shape[0], sum(rows), self.no), dtype=self.grid[0].dtype)
        for i, (xi, zi) in enumerate(zip(x, z.split(rows, 1), strict=True)):
            zi = zi.view(xi.shape)
            zi.copy_(xi).sigmoid_()
            zi[..., :2].mul_(2).add_(self.grid[i]).mul_(self.stride[i])
            zi[..., 2:4].mul_(2).pow_(2).mul_(self.anchor_grid[i])
        return z

    def _make_grid(self, nx: int = 20, ny: int = 20, i: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the cell offsets (minus 0.5) and anchor sizes in pixels, each (1, na, ny, nx, 2)."""
        d, t = self.anchors[i].device, self.anchors[i].dtype
        shape = (1, self.na, ny, nx, 2)
        yv, xv = torch.meshgrid(torch.arange(ny, device=d, dtype=t), torch.arange(nx, device=d, dtype=t),
                                indexing="ij")
        grid = torch.stack((xv, yv), 2).expand(shape) - 0.5
        anchor_grid = (self.anchors[i] * self.stride[i]).view((1, self.na, 1, 1, 2)).expand(shape)
        return grid, anchor_grid

    def _apply_to_tensors(self, fn) -> None:
        """Apply a tensor function (``.to``, ``.half`` ...) to ``stride`` and drop the grid caches.

        The caches are rebuilt from ``anchors`` (already converted) on the next forward; converting them instead
        would fail for ``.to(memory_format=torch.channels_last)`` because they are 5-D.
        """
        if self.stride is not None:
            self.stride = fn(self.stride)
        self.grid = [self.anchors.new_empty(0) for _ in range(self.nl)]
        if isinstance(self.anchor_grid, list):
            self.anchor_grid = [self.anchors.new_empty(0) for _ in range(self.nl)]

    def setup_model(self, model: DetectionModel, ch: int) -> None:
        """Compute strides with a 256 px dry run, order and scale the anchors, and initialise biases."""
        s = 256
        self.inplace = model.inplace
        out = model.forward(torch.zeros(1, ch, s, s))
        out = out[0] if isinstance(out, tuple) else out
        self.stride = torch.tensor([s / x.shape[-2] for x in out])
        check_anchor_order(self)
        self.anchors /= self.stride.view(-1, 1, 1)
        model.stride = self.stride
        model._initialize_biases()


class Segment(Detect):
    """Detect head plus mask coefficients (``nm`` per anchor) and a ``Proto`` branch on the first level."""

    def __init__(self, nc: int = 80, anchors: Any = (), nm: int = 32, npr: int = 256, ch: tuple = (),
                 inplace: bool = True):
        super().__init__(nc, anchors, ch, inplace)
        self.nm = nm
        self.npr = npr
        self.no = 5 + nc + self.nm
        self.m = nn.ModuleList(nn.Conv2d(x, self.no * self.na, 1) for x in ch)
        self.proto = Proto(ch[0], self.npr, self.nm)
        self.detect = Detect.forward

    def forward(self, x: list[torch.Tensor]):
        """Training: ``(raw levels, prototypes)``; inference: ``(decoded, prototypes, raw)`` (``export``: no raw)."""
        p = self.proto(x[0])
        x = self.detect(self, x)
        if self.training:
            return x, p
        return (x[0], p) if self.export else (x[0], p, x[1])

    def _decode(self, xi: torch.Tensor, i: int) -> torch.Tensor:
        xy, wh, conf, mask = xi.to(self.grid[i].dtype).split((2, 2, self.nc + 1, self.no - self.nc - 5), 4)
        xy = (xy.sigmoid() * 2 + self.grid[i]) * self.stride[i]
        wh = (wh.sigmoid() * 2) ** 2 * self.anchor_grid[i]
        return torch.cat((xy, wh, conf.sigmoid(), mask), 4)


class BaseModel(nn.Module):
    """Sequential graph runner shared by detection, segmentation and classification models."""

    def forward(self, x: torch.Tensor, profile: bool = False, visualize: Any = False):
        """Run the layer graph on x (b, ch, h, w); ``profile`` logs per-layer times, ``visualize`` saves features."""
        return self._forward_once(x, profile, visualize)

    def _forward_once(self, x: torch.Tensor, profile: bool = False, visualize: Any = False):
        y, times = [], []
        for m in self.model:
            if m.f != -1:
                x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
            if profile:
                self._profile_one_layer(m, x, times)
            x = m(x)
            y.append(x if m.i in self.save else None)
            if visualize:
                from utils.plotting.features import feature_visualization

                feature_visualization(x, m.type, m.i, save_dir=visualize)
        if profile:
            LOGGER.info(f"{sum(times):10.2f} {'-':>10s} {'-':>10s}  Total")
        return x

    def _profile_one_layer(self, m: nn.Module, x: Any, times: list[float], runs: int = 10) -> None:
        """Log one layer's mean time (ms over ``runs``), GFLOPs and parameter count (``--line-profile``)."""
        copy_input = isinstance(x, list)  # heads write into their input list
        flops = layer_flops(m, x.copy() if copy_input else x)
        t0 = time_sync()
        for _ in range(runs):
            m(x.copy() if copy_input else x)
        times.append((time_sync() - t0) * 1000 / runs)
        if m is self.model[0]:
            LOGGER.info(f"{'time (ms)':>10s} {'GFLOPs':>10s} {'params':>10s}  module")
        LOGGER.info(f"{times[-1]:10.2f} {flops:10.2f} {m.np:10.0f}  {m.type}")

    def fuse(self) -> BaseModel:
        """Fold every Conv's BatchNorm into its convolution (in place) for faster inference."""
        LOGGER.info("Fusing layers... ")
        for m in self.model.modules():
            if isinstance(m, (Conv, DWConv)) and "bn" in m._modules:
                m.conv = fuse_conv_and_bn(m.conv, m.bn)
                delattr(m, "bn")
        self.info()
        return self

    def info(self, verbose: bool = False, img_size: int = 640) -> tuple:
        """Log the summary line (layers, parameters, gradients, GFLOPs)."""
        return model_info(self, verbose, img_size)

    def _apply(self, fn, recurse: bool = True):
        self = super()._apply(fn, recurse)
        head = self.model[-1]
        if hasattr(head, "_apply_to_tensors"):
            head._apply_to_tensors(fn)
        return self


class DetectionModel(BaseModel):
    """A YOLOv5 detection model built from a YAML file or dict.

    Args:
        cfg: YAML path (a bare name like ``yolov5s.yaml`` is searched under models/) or an already loaded dict.
        ch: input channels. nc: overrides the YAML's class count. anchors: overrides with that many anchors/level.
    """

    def __init__(self, cfg: Union[str, Path, dict] = "yolov5s.yaml", ch: int = 3, nc: Optional[int] = None,
                 anchors: Optional[Union[int, float]] = None):
        super().__init__()
        if isinstance(cfg, dict):
            self.yaml = cfg
        else:
            self.yaml_file = Path(cfg).name
            self.yaml = yaml_load(check_yaml(cfg))
        yaml_name = str(cfg) if not isinstance(cfg, dict) else "<dict>"
        ch = self.yaml["ch"] = self.yaml.get("ch", ch)
        if nc and nc != self.yaml.get("nc"):
            LOGGER.info(f"Overriding model.yaml nc={self.yaml.get('nc')} with nc={nc}")
            self.yaml["nc"] = nc
        if anchors:
            LOGGER.info(f"Overriding model.yaml anchors with anchors={anchors}")
            self.yaml["anchors"] = round(anchors)
        built = build_model(deepcopy(self.yaml), ch=[ch], yaml_file=yaml_name)
        self.model, self.save = built.model, built.save
        self.names = [str(i) for i in range(self.yaml["nc"])]
        self.inplace = self.yaml.get("inplace", True)
        head = self.model[-1]
        if hasattr(head, "setup_model"):
            head.setup_model(self, ch)
        else:
            self.stride = torch.tensor([32.0])
        initialize_weights(self)
        self.info()
        LOGGER.info("")

    def forward(self, x: torch.Tensor, augment: bool = False, profile: bool = False, visualize: Any = False):
        """Run the model; ``augment`` uses test-time augmentation and returns ``(decoded, None)``."""
        if augment:
            return self._forward_augment(x)
        return self._forward_once(x, profile, visualize)

    def _forward_augment(self, x: torch.Tensor):
        """Test-time augmentation: scales (1, 0.83, 0.67) with a left-right flip at 0.83; returns (y, None)."""
        img_size = x.shape[-2:]
        y = []
        for si, fi in zip((1, 0.83, 0.67), (None, 3, None), strict=True):
            xi = scale_img(x.flip(fi) if fi else x, si, gs=int(self.stride.max()))
            yi = self._forward_once(xi)[0]
            y.append(self._descale_pred(yi, fi, si, img_size))
        return torch.cat(self._clip_augmented(y), 1), None

    def _descale_pred(self, p: torch.Tensor, flips: Optional[int], scale: float, img_size) -> torch.Tensor:
        p = p.clone()
        p[..., :4] /= scale
        if flips == 2:
            p[..., 1] = img_size[0] - p[..., 1]
        elif flips == 3:
            p[..., 0] = img_size[1] - p[..., 0]
        return p

    def _clip_augmented(self, y: list[torch.Tensor]) -> list[torch.Tensor]:
        nl = self.model[-1].nl
        g = sum(4**x for x in range(nl))
        i = (y[0].shape[1] // g) * sum(4**x for x in range(1))
        y[0] = y[0][:, :-i]
        i = (y[-1].shape[1] // g) * sum(4 ** (nl - 1 - x) for x in range(1))
        y[-1] = y[-1][:, i:]
        return y

    def _initialize_biases(self, cf: Optional[torch.Tensor] = None) -> None:
        """Offset head biases: objectness for ~8 objects per 640 image, classes for 0.6 / nc (or ``cf``)."""
        m = self.model[-1]
        for mi, s in zip(m.m, m.stride, strict=True):
            b = mi.bias.view(m.na, -1)
            b.data[:, 4] += math.log(8 / (640 / s) ** 2)
            cls_prior = math.log(0.6 / (m.nc - 0.99999)) if cf is None else torch.log(cf / cf.sum())
            b.data[:, 5:5 + m.nc] += cls_prior
            mi.bias = torch.nn.Parameter(b.view(-1), requires_grad=True)


Model = DetectionModel


class SegmentationModel(DetectionModel):
    """Detection model whose YAML ends in a ``Segment`` head."""

    def __init__(self, cfg: Union[str, Path, dict] = "yolov5s-seg.yaml", ch: int = 3, nc: Optional[int] = None,
                 anchors: Optional[int] = None):
        super().__init__(cfg, ch, nc, anchors)


class ClassificationModel(BaseModel):
    """An image classifier made of a detection architecture's first layers plus a classification head.

    Args:
        cfg: a detection YAML (path, bare name or dict): its first ``cutoff`` rows (default: the ``backbone:``
            section) plus a ``Classify`` head (:func:`models.classifier.classifier_yaml`), so the layer names and
            shapes are the detector backbone's.
        model: a built ``DetectionModel`` instead (upstream's behaviour): layers ``[:cutoff]`` are kept and the last
            of them is replaced by ``Classify``.
        nc: number of classes. cutoff: see above (``None`` with ``model`` means upstream's 10).

    Attributes (pickled): ``model``, ``stride``, ``save``, ``nc``; ``yaml`` for YAML-built models; training adds
    ``names`` (class names, a list) and ``transforms`` (the inference transform).
    """

    def __init__(self, cfg: Any = None, model: Optional[DetectionModel] = None, nc: int = 1000,
                 cutoff: Optional[int] = None):
        super().__init__()
        if model is not None:
            self._from_detection_model(model, nc, 10 if cutoff is None else cutoff)
        elif cfg is not None:
            self._from_yaml(cfg, nc, cutoff)
        else:
            raise ValueError("ClassificationModel needs a detection YAML (cfg=...) or a DetectionModel (model=...)")

    def _from_detection_model(self, model: nn.Module, nc: int = 1000, cutoff: int = 10) -> None:
        while not isinstance(getattr(model, "model", None), nn.Sequential) and hasattr(model, "model"):
            model = model.model  # unwrap DetectMultiBackend-style wrappers down to the DetectionModel
        model.model = model.model[:cutoff]
        last = model.model[-1]
        c1 = last.conv.in_channels if hasattr(last, "conv") else last.cv1.conv.in_channels
        head = Classify(c1, nc)
        head.i, head.f, head.type = last.i, last.f, "models.common.Classify"
        model.model[-1] = head
        self.model = model.model
        self.stride = model.stride
        self.save = []
        self.nc = nc

    def _from_yaml(self, cfg: Any, nc: int, cutoff: Optional[int]) -> None:
        from models.classifier import classifier_yaml

        detection = deepcopy(cfg) if isinstance(cfg, dict) else yaml_load(check_yaml(cfg))
        if not isinstance(cfg, dict):
            self.yaml_file = Path(cfg).name
        self.yaml = classifier_yaml(detection, nc, cutoff)
        built = build_model(deepcopy(self.yaml), ch=[self.yaml.get("ch", 3)],
                            yaml_file=str(cfg) if not isinstance(cfg, dict) else "<dict>")
        self.model, self.save, self.nc = built.model, built.save, nc
        self.names = [str(i) for i in range(nc)]
        initialize_weights(self)
        self.stride = self._backbone_stride()
        self.info(img_size=224)

    @torch.no_grad()
    def _backbone_stride(self, size: int = 256) -> torch.Tensor:
        """Return the total downsampling of the kept layers (a 256 px dry run of all but the head)."""
        x, outputs = torch.zeros(1, self.yaml.get("ch", 3), size, size), []
        training = self.training
        self.eval()
        for m in self.model[:-1]:
            if m.f != -1:
                x = outputs[m.f] if isinstance(m.f, int) else [x if j == -1 else outputs[j] for j in m.f]
            x = m(x)
            outputs.append(x)
        self.train(training)
        maps = [t for t in (x if isinstance(x, list) else [x]) if isinstance(t, torch.Tensor)]
        return torch.tensor([float(size / min(t.shape[-2] for t in maps))])


def parse_model(d: dict, ch: list[int]) -> tuple[nn.Sequential, list[int]]:
    """Upstream-compatible entry point: build the layers of a model YAML dict; returns ``(model, save)``."""
    built = build_model(d, ch)
    return built.model, built.save


add_module("Detect", Detect, role="head")
add_module("Segment", Segment, role="head")
allow_module_classes(__name__)


def parse_opt(argv: Optional[list[str]] = None) -> argparse.Namespace:
    """Parse the command line of ``python models/yolo.py`` (``argv`` defaults to ``sys.argv``)."""
    parser = argparse.ArgumentParser(description="Build a model from a YAML and print its summary.")
    parser.add_argument("--cfg", type=str, default="yolov5s.yaml",
                        help="architecture YAML: a path or a bare name such as yolov5s.yaml")
    parser.add_argument("--batch-size", type=int, default=1, help="images per profiling forward pass")
    parser.add_argument("--imgsz", "--img", "--img-size", type=int, default=640,
                        help="square input side for profiling, in pixels")
    parser.add_argument("--device", default="", help="where to build the model: cpu, or CUDA indices such as 0 or 0,1")
    parser.add_argument("--profile", action="store_true", help="time one forward and backward pass of the whole model")
    parser.add_argument("--line-profile", action="store_true",
                        help="time every layer and print a table of ms, GFLOPs and parameters")
    parser.add_argument("--test", action="store_true", help="build every yolo*.yaml under models/ as a smoke check")
    return parser.parse_args(argv)


def main(opt: argparse.Namespace) -> None:
    """Build ``--cfg`` (summary and layer table are logged), then profile it or test all YAMLs as asked."""
    from utils.torch_utils import profile, select_device

    device = select_device(opt.device)
    if opt.test:
        for cfg in sorted(Path(__file__).parent.rglob("yolo*.yaml")):
            DetectionModel(cfg)
        return
    model = DetectionModel(check_yaml(opt.cfg)).to(device)
    im = torch.rand(opt.batch_size, 3, opt.imgsz, opt.imgsz, device=device)
    if opt.line_profile:
        model(im, profile=True)
    elif opt.profile:
        profile(input=im, ops=[model], n=3)
    else:
        model.fuse()


