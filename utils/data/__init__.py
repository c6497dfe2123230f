"""Datasets and their inputs: label files and their cache, images, mosaic, augmentations, loaders, inference
sources and the built-in shapes dataset."""
