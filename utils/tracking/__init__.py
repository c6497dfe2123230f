"""Multi-object tracking pieces that know nothing about models or loaders.

* :mod:`utils.tracking.config`: tracker YAMLs (``data/trackers/*.yaml``) -> :class:`TrackerConfig`,
* :mod:`utils.tracking.tracker`: :class:`MultiObjectTracker`, a thin adapter over the ``trackers`` library's
  ByteTrack, BoT-SORT (with camera-motion compensation) and OC-SORT,
* :mod:`utils.tracking.mot`: MOTChallenge text files (``frame, id, x, y, w, h, conf, -1, -1, -1``) and
  ``seqinfo.ini``,
* :mod:`utils.tracking.metrics`: MOTA, IDF1, HOTA, ID switches (the ``trackers`` library's TrackEval-style
  CLEAR, Identity and HOTA computations) on MOTChallenge ground truth.
"""
