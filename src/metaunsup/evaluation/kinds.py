"""The task kinds: the one place that knows their names.

A kind (:class:`~metaunsup.evaluation.protocol.TaskKind`) names its sampler, its scores, the
learner ability it needs, its baselines and its report columns; configs, the command line,
meta-validation, evaluation and reports look it up here instead of branching on its name. A new
kind is one module that defines its ``TaskKind`` (and, where it needs them, a sampler in
``tasks/`` and learners with a new ability) plus one :func:`register_task_kind` line below.
"""

from __future__ import annotations

from metaunsup.errors import ConfigError
from metaunsup.evaluation.anomaly import ANOMALY, ANOMALY_HARD
from metaunsup.evaluation.clustering import CLUSTERING
from metaunsup.evaluation.fewshot import FEWSHOT
from metaunsup.evaluation.protocol import TaskKind

__all__ = ["TASK_KINDS", "register_task_kind", "task_kind"]

#: Registered task kinds by name.
TASK_KINDS: dict[str, TaskKind] = {}


def register_task_kind(kind: TaskKind) -> TaskKind:
    """Add ``kind`` under its name (a name is taken once)."""
    if not isinstance(kind, TaskKind):
        raise ConfigError(f"register_task_kind needs a TaskKind, got {kind!r}")
    if TASK_KINDS.get(kind.name, kind) is not kind:
        raise ConfigError(f"a task kind named {kind.name!r} is registered already")
    TASK_KINDS[kind.name] = kind
    return kind


def task_kind(name: str) -> TaskKind:
    """The kind called ``name``; :class:`ConfigError` listing the kinds otherwise."""
    if name not in TASK_KINDS:
        raise ConfigError(f"unknown task kind {name!r}; choose one of: {', '.join(TASK_KINDS)}")
    return TASK_KINDS[name]


#: The kinds that come with metaunsup: one line each.
for _builtin in (CLUSTERING, FEWSHOT, ANOMALY, ANOMALY_HARD):
    register_task_kind(_builtin)
