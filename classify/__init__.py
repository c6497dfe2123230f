"""Classification entry scripts (upstream's ``classify/``): ``train.py``, ``val.py``, ``predict.py``."""
