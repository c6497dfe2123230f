"""Multi-object tracking on the shared prediction loop: a tracking stage that runs as the first writer of
:class:`engine.predictor.Predictor` (:mod:`engine.tracking.stage`), the writers that read its tracks
(:mod:`engine.tracking.writers`), the track.py run (:mod:`engine.tracking.run`) and ``--eval``
(:mod:`engine.tracking.evaluate`).
"""
