"""Validation options: the ``ValOptions`` dataclass, one value per setting of a validation run.

Field names, meanings and defaults are those of upstream's ``val.run`` keywords (``val.py --help`` lists them), so
``ValOptions(**kwargs)`` accepts the settings part of a ``val.run`` call. The inputs of a run (dataset, weights or
model, dataloader, callbacks, loss) are not options: :class:`engine.validator.Validator` takes them as arguments.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Union

from utils.files import ROOT

DEFAULT_PROJECT = ROOT / "runs" / "val"
SPLIT_TASKS = ("train", "val", "test")  # tasks that validate on the dataset split of the same name


@dataclass(frozen=True)
class ValOptions:
    """Every setting of one validation run; frozen, so a run never changes the options it was given.

    Units: ``imgsz`` pixels (the long side of the letterboxed input), thresholds in [0, 1]. ``task`` names the
    dataset split (``train``/``val``/``test``); ``speed`` validates on ``val`` without padding or rect batches.
    ``half`` asks for fp16 weights and inputs, honoured only on CUDA. ``fp32`` forces plain fp32 NCHW inference
    (no CPU bf16/channels_last path, see :mod:`utils.precision`). ``voc_ap`` reports PASCAL VOC all-point AP at
    IoU 0.5 in the mAP50 column. ``save_hybrid`` implies ``save_txt``. ``device``, ``dnn``, ``project``, ``name``
    and ``exist_ok`` are used when the validator loads weights itself (:meth:`Validator.from_weights`).
    """

    batch_size: int = 32
    imgsz: int = 640
    conf_thres: float = 0.001
    iou_thres: float = 0.6
    max_det: int = 300
    task: str = "val"
    device: str = ""
    workers: int = 8
    single_cls: bool = False
    augment: bool = False
    verbose: bool = False
    save_txt: bool = False
    save_hybrid: bool = False
    save_conf: bool = False
    save_json: bool = False
    project: Union[str, Path] = DEFAULT_PROJECT
    name: str = "exp"
    exist_ok: bool = False
    half: bool = True
    dnn: bool = False
    plots: bool = True
    voc_ap: bool = False
    fp32: bool = False

    def __post_init__(self) -> None:
        if self.save_hybrid and not self.save_txt:
            object.__setattr__(self, "save_txt", True)

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        """Return the option names in declaration order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> ValOptions:
        """Build options from ``values``; raise ``ValueError`` naming every unknown key (with a close match)."""
        known = cls.keys()
        unknown = [k for k in values if k not in known]
        if unknown:
            hints = []
            for key in unknown:
                close = difflib.get_close_matches(key, known, n=1)
                hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise ValueError(f"unknown validation option(s): {', '.join(hints)}; known: {', '.join(known)}")
        return cls(**values)

    @property
    def split(self) -> str:
        """The dataset split validated: ``task`` when it names one, else ``val`` (``speed``)."""
        return self.task if self.task in SPLIT_TASKS else "val"
