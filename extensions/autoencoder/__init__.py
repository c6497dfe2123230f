"""Self-supervised backbone pretraining: a CSP-Darknet autoencoder whose encoder is a detection YAML's backbone.

Modules: ``model`` (Autoencoder, Encoder, Decoder), ``loss`` (box-masked weighted MSE and pretext inputs/targets),
``data`` (loaders), ``trainer`` (the training loop), ``export`` (checkpoints and backbone-only files),
``plots`` (reconstruction grids, loss curve). The CLI is ``python -m extensions.pretrain``.
"""
