"""``Hyp``: training hyperparameters as a frozen, typed object that reads and writes upstream's hyp YAML keys.

A hyp file (``data/hyps/*.yaml``) holds one number per key. ``Hyp.from_dict`` builds the object and rejects a key it
does not know (naming the closest valid key); ``to_dict`` gives the YAML dict back with the same keys. The optional
keys ``anchors``, ``nbs``, ``label_smoothing`` and ``warmup_min_iters`` are ``None`` when a file leaves them out and
are then left out of ``to_dict`` too. Keys starting with one of :data:`EXTENSION_PREFIXES` belong to an extension
head's loss (for example ``v3_box``) and are kept in ``extra``.

The trainer never changes a ``Hyp``: :meth:`Hyp.scaled` returns the copy whose loss gains and weight decay are scaled
for the model, data and batch size, and that copy is what the loss receives.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping, Union

import yaml

EXTENSION_PREFIXES = ("v3_",)  # keys read by extension losses (extensions/yolov3_loss.py)
OPTIONAL_KEYS = ("anchors", "nbs", "label_smoothing", "warmup_min_iters")
NOMINAL_BATCH_SIZE = 64  # images per optimizer step when the hyp file sets no ``nbs``
WARMUP_MIN_ITERS = 100  # batches of warmup at least, when the hyp file sets no ``warmup_min_iters`` (upstream's)


@dataclass(frozen=True)
class Hyp:
    """One value per upstream hyp YAML key (learning rate, warmup, loss gains, augmentation), plus ``nbs``.

    Attributes:
        lr0, lrf: initial learning rate and final LR as a fraction of ``lr0``. momentum: SGD momentum / Adam beta1.
        weight_decay: optimizer weight decay (scaled by :meth:`scaled` to the accumulated batch).
        warmup_epochs, warmup_momentum, warmup_bias_lr: warmup length (epochs) and start values.
        box, cls, obj: loss gains; cls_pw, obj_pw: BCE positive weights; iou_t: IoU threshold (unused by the loss);
        anchor_t: largest target/anchor size ratio that still matches; anchors: anchors per level (None: the
        model YAML's); fl_gamma: focal-loss gamma (0: plain BCE).
        hsv_h, hsv_s, hsv_v, degrees, translate, scale, shear, perspective, flipud, fliplr, mosaic, mixup,
        copy_paste: augmentation strengths and probabilities.
        nbs: nominal batch size (None: :data:`NOMINAL_BATCH_SIZE`). label_smoothing: class-target smoothing epsilon.
        warmup_min_iters: warmup lasts at least this many batches (None: :data:`WARMUP_MIN_ITERS`, upstream's 100).
        extra: keys of extension losses (see :data:`EXTENSION_PREFIXES`), read only.
    """

    lr0: float = 0.01
    lrf: float = 0.01
    momentum: float = 0.937
    weight_decay: float = 0.0005
    warmup_epochs: float = 3.0
    warmup_momentum: float = 0.8
    warmup_bias_lr: float = 0.1
    box: float = 0.05
    cls: float = 0.5
    cls_pw: float = 1.0
    obj: float = 1.0
    obj_pw: float = 1.0
    iou_t: float = 0.2
    anchor_t: float = 4.0
    anchors: float | None = None
    fl_gamma: float = 0.0
    hsv_h: float = 0.015
    hsv_s: float = 0.7
    hsv_v: float = 0.4
    degrees: float = 0.0
    translate: float = 0.1
    scale: float = 0.5
    shear: float = 0.0
    perspective: float = 0.0
    flipud: float = 0.0
    fliplr: float = 0.5
    mosaic: float = 1.0
    mixup: float = 0.0
    copy_paste: float = 0.0
    nbs: int | None = None
    label_smoothing: float | None = None
    warmup_min_iters: int | None = None
    extra: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def keys(cls) -> list[str]:
        """Return the YAML keys this class knows, in upstream's file order (optional keys included)."""
        return [f.name for f in dataclasses.fields(cls) if f.name != "extra"]

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], strict: bool = True) -> Hyp:
        """Build a ``Hyp`` from a hyp YAML dict (missing keys take the class defaults).

        With ``strict=False`` keys that are neither fields nor extension keys are left out (a caller that already
        warned about them, as training does for a user's hyp file).

        Raises:
            KeyError: ``strict`` and a key is neither a field nor an extension key; the message suggests the
                closest field.
        """
        known = cls.keys()
        unknown = [k for k in values if k not in known and not str(k).startswith(EXTENSION_PREFIXES)]
        if unknown and not strict:
            values = {k: v for k, v in values.items() if k not in unknown}
        elif unknown:
            hints = []
            for key in unknown:
                close = difflib.get_close_matches(str(key), known, n=1)
                hints.append(f"'{key}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
            raise KeyError(f"unknown hyperparameter(s) {', '.join(hints)}; valid keys: {', '.join(known)}")
        extra = {k: v for k, v in values.items() if k not in known}
        return cls(**{k: v for k, v in values.items() if k in known}, extra=MappingProxyType(extra))

    @classmethod
    def from_yaml(cls, path: Union[str, Path]) -> Hyp:
        """Read a hyp YAML file (see :meth:`from_dict`)."""
        return cls.from_dict(yaml.safe_load(Path(path).read_text()) or {})

    def to_dict(self) -> dict[str, Any]:
        """Return the hyp YAML dict: every field (optional ones only when set), then the extension keys."""
        values = {k: getattr(self, k) for k in self.keys()}
        return {**{k: v for k, v in values.items() if v is not None or k not in OPTIONAL_KEYS}, **self.extra}

    def to_yaml(self, path: Union[str, Path]) -> Path:
        """Write :meth:`to_dict` to ``path`` as YAML (keys in field order); returns the path."""
        path = Path(path)
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        return path

    def __getitem__(self, key: str) -> Any:
        """Read a value by its YAML key, as upstream code reads its hyp dict (``hyp['box']``)."""
        values = self.to_dict()
        if key not in values:
            raise KeyError(key)
        return values[key]

    @property
    def nominal_batch_size(self) -> int:
        """Images per optimizer step: ``nbs``, or :data:`NOMINAL_BATCH_SIZE` when the file sets none."""
        return NOMINAL_BATCH_SIZE if self.nbs is None else int(self.nbs)

    def scaled(self, levels: int, nc: int, imgsz: int, label_smoothing: float, batch_size: int,
               accumulate: int) -> Hyp:
        """Return the copy the loss and optimizer use: gains and weight decay scaled to this run.

        ``box`` scales by ``3 / levels``, ``cls`` by ``nc / 80 * 3 / levels``, ``obj`` by ``(imgsz / 640)**2 * 3 /
        levels`` (upstream's gains are tuned for 3 levels, 80 classes and 640 px); ``weight_decay`` by the images per
        optimizer step over ``nbs`` (``batch_size * accumulate / nbs``); ``label_smoothing`` is set.
        """
        return dataclasses.replace(
            self, box=self.box * (3 / levels), cls=self.cls * (nc / 80 * 3 / levels),
            obj=self.obj * ((imgsz / 640) ** 2 * 3 / levels), label_smoothing=label_smoothing,
            weight_decay=self.weight_decay * (batch_size * accumulate / self.nominal_batch_size))
