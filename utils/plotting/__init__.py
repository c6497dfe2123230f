"""Pictures a run leaves behind: annotated images and batches, label statistics, result curves, metric plots,
feature maps and box crops."""
