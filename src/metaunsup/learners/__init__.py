"""Meta-learners, one algorithm per module, all implementing :class:`MetaLearner`.

``build_learner(config)`` rebuilds a learner from its ``config()`` dict, e.g.::

    {"name": "maml", "net": {"name": "conv4", "in_channels": 1, "n_way": 5, "hidden": 64,
     "image_size": [28, 28], "norm": "batch", "groups": 8, "depth": 4},
     "inner_lr": 0.4, "inner_steps": 1, "test_steps": 3, "first_order": false}

then ``load_state_dict`` restores its weights. Unknown names raise
:class:`~metaunsup.errors.ConfigError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from metaunsup.errors import ConfigError
from metaunsup.learners.anil import ANIL
from metaunsup.learners.base import AdaptedState, MetaLearner
from metaunsup.learners.cluster_maml import ClusterMAML
from metaunsup.learners.maml import MAML
from metaunsup.learners.meta_gmvae import MetaGMVAE
from metaunsup.learners.meta_kmeans import MetaKMeansLearner
from metaunsup.learners.metasgd import MetaSGD
from metaunsup.learners.protonet import ProtoNet
from metaunsup.learners.reptile import Reptile

LEARNERS: dict[str, type[MetaLearner]] = {
    cls.name: cls
    for cls in (MAML, MetaSGD, Reptile, ANIL, ProtoNet, MetaGMVAE, MetaKMeansLearner, ClusterMAML)
}


def build_learner(config: Mapping[str, Any]) -> MetaLearner:
    """A learner (fresh weights) from its ``config()`` dict; see the module docstring."""
    if not isinstance(config, Mapping) or "name" not in config:
        raise ConfigError(f"a learner config must be a dict with a 'name', got {config!r}")
    name = config["name"]
    if name not in LEARNERS:
        raise ConfigError(f"unknown learner {name!r}; choose one of: {', '.join(LEARNERS)}")
    return LEARNERS[name].from_config(config)


__all__ = [
    "ANIL",
    "LEARNERS",
    "MAML",
    "AdaptedState",
    "ClusterMAML",
    "MetaKMeansLearner",
    "MetaLearner",
    "MetaSGD",
    "ProtoNet",
    "Reptile",
    "build_learner",
]
