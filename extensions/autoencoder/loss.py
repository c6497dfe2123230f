"""Box-masked reconstruction loss and the pretext tasks of the original autoencoder pretrainer.

Loss: ``L = mean(w * (y_hat - y)^2)`` over every element of the (B, C, H, W) batch, where the per-pixel weight map
``w`` (B, 1, H, W), broadcast over the channels, is ``1 / p`` inside labelled boxes and ``1 / (1 - p)`` outside.
``p`` is a prior box-area fraction: 0.01 from scratch (box pixels weigh 100, background 1.0101), 0.05 when the
encoder starts from a detection checkpoint (20 and 1.0526). The gradient ratio inside/outside is ``(1 - p) / p``.
Images without any labelled box (unlabeled folders, background images) get uniform weight 1.

Pretext variants (:data:`PRETEXTS`), chosen per run:

- ``none``: input = target = the image;
- ``blur``: the input has every box region Gaussian-blurred (the original used a 51x51 kernel at full resolution);
  the target is the sharp image, so the network must restore object detail from context;
- ``boxes``: the target is the image inside the boxes and black elsewhere ("reconstruct only the objects").

Images without boxes always use input = target = image.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from extensions.autoencoder.defaults import P_PRETRAINED, P_SCRATCH, PRETEXTS

__all__ = ["PRETEXTS", "P_SCRATCH", "P_PRETRAINED", "box_mask", "images_with_boxes", "loss_weights", "masked_mse",
           "gaussian_kernel1d", "gaussian_blur", "blur_sigma", "pretext_pair", "ReconstructionLoss"]


def box_mask(targets: torch.Tensor, batch_size: int, height: int, width: int) -> torch.Tensor:
    """Rasterise labelled boxes into a (B, 1, H, W) float mask: 1 on pixels inside any box, else 0.

    Args:
        targets: (N, 6) rows ``[image index, class, x, y, w, h]`` with xywh normalised to [0, 1] (the loader's
            collated labels). A pixel ``(r, c)`` is inside when its centre ``(c + 0.5, r + 0.5)`` lies in the box
            (edges rounded to the nearest pixel boundary).

    Built with a 2-D difference array and two cumulative sums: O(N + B H W), no per-box loop.
    """
    device = targets.device
    counts = torch.zeros(batch_size, height + 1, width + 1, device=device)
    if targets.numel():
        xywh = targets[:, 2:6].float()
        x1 = torch.round((xywh[:, 0] - xywh[:, 2] / 2) * width).clamp(0, width).long()
        x2 = torch.round((xywh[:, 0] + xywh[:, 2] / 2) * width).clamp(0, width).long()
        y1 = torch.round((xywh[:, 1] - xywh[:, 3] / 2) * height).clamp(0, height).long()
        y2 = torch.round((xywh[:, 1] + xywh[:, 3] / 2) * height).clamp(0, height).long()
        image = targets[:, 0].long()
        ones = torch.ones_like(x1, dtype=counts.dtype)
        for rows, cols, sign in ((y1, x1, 1.0), (y1, x2, -1.0), (y2, x1, -1.0), (y2, x2, 1.0)):
            counts.index_put_((image, rows, cols), ones * sign, accumulate=True)
    covered = counts.cumsum(1).cumsum(2)[:, :height, :width]
    return (covered > 0.5).float().unsqueeze(1)


def images_with_boxes(targets: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Return a (B,) bool tensor: True for images with at least one labelled box in ``targets`` (N, 6)."""
    flags = torch.zeros(batch_size, dtype=torch.bool, device=targets.device)
    if targets.numel():
        flags[targets[:, 0].long()] = True
    return flags


def loss_weights(mask: torch.Tensor, has_boxes: torch.Tensor, p: float) -> torch.Tensor:
    """Per-pixel weights (B, 1, H, W): ``1/p`` in boxes, ``1/(1-p)`` outside; 1 everywhere for images without boxes.

    Raises:
        ValueError: ``p`` is not in (0, 1).
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"mask p must be in (0, 1) (e.g. 0.01 from scratch, 0.05 from a detector), got {p}")
    weights = mask / p + (1.0 - mask) / (1.0 - p)
    return torch.where(has_boxes.view(-1, 1, 1, 1), weights, torch.ones_like(weights))


def masked_mse(prediction: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Return ``mean(weights * (prediction - target)^2)``; weights (B, 1, H, W) broadcast over the channels."""
    return (weights * (prediction.float() - target.float()).square()).mean()


def gaussian_kernel1d(sigma: float, device: torch.device | None = None) -> torch.Tensor:
    """Normalised 1-D Gaussian kernel of odd length ``2 * ceil(3 sigma) + 1``."""
    radius = max(int(math.ceil(3 * sigma)), 1)
    x = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of a (B, C, H, W) float batch (reflect padding), same shape."""
    kernel = gaussian_kernel1d(sigma, images.device).to(images.dtype)
    radius, channels = kernel.numel() // 2, images.shape[1]
    horizontal = kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    vertical = kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    pad_w, pad_h = min(radius, images.shape[-1] - 1), min(radius, images.shape[-2] - 1)
    x = F.pad(images, (pad_w, pad_w, 0, 0), mode="reflect") if pad_w else images
    x = F.conv2d(x, horizontal[..., radius - pad_w:radius + pad_w + 1], groups=channels)
    x = F.pad(x, (0, 0, pad_h, pad_h), mode="reflect") if pad_h else x
    return F.conv2d(x, vertical[:, :, radius - pad_h:radius + pad_h + 1], groups=channels)


def blur_sigma(image_size: int) -> float:
    """Blur strength for the ``blur`` pretext: the original's sigma ~8 px at ~1024 px, scaled to ``image_size``."""
    return max(8.0 * image_size / 1024, 1.0)


def pretext_pair(images: torch.Tensor, mask: torch.Tensor, has_boxes: torch.Tensor, kind: str = "none",
                 sigma: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(network input, reconstruction target)`` for a pretext ``kind`` (see :data:`PRETEXTS`).

    Args:
        images: (B, C, H, W) float in [0, 1]. mask: (B, 1, H, W) box mask. has_boxes: (B,) bool.
        sigma: blur sigma in pixels (default :func:`blur_sigma` of the image height).

    Raises:
        ValueError: unknown ``kind``.
    """
    if kind == "none":
        return images, images
    if kind == "blur":
        blurred = gaussian_blur(images, sigma or blur_sigma(images.shape[-2]))
        return torch.where(mask > 0.5, blurred, images), images
    if kind == "boxes":
        keep = torch.where(has_boxes.view(-1, 1, 1, 1), mask, torch.ones_like(mask))
        return images, images * keep
    raise ValueError(f"unknown pretext {kind!r}; choose one of {', '.join(PRETEXTS)}")


class ReconstructionLoss:
    """Callable ``(prediction, target, targets) -> (loss, mask)`` using the box mask of ``targets`` (N, 6).

    Args:
        p: prior box fraction of the weighting (0.01 from scratch, 0.05 from a detection checkpoint).
    """

    def __init__(self, p: float = P_SCRATCH):
        loss_weights(torch.zeros(1, 1, 1, 1), torch.ones(1, dtype=torch.bool), p)  # validates p early
        self.p = float(p)

    def __call__(self, prediction: torch.Tensor, target: torch.Tensor,
                 targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(loss, mask)``: prediction/target (B, C, H, W) in [0, 1], targets (N, 6) normalised xywh."""
        b, _, h, w = target.shape
        mask = box_mask(targets, b, h, w)
        weights = loss_weights(mask, images_with_boxes(targets, b), self.p)
        return masked_mse(prediction, target, weights), mask
