"""Upstream import path ``utils.plots``: re-exports the drawing and plotting functions of :mod:`utils.plotting`."""

from utils.plotting.annotate import Annotator, Colors, colors, is_ascii, plot_images, plot_labels
from utils.plotting.crops import save_one_box
from utils.plotting.features import feature_visualization
from utils.plotting.results import plot_evolve, plot_results

__all__ = ["Annotator", "Colors", "colors", "feature_visualization", "is_ascii", "plot_evolve", "plot_images",
           "plot_labels", "plot_results", "save_one_box"]
