"""Utility package: focused modules (boxes, nms, metrics, dataloaders, ...) plus upstream-compatible facades."""
