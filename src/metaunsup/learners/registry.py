"""The one place that knows the learners' names: register, build and load them.

A learner is rebuilt from its ``config()`` dict, e.g.::

    {"name": "maml", "net": {"name": "conv4", "in_channels": 1, "n_way": 5, "hidden": 64,
     "image_size": [28, 28], "norm": "batch", "groups": 8, "depth": 4},
     "inner_lr": 0.4, "inner_steps": 1, "test_steps": 3, "first_order": false}

then ``load_state_dict`` restores its weights (:func:`load_learner` does both from a checkpoint).
A new learner is one module with a :class:`~metaunsup.learners.base.MetaLearner` subclass and
one :func:`register_learner` call; code outside the package registers its own the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch

from metaunsup.checkpoint import (
    load_model_state,
    read_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
)
from metaunsup.errors import CheckpointError, ConfigError
from metaunsup.learners.anil import ANIL
from metaunsup.learners.base import MetaLearner
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
from metaunsup.learners.reptile import Reptile
from metaunsup.learners.tabular import TabularKMeans

__all__ = [
    "LEARNERS",
    "build_learner",
    "learner_class",
    "load_learner",
    "register_learner",
    "with_learner_options",
]

#: Registered learner classes by their ``name``.
LEARNERS: dict[str, type[MetaLearner]] = {}

L = TypeVar("L", bound=type[MetaLearner])


def register_learner(cls: L) -> L:
    """Add ``cls`` under ``cls.name`` (usable as a class decorator); a name is taken once."""
    if not (isinstance(cls, type) and issubclass(cls, MetaLearner)):
        raise ConfigError(f"register_learner needs a MetaLearner subclass, got {cls!r}")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{cls.__name__} needs a class attribute 'name' to be registered")
    if LEARNERS.get(name, cls) is not cls:
        raise ConfigError(f"a learner named {name!r} is registered already ({LEARNERS[name]})")
    LEARNERS[name] = cls
    return cls


#: The learners that come with metaunsup: one line each.
for _builtin in (
    MAML,
    MetaSGD,
    Reptile,
    ANIL,
    ProtoNet,
    MetaGMVAE,
    MetaKMeansLearner,
    ClusterMAML,
    IMAML,
    MetaSVDD,
    OCMAML,
    TabularKMeans,
):
    register_learner(_builtin)


def learner_class(name: str) -> type[MetaLearner]:
    """The class registered as ``name``; :class:`ConfigError` listing the names otherwise."""
    if name not in LEARNERS:
        raise ConfigError(f"unknown learner {name!r}; choose one of: {', '.join(LEARNERS)}")
    return LEARNERS[name]


def build_learner(config: Mapping[str, Any]) -> MetaLearner:
    """A learner (fresh weights) from its ``config()`` dict; see the module docstring."""
    if not isinstance(config, Mapping) or "name" not in config:
        raise ConfigError(f"a learner config must be a dict with a 'name', got {config!r}")
    return learner_class(config["name"]).from_config(config)


def load_learner(
    name_or_path: str | Path,
    device: torch.device | str = "cpu",
    *,
    example_shape: tuple[int, ...] | None = None,
) -> MetaLearner:
    """A trained learner, in evaluation mode, from a checkpoint file or a packaged name.

    Raises :class:`CheckpointError` when the file holds no learner, a learner this version
    cannot build, or weights that do not fit the configuration they were saved with; with
    ``example_shape`` (of the data it is meant for), :class:`~metaunsup.errors.DataError` when
    the learner's network does not take such examples (:mod:`metaunsup.learners.fit`).
    """
    path = resolve_checkpoint(name_or_path)
    tensors, meta = read_checkpoint(path)
    if "learner" not in meta:
        raise CheckpointError(f"{str(path)!r} holds no learner configuration")
    try:
        learner = build_learner(meta["learner"])
    except ConfigError as err:
        raise CheckpointError(
            f"{str(path)!r} describes a learner this version cannot build: {err}"
        ) from None
    load_model_state(learner, tensors, str(path))
    absent = {name for name in learner.state_dict() if f"model.{name}" not in tensors}
    if absent:
        learner.restore_missing_state(absent, meta.get("run") or {})
    if example_shape is not None:
        check_fits(learner, tuple(example_shape), f"checkpoint {str(name_or_path)!r}")
    return learner.to(device).eval()


def with_learner_options(
    name_or_path: str | Path, out: str | Path, options: Mapping[str, Any]
) -> Path:
    """Write to ``out`` the checkpoint ``name_or_path`` with ``options`` set in its learner
    configuration (its weights and the rest of its metadata as they are), for settings that
    act after meta-training (e.g. ``TabularKMeans``'s ``score_neighbors``): one model scored
    several ways without training it again.

    Raises :class:`~metaunsup.errors.ConfigError` when the learner refuses an option (unknown
    or out of range), before anything is written; ``out`` is written atomically.
    """
    tensors, meta = read_checkpoint(resolve_checkpoint(name_or_path))
    current = build_learner(meta["learner"]).config()  # every option, defaults filled in
    unknown = sorted(set(options) - set(current))
    if unknown:
        raise ConfigError(f"learner {current['name']!r} has no option {', '.join(unknown)}")
    config = {**current, **options}
    load_model_state(build_learner(config), tensors, str(name_or_path))
    return save_checkpoint(out, tensors, {**meta, "learner": config})
