"""The work loops above ``models/``, ``extensions/`` and ``utils/``: training, pretraining, validation and
prediction, shared by the entry scripts and torch hub."""
