"""AutoAnchor: check how well a model's anchors fit a dataset's boxes, and evolve better ones (k-means + GA).

A dataset here is any object with ``shapes`` (n, 2) image ``[w, h]`` in pixels and ``labels``, a list of (k, 5)
arrays ``[cls, x, y, w, h]`` with xywh normalised. Anchors returned by :func:`kmean_anchors` are in pixels at
``img_size`` (``[w, h]`` rows sorted by area); the Detect head stores them in grid units (pixels / stride).

Randomness (the per-image scale jitter, the k-means seed and the GA mutations) comes from one
``numpy.random.Generator``: pass ``rng`` for reproducible results; by default it is seeded from numpy's global
state, so a run seeded with ``init_seeds`` is reproducible too.
"""

from __future__ import annotations

from typing import Any, Union

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

from utils.logging import LOGGER, colorstr
from utils.torch_utils import de_parallel

__all__ = ["PREFIX", "anchor_metric", "check_anchor_order", "check_anchors", "kmean_anchors", "label_wh"]

PREFIX = colorstr("AutoAnchor: ")
BAR_FORMAT = "{l_bar}{bar:10}{r_bar}"
MUTATION_PROB, MUTATION_SIGMA = 0.9, 0.1


def _default_rng(rng: np.random.Generator | None) -> np.random.Generator:
    return rng if rng is not None else np.random.default_rng(np.random.randint(0, 2**31 - 1))


def label_wh(dataset: Any, img_size: int, scale: np.ndarray | None = None) -> np.ndarray:
    """Return (m, 2) label ``[w, h]`` in pixels after resizing each image's long side to ``img_size``.

    Args:
        dataset: object with ``shapes`` (n, 2) and ``labels`` (list of (k, 5) arrays, xywh normalised).
        scale: optional (n,) per-image multipliers (check_anchors jitters sizes by U(0.9, 1.1)).
    """
    shapes = np.asarray(dataset.shapes, dtype=float).reshape(-1, 2)
    shapes = img_size * shapes / shapes.max(1, keepdims=True)
    if scale is not None:
        shapes = shapes * scale.reshape(-1, 1)
    counts = [len(labels) for labels in dataset.labels]
    if not sum(counts):
        return np.zeros((0, 2))
    labels = np.concatenate([np.asarray(x, dtype=float)[:, :5] for x in dataset.labels if len(x)], 0)
    return labels[:, 3:5] * np.repeat(shapes, counts, axis=0)


