"""Upstream import path ``utils.segment.plots``: batch mosaics with masks and the segmentation ``results.png``
(implemented in :mod:`utils.plotting.masks`)."""

from utils.plotting.masks import plot_images_and_masks, plot_results_with_masks

__all__ = ["plot_images_and_masks", "plot_results_with_masks"]
