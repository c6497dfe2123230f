"""Constants shared by the pretrainer's CLI and library (kept free of heavy imports so ``--help`` is instant)."""

PRETEXTS = ("none", "blur", "boxes")  # pretext tasks, see extensions.autoencoder.loss
P_SCRATCH, P_PRETRAINED = 0.01, 0.05  # box prior p of the masked loss: from scratch / from a detection checkpoint
