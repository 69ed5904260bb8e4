"""Unsupervised embeddings, learned from unlabeled examples only.

- :func:`fit_autoencoder` — reconstruction (Hinton & Salakhutdinov 2006).
- :func:`fit_contrastive` — SimCLR's NT-Xent on two augmented views (Chen et al. 2020).
- :func:`embed` — features ``[n, dim]`` of any examples with a trained encoder.
- :func:`save_encoder` / :func:`load_encoder` — safetensors checkpoints.

Both learners take an :class:`~metaunsup.data.unlabeled.UnlabeledView`, are deterministic given
their seed, and return the trained :class:`Encoder` (its per-step losses in ``.losses``). CACTUs
(:mod:`metaunsup.tasks.pseudo.cactus`) clusters such embeddings to make meta-training tasks.
"""

from __future__ import annotations

from metaunsup.embed._common import embed, load_encoder, save_encoder
from metaunsup.embed.autoencoder import AutoEncoder, fit_autoencoder
from metaunsup.embed.contrastive import fit_contrastive, nt_xent_loss
from metaunsup.embed.networks import ConvEncoder, Encoder, MLPEncoder, build_encoder

__all__ = [
    "AutoEncoder",
    "ConvEncoder",
    "Encoder",
    "MLPEncoder",
    "build_encoder",
    "embed",
    "fit_autoencoder",
    "fit_contrastive",
    "load_encoder",
    "nt_xent_loss",
    "save_encoder",
]