def anchor_metric(anchors: torch.Tensor, wh: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(x, best)``: x (m, n) = worst side ratio min(r, 1/r) of each label/anchor pair, best = x.max(1)."""
    r = wh[:, None] / anchors[None]
    x = torch.min(r, 1 / r).min(2)[0]
    return x, x.max(1)[0]


def check_anchor_order(m: nn.Module) -> None:
    """Flip a head's anchor levels (in place) if their mean areas are ordered opposite to its strides.

    ``m`` is any head with ``anchors`` (nl, na, 2) and ``stride`` (nl,) tensors, such as ``Detect``.
    """
    a = m.anchors.prod(-1).mean(-1).view(-1)
    da = a[-1] - a[0]
    ds = m.stride[-1] - m.stride[0]
    if da and (da.sign() != ds.sign()):
        LOGGER.info("AutoAnchor: Reversing anchor order")
        m.anchors[:] = m.anchors.flip(0)


def check_anchors(dataset: Any, model: nn.Module, thr: float = 4.0, imgsz: int = 640,
                  rng: np.random.Generator | None = None) -> float:
    """Log anchors/target and Best Possible Recall; if BPR <= 0.98, evolve anchors and keep them if BPR improves.

    The head is the last layer of the model's layer sequence (``model.model[-1]``, the checkpoint layout); a head
    without an ``anchors`` tensor is skipped. Its anchors (grid units) are replaced in place when new ones are
    better. Returns the final BPR.
    """
    head = de_parallel(model).model[-1]
    if not isinstance(getattr(head, "anchors", None), torch.Tensor):
        LOGGER.info(f"{PREFIX}skipped: the {type(head).__name__} head has no anchors")
        return 1.0
    rng = _default_rng(rng)
    scale = rng.uniform(0.9, 1.1, size=len(dataset.shapes))
    wh = torch.tensor(label_wh(dataset, imgsz, scale), dtype=torch.float32)
    stride = head.stride.to(head.anchors.device).view(-1, 1, 1)
    anchors_px = head.anchors.clone() * stride

    def bpr_aat(k: torch.Tensor) -> tuple[float, float]:
        x, best = anchor_metric(k, wh)
        return float((best > 1 / thr).float().mean()), float((x > 1 / thr).float().sum(1).mean())

    bpr, aat = bpr_aat(anchors_px.cpu().view(-1, 2).float())
    message = f"\n{PREFIX}{aat:.2f} anchors/target, {bpr:.3f} Best Possible Recall (BPR). "
    if bpr > 0.98:
        LOGGER.info(f"{message}Current anchors are a good fit to dataset ✅")
        return bpr
    LOGGER.info(f"{message}Anchors are a poor fit to dataset ⚠️, attempting to improve...")
    new = kmean_anchors(dataset, n=head.anchors.numel() // 2, img_size=imgsz, thr=thr, gen=1000, verbose=False,
                        rng=rng)
    new_bpr = bpr_aat(torch.tensor(new))[0]
    if new_bpr > bpr:
        head.anchors[:] = torch.tensor(new, device=head.anchors.device).type_as(head.anchors).view_as(head.anchors)
        check_anchor_order(head)
        head.anchors /= stride
        LOGGER.info(f"{PREFIX}Done ✅ (optional: update model *.yaml to use these anchors in the future)")
        return new_bpr
    LOGGER.info(f"{PREFIX}Done ⚠️ (original anchors better than new anchors, proceeding with original anchors)")
    return bpr


def _load_dataset(dataset: Union[str, Any]) -> Any:
    """Return a dataset object; a YAML path builds the train split with augment=True, rect=True."""
    if not isinstance(dataset, str):
        return dataset
    from utils.data.dataset_yaml import check_dataset
    from utils.data.loaders import LoadImagesAndLabels

    data = check_dataset(dataset)
    return LoadImagesAndLabels(data["train"], augment=True, rect=True)


def _initial_anchors(wh: np.ndarray, n: int, img_size: int, rng: np.random.Generator) -> np.ndarray:
    """Return (n, 2) k-means centroids of whitened ``wh`` (30 iterations), or sorted uniform random anchors."""
    from scipy.cluster.vq import kmeans

    try:
        if n > len(wh):
            raise ValueError(f"{n} anchors requested but only {len(wh)} usable labels")
        sigma = wh.std(0)
        k = kmeans(wh / sigma, n, iter=30, seed=rng)[0] * sigma
        if len(k) != n:
            raise ValueError(f"k-means returned {len(k)} centroids, expected {n}")
        return k
    except Exception as e:
        LOGGER.warning(f"{PREFIX}WARNING ⚠️ switching strategies from kmeans to random init ({e})")
        return np.sort(rng.random(n * 2)).reshape(n, 2) * img_size


def _mutations(gen: int, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Return (gen, *shape) multiplicative mutations ``(mask * U * N(0,1) * 0.1 + 1).clip(0.3, 3)``, none all-ones."""
    def draw(count: int) -> np.ndarray:
        mask = rng.random((count, *shape)) < MUTATION_PROB
        amount = rng.random((count, 1, 1))
        return (mask * amount * rng.standard_normal((count, *shape)) * MUTATION_SIGMA + 1).clip(0.3, 3.0)

    v = draw(gen)
    redo = (v == 1).all(axis=(1, 2))
    while redo.any():
        v[redo] = draw(int(redo.sum()))
        redo = (v == 1).all(axis=(1, 2))
    return v


def _summary(k: np.ndarray, wh: torch.Tensor, thr: float, img_size: int) -> str:
    """Return the one-line report for anchors ``k`` (n, 2) against label sizes ``wh``."""
    x, best = anchor_metric(torch.tensor(k, dtype=torch.float32), wh)
    bpr, aat = (best > 1 / thr).float().mean(), (x > 1 / thr).float().mean() * len(k)
    past = x[x > 1 / thr]
    anchors = ", ".join(f"{round(w):d},{round(h):d}" for w, h in k.tolist())
    return (f"{PREFIX}thr={1 / thr:.2f}: {bpr:.4f} best possible recall, {aat:.2f} anchors past thr\n"
            f"{PREFIX}n={len(k)}, img_size={img_size}, metric_all={x.mean():.3f}/{best.mean():.3f}-mean/best, "
            f"past_thr={past.mean() if len(past) else 0.0:.3f}-mean: {anchors}")


def kmean_anchors(dataset: Union[str, Any] = "./data/coco128.yaml", n: int = 9, img_size: int = 640,
                  thr: float = 4.0, gen: int = 1000, verbose: bool = True,
                  rng: np.random.Generator | None = None) -> np.ndarray:
    """Return (n, 2) float32 anchors ``[w, h]`` in pixels, sorted by area, evolved to fit the dataset's boxes.

    k-means on whitened label sizes gives the start; a genetic algorithm then mutates all anchors ``gen`` times
    and keeps a mutation when it raises the fitness ``mean(best * (best > 1/thr))``.

    Args:
        dataset: a dataset object (``shapes``, ``labels``) or a dataset YAML path (train split is used).
        n: number of anchors. img_size: training image size (px). thr: anchor/label size-ratio threshold.
        gen: GA generations. verbose: log every improvement. rng: numpy Generator for reproducibility.
    """
    rng = _default_rng(rng)
    wh_all = label_wh(_load_dataset(dataset), img_size)
    tiny = int((wh_all < 3.0).any(1).sum())
    if tiny:
        LOGGER.info(f"{PREFIX}WARNING ⚠️ Extremely small objects found: {tiny} of {len(wh_all)} labels are "
                    f"<3 pixels in size")
    wh = wh_all[(wh_all >= 2.0).any(1)].astype(np.float32)
    k = _initial_anchors(wh, n, img_size, rng)
    wh_all_t = torch.tensor(wh_all, dtype=torch.float32)

    def fitness(anchors: np.ndarray) -> float:  # numpy: ~10x less overhead than torch for these small arrays
        r = wh[:, None] / anchors[None].astype(np.float32)
        best = np.minimum(r, 1 / r).min(2).max(1)
        return float((best * (best > 1 / thr)).mean())

    k = k[np.argsort(k.prod(1))]
    best_fitness = fitness(k)
    progress = tqdm(_mutations(gen, k.shape, rng), bar_format=BAR_FORMAT, disable=not gen)
    for v in progress:
        candidate = (k * v).clip(min=2.0)
        candidate_fitness = fitness(candidate)
        if candidate_fitness > best_fitness:
            best_fitness, k = candidate_fitness, candidate
            progress.desc = f"{PREFIX}Evolving anchors with Genetic Algorithm: fitness = {best_fitness:.4f}"
            if verbose:
                LOGGER.info(_summary(k[np.argsort(k.prod(1))], wh_all_t, thr, img_size))
    k = k[np.argsort(k.prod(1))]
    LOGGER.info(_summary(k, wh_all_t, thr, img_size))
    return k.astype(np.float32)
