"""The upstream import paths that are facades (or modules) export exactly these names (``__all__``).

A name added to or dropped from a facade must be a decision, so the sets are spelled out here. ``utils.general``
exports upstream's names only; project helpers are imported from their focused modules.
"""

from __future__ import annotations

import importlib

import pytest

FACADES = {
    "utils.general": {
        "LOGGER", "LOGGING_NAME", "NUM_THREADS", "ROOT", "Profile", "box_iou", "check_dataset", "check_file",
        "check_img_size", "check_suffix", "check_yaml", "clip_boxes", "clip_segments", "coco80_to_coco91_class",
        "colorstr", "emojis", "file_size", "fitness", "increment_path", "labels_to_class_weights",
        "labels_to_image_weights", "make_divisible", "non_max_suppression", "one_cycle", "resample_segments",
        "scale_boxes", "scale_segments", "segment2box", "segments2boxes", "strip_optimizer", "xyn2xy", "xywh2xyxy",
        "xywhn2xyxy", "xyxy2xywh", "xyxy2xywhn", "yaml_load", "yaml_save",
    },
    "utils.torch_utils": {
        "EarlyStopping", "ModelEMA", "copy_attr", "count_params", "de_parallel", "fuse_conv_and_bn",
        "initialize_weights", "is_channels_last", "is_tracing", "layer_flops", "model_flops", "model_info", "profile",
        "scale_img", "select_device", "smart_inference_mode", "smart_optimizer", "time_sync",
        "torch_distributed_zero_first",
    },
    "utils.metrics": {
        "ConfusionMatrix", "ap_per_class", "ap_per_class_voc", "bbox_ioa", "bbox_iou", "box_iou", "compute_ap",
        "fitness", "match_detections_voc", "plot_mc_curve", "plot_pr_curve", "process_batch", "smooth", "voc_ap",
        "wh_iou",
    },
    "utils.dataloaders": {
        "IMG_FORMATS", "VID_FORMATS", "ClassificationDataset", "InfiniteDataLoader", "LoadImages",
        "LoadImagesAndLabels", "LoadScreenshots", "LoadStreams", "SmartDistributedSampler",
        "create_classification_dataloader", "create_dataloader", "exif_size", "img2label_paths", "letterbox",
        "seed_worker", "torch_distributed_zero_first", "verify_image_label",
    },
    "utils.augmentations": {
        "IMAGENET_MEAN", "IMAGENET_STD", "Albumentations", "CenterCrop", "LetterBox", "ToTensor", "augment_hsv",
        "bbox_ioa", "box_candidates", "classify_albumentations", "classify_transforms", "copy_paste",
        "hist_equalize", "letterbox", "mixup", "random_perspective", "resample_segments", "segment2box",
    },
    "utils.plots": {
        "Annotator", "Colors", "colors", "feature_visualization", "is_ascii", "plot_evolve", "plot_images",
        "plot_labels", "plot_results", "save_one_box",
    },
    "utils.autoanchor": {"PREFIX", "anchor_metric", "check_anchor_order", "check_anchors", "kmean_anchors", "label_wh"},
    "utils.callbacks": {"Callbacks", "HOOK_NAMES"},
    "utils.loss": {
        "BCEBlurWithLogitsLoss", "ComputeLoss", "FocalLoss", "QFocalLoss", "YoloLoss", "build_loss", "smooth_BCE",
    },
    "utils.loggers": {"HOOKS", "LOGGERS", "Loggers", "RESULTS_KEYS"},
    "utils.segment.general": {
        "crop_mask", "mask_iou", "masks2segments", "masks_iou", "process_mask", "process_mask_native",
        "process_mask_upsample", "scale_image",
    },
    "utils.segment.dataloaders": {
        "LoadImagesAndLabelsAndMasks", "create_dataloader", "polygon2mask", "polygons2masks", "polygons2masks_overlap",
    },
    "utils.segment.augmentations": {"box_candidates", "mixup", "random_perspective"},
    "utils.segment.plots": {"plot_images_and_masks", "plot_results_with_masks"},
    "utils.segment.loss": {"ComputeLoss", "SegmentLoss", "per_image_rank"},
    "utils.segment.metrics": {"BEST_KEYS", "KEYS", "Metric", "Metrics", "ap_per_class_box_and_mask", "fitness",
                              "match_masks"},
}


@pytest.mark.parametrize("module_name", sorted(FACADES))
def test_facade_exports_exactly_its_names(module_name):
    module = importlib.import_module(module_name)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{module_name} has no __all__"
    assert len(exported) == len(set(exported)), f"{module_name}.__all__ lists a name twice"
    assert set(exported) == FACADES[module_name]


@pytest.mark.parametrize("module_name", sorted(FACADES))
def test_every_exported_name_resolves(module_name):
    module = importlib.import_module(module_name)
    missing = [name for name in getattr(module, "__all__", ()) if getattr(module, name, None) is None]
    assert not missing, f"{module_name} exports unresolvable {missing}"


def test_star_import_of_utils_general_gives_upstream_names_only():
    namespace: dict = {}
    exec("from utils.general import *", namespace)  # noqa: S102  (the upstream usage being pinned)
    assert set(namespace) - {"__builtins__"} == FACADES["utils.general"]
