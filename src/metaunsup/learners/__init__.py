"""Meta-learners, one algorithm per module, all implementing :class:`MetaLearner` and declaring
their abilities (:class:`FewShotLearner`, :class:`ClusteringLearner`, :class:`Embedder`,
:class:`AnomalyScorer`).

:mod:`metaunsup.learners.registry` is the one place that knows their names:
``build_learner(config)`` rebuilds a learner from its ``config()`` dict, ``load_learner(path)``
from a checkpoint, and ``register_learner(cls)`` adds a new one.
"""

from __future__ import annotations

from metaunsup.learners.anil import ANIL
from metaunsup.learners.base import (
    AdaptedState,
    AdaptiveEmbedder,
    AnomalyScorer,
    BoundaryScorer,
    ClusteringLearner,
    Embedder,
    FewShotLearner,
    MetaLearner,
)
from metaunsup.learners.cluster_maml import ClusterMAML
from metaunsup.learners.fit import check_fits
from metaunsup.learners.imaml import IMAML
from metaunsup.learners.maml import MAML
from metaunsup.learners.meta_gmvae import MetaGMVAE
from metaunsup.learners.meta_kmeans import MetaKMeansLearner
from metaunsup.learners.meta_svdd import MetaSVDD
from metaunsup.learners.metasgd import MetaSGD
from metaunsup.learners.oc_maml import OCMAML
from metaunsup.learners.protonet import ProtoNet
from metaunsup.learners.registry import (
    LEARNERS,
    build_learner,
    learner_class,
    load_learner,
    register_learner,
    with_learner_options,
)
from metaunsup.learners.reptile import Reptile
from metaunsup.learners.tabular import TabularKMeans

__all__ = [
    "ANIL",
    "IMAML",
    "LEARNERS",
    "MAML",
    "OCMAML",
    "AdaptedState",
    "AdaptiveEmbedder",
    "AnomalyScorer",
    "BoundaryScorer",
    "ClusterMAML",
    "ClusteringLearner",
    "Embedder",
    "FewShotLearner",
    "MetaGMVAE",
    "MetaKMeansLearner",
    "MetaLearner",
    "MetaSGD",
    "MetaSVDD",
    "ProtoNet",
    "Reptile",
    "TabularKMeans",
    "build_learner",
    "check_fits",
    "learner_class",
    "load_learner",
    "register_learner",
    "with_learner_options",
]
