"""train.py --backbone-weights: backbone rows come from the file and are still the loaded values at the first step."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import train
from engine.train_options import TrainError
from utils.callbacks import Callbacks
from utils.checkpoint import torch_safe_load

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT.parent / "shared" / "fixtures" / "upstream" / "yolov5n-trained.pt"
FAST = {"imgsz": 64, "batch_size": 4, "workers": 0, "device": "cpu", "noautoanchor": True, "noplots": True,
        "noval": True, "nosave": True, "epochs": 1}


@pytest.mark.skipif(not FIXTURE.is_file(), reason="upstream fixture ../shared/fixtures/upstream not present")
def test_backbone_tensors_are_the_loaded_values_at_first_step(tiny_data, tmp_path):
    source = torch_safe_load(FIXTURE)["model"].float().state_dict()
    seen: dict[str, torch.Tensor] = {}

    def capture(*args, **kwargs):  # on_train_start fires after setup, before the first optimizer step
        import gc

        from engine.trainer import Trainer

        trainer = next(o for o in gc.get_objects() if isinstance(o, Trainer))
        seen.update({k: v.detach().clone() for k, v in trainer.model.state_dict().items()})

    callbacks = Callbacks()
    callbacks.register_action("on_train_start", callback=capture)
    opt = train.build_parser().parse_args([])
    settings = dict(data=tiny_data, cfg="yolov5n.yaml", weights="", backbone_weights=str(FIXTURE),
                    project=str(tmp_path), name="bb", **FAST)
    for key, value in settings.items():
        setattr(opt, key, value)
    train.main(opt, callbacks=callbacks)
    backbone = [k for k in source if int(k.split(".")[1]) < 10 and not k.endswith("num_batches_tracked")]
    assert backbone and all(torch.equal(seen[k].float(), source[k]) for k in backbone)
    head = [k for k in source if k.startswith("model.24.m.")]  # 10-class fixture head vs 8-class model: not copied
    assert all(seen[k].shape != source[k].shape for k in head)


def test_backbone_weights_with_nothing_matching_is_an_error(tiny_data, tmp_path):
    bogus = tmp_path / "bogus.pt"
    torch.save({"foo.weight": torch.zeros(3)}, bogus)
    with pytest.raises(TrainError, match="backbone-weights"):
        train.run(data=tiny_data, cfg="yolov5n.yaml", weights="", backbone_weights=str(bogus),
                  project=str(tmp_path), name="bad", **FAST)
