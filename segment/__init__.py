"""Instance segmentation entry scripts: ``segment/train.py``, ``segment/val.py``, ``segment/predict.py``."""
