"""Upstream's ``utils.segment`` import paths (general, loss, metrics, dataloaders, augmentations, plots)."""
