"""Representation learning on unlabeled examples, over the backbones of :mod:`metaunsup.nets`.

- :mod:`metaunsup.embed.simclr` — SimCLR's NT-Xent objective, its projection head and its
  source of augmented pairs (Chen et al. 2020); run by
  :func:`metaunsup.training.pretraining.pretrain_contrastive` through the one Trainer.
- :func:`net_embeddings` — a backbone's features of every example, in chunks.

CACTUs (:mod:`metaunsup.tasks.pseudo.cactus`) clusters such features to make meta-training
tasks without labels.
"""

from __future__ import annotations

from metaunsup.embed.features import net_embeddings
from metaunsup.embed.simclr import ContrastiveObjective, ContrastiveViews, nt_xent_loss

__all__ = ["ContrastiveObjective", "ContrastiveViews", "net_embeddings", "nt_xent_loss"]
