"""Typed run configurations, read from TOML and validated with messages that say what to fix.

A run config has four tables::

    name = "omniglot-maml-5w1s"
    [data]     dataset, split, val_fraction, val_by, rotations
    [task]     kind (a registered task kind: "fewshot", "clustering"), n_way, k_shot, n_query
    [learner]  name + the learner's own options (passed to ``learners.build_learner``)
    [train]    steps, meta_batch, lr, optimizer, seed, validation and checkpoint cadence, device
    [unsupervised]  optional: make the tasks from the unlabeled data (CACTUs, UMTRA), see
               :class:`UnsupervisedConfig`

Unknown keys are errors (a typo must not be silently ignored).
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from metaunsup.errors import ConfigError

if TYPE_CHECKING:
    from metaunsup.evaluation.protocol import TaskKind

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass(frozen=True)
class DataConfig:
    """Where meta-training tasks come from.

    ``val_fraction`` of the split's classes (chosen with ``seed``) are held out for
    meta-validation; with ``val_by = "examples"`` it is that fraction of every class's examples
    instead (validation tasks then use the training classes: for datasets with no more classes
    than a task has, e.g. 10-way clustering of digits). ``rotations`` adds the 90°, 180° and
    270° rotations of every class as new classes (the usual Omniglot augmentation), applied to
    meta-training classes only; in a run without labels the rotated copies of every image join
    the unlabeled images (no label is read: pre-training and CACTUs see them like the others).
    ``classes`` (default: all) keeps only those class ids of the
    split, e.g. the eight meta-training digits of MT-MNIST; in a run without labels the
    selection only decides which images are read (their labels never reach the training).
    """

    dataset: str
    split: str
    root: str | None = None
    val_fraction: float = 0.1
    val_by: str = "classes"
    rotations: bool = False
    classes: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class TaskConfig:
    """Shape of the meta-training tasks.

    ``val_n_way`` sets the classes of the meta-validation tasks when they should differ from
    training (e.g. Prototypical Networks train 60-way and are tested 5-way); 0 means ``n_way``.
    Clustering tasks (``kind = "clustering"``) hold ``n_way`` classes × ``k_shot`` examples and
    no query: ``n_query`` is ignored for them.
    """

    kind: str = "fewshot"
    n_way: int = 5
    k_shot: int = 1
    n_query: int = 15
    val_n_way: int = 0


#: Values of ``train.precision``.
PRECISIONS = ("float32", "float64", "bf16")


@dataclass(frozen=True)
class TrainConfig:
    """The outer loop.

    ``precision``: ``"float32"``; ``"float64"`` (weights and tasks in double precision, for
    exactness checks); or ``"bf16"``, bfloat16 autocast of the meta-loss on CUDA (weights and
    optimiser stay float32), refused where it is not safe (see
    :func:`metaunsup.training.build.precision_objective`).

    ``init``: a checkpoint (path or packaged name) of the same learner and network whose
    weights the run starts from instead of ``seed``'s random ones - a warm start, e.g. a second
    stage of a run at a lower learning rate (the optimiser starts afresh). Empty: none.

    ``ema``: the decay of an exponential moving average of the weights (Polyak & Juditsky,
    SIAM J. Control Optim. 1992; as in mean teachers, Tarvainen & Valpola, NeurIPS 2017), in
    [0, 1); 0: none. With it, validation and the model checkpoints (``best.safetensors``)
    hold the averaged weights, which smooth the step-to-step noise of small meta-batches; the
    optimiser steps the raw weights, which ``last.safetensors`` keeps beside the average.
    """

    steps: int = 1000
    meta_batch: int = 4
    lr: float = 1e-3
    optimizer: str = "adam"
    lr_decay_steps: int = 0
    lr_decay: float = 0.5
    grad_clip: float = 0.0
    seed: int = 0
    val_every: int = 500
    val_tasks: int = 100
    val_metric: str = "acc"
    checkpoint_every: int = 100
    log_every: int = 1
    device: str = "cpu"
    threads: int = 0
    precision: str = "float32"
    init: str = ""
    ema: float = 0.0


#: Values of ``unsupervised.tasks``.
UNSUPERVISED_TASKS = ("cactus", "umtra")


@dataclass(frozen=True)
class UnsupervisedConfig:
    """Meta-training with no labels: how tasks are made from the unlabeled split.

    With this table the training split is read through
    :class:`~metaunsup.data.unlabeled.UnlabeledView` (reading a label raises). There are no
    labels to validate with: by default the last step is kept; with ``val_fraction`` the
    checkpoint is chosen on held-out pseudo-tasks instead (no label is read either way).

    ``tasks``:
        ``"cactus"`` — clusters of the embeddings play the classes (Hsu et al. 2019);
        ``"umtra"`` — ``n_way`` random images are the classes, their augmentations the queries
        (Khodadadeh et al. 2019; few-shot tasks with ``k_shot = 1``).
    ``pretrain_steps`` (and ``pretrain_batch``, ``pretrain_lr``, ``pretrain_temperature``):
        SimCLR pre-training of the learner's own backbone before meta-training
        (:mod:`metaunsup.embed.simclr`); 0 skips it. CACTUs then clusters the pre-trained features;
        without pre-training it clusters the pixels. The pre-training is checkpointed every
        ``train.checkpoint_every`` steps, so ``--resume`` continues it where it stopped.
    ``augment``:
        Augmentation preset of pre-training and UMTRA (``"auto"``: by example shape).
    ``partitions``, ``clusters``, ``scale``, ``n_init``, ``fit_size``:
        CACTUs: partitions of ``clusters`` k-means clusters each, random per-dimension scaling,
        restarts and subsample size of each fit (:func:`~metaunsup.tasks.cactus_partitions`).
    ``spectral_dims``, ``neighbors``:
        When ``spectral_dims > 0``, CACTUs clusters the spectral embedding (that many
        eigenvectors) of the ``neighbors``-nearest-neighbour graph of the features instead of
        the features themselves (:func:`~metaunsup.cluster.graph.spectral_embedding`).
    ``features_from``:
        CACTUs clusters the features of another run's pre-trained backbone instead of this
        run's own: the name of a run folder beside this one (same parent folder), whose
        ``pretrain.safetensors`` must exist. A cheaper network then learns from the
        pseudo-classes a stronger one finds (still without labels); ``""``: this run's own.
    ``consensus``, ``consensus_dims``, ``consensus_neighbors``:
        When ``consensus > 0`` (needs ``spectral_dims > 0``), the ``partitions`` are not drawn
        from one spectral embedding but from the consensus of many: ``consensus`` scaled
        k-means partitions of the spectral embedding of each graph (every ``consensus_dims`` ×
        ``consensus_neighbors``; empty: ``spectral_dims`` / ``neighbors``), then four times
        ``partitions`` candidates from their co-association, of which the ``partitions`` that
        cut it least are kept (label-free;
        :func:`~metaunsup.training.unsupervised.consensus_partitions`).
    ``task_augment``:
        Augmentation of every image of every CACTUs pseudo-task (``"none"``: the images as they
        are; ``"auto"``: the mild preset for the example shape, ``"8x8"`` or ``"28x28"``; or a
        preset name, :meth:`~metaunsup.data.augment.Augment.preset`). On a small training set
        the network otherwise learns its pseudo-tasks' very images by heart and its clusters of
        new images fall short of the pseudo-classes it was taught. Applies to CACTUs tasks of
        clustering and few-shot runs.
    ``pseudo_groups``:
        One-class runs of the ``anomaly-hard`` kind: the clusters of each partition are split
        into this many groups by k-means of their centres in the embedding, and a pseudo-task's
        anomalies come from the normal cluster's own group, its look-alikes (the label-free
        analogue of Omniglot's same-alphabet anomalies;
        :func:`~metaunsup.tasks.pseudo.cactus_anomaly.pseudo_class_groups`). ``0``: no groups
        (the ``anomaly`` kind: anomalies from any other cluster).
    ``val_fraction``:
        Label-free model selection: that fraction of the unlabeled examples (drawn with
        ``train.seed``) is held out of every pseudo-task. The partitions still cover them, so
        each has a pseudo-class; every ``train.val_every`` steps the model is scored on
        ``train.val_tasks`` fixed tasks of the held-out examples against their pseudo-classes
        (of the first partition; ``train.val_metric``), and ``best.safetensors`` keeps the step
        that scored best. ``0``: no selection, the last step is kept.
    """

    tasks: str = "cactus"
    pretrain_steps: int = 0
    pretrain_batch: int = 256
    pretrain_lr: float = 1e-3
    pretrain_temperature: float = 0.5
    augment: str = "auto"
    partitions: int = 20
    clusters: int = 10
    scale: bool = False
    n_init: int = 10
    fit_size: int = 10000
    spectral_dims: int = 0
    neighbors: int = 10
    features_from: str = ""
    consensus: int = 0
    consensus_dims: list[int] = field(default_factory=list)
    consensus_neighbors: list[int] = field(default_factory=list)
    task_augment: str = "none"
    pseudo_groups: int = 0
    val_fraction: float = 0.0


@dataclass(frozen=True)
class RunConfig:
    """A whole training run."""

    name: str
    data: DataConfig
    task: TaskConfig
    learner: dict[str, Any]
    train: TrainConfig = field(default_factory=TrainConfig)
    unsupervised: UnsupervisedConfig | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _build(cls: type, table: Any, where: str):
    if not isinstance(table, dict):
        raise ConfigError(f"[{where}] must be a table")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise ConfigError(
            f"[{where}] has unknown key(s) {', '.join(unknown)}; allowed: {', '.join(fields)}"
        )
    missing = [
        n
        for n, f in fields.items()
        if f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
        and n not in table
    ]
    if missing:
        raise ConfigError(f"[{where}] is missing {', '.join(missing)}")
    values = {}
    for name, value in table.items():
        expected = fields[name].type
        values[name] = _check_type(value, expected, f"{where}.{name}")
    return cls(**values)


def _check_type(value: Any, expected: Any, where: str) -> Any:
    text = str(expected)
    if text.startswith("int"):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif text.startswith("float"):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
        if ok and not math.isfinite(value):
            raise ConfigError(f"{where} must be a finite number, got {value!r}")
    elif text.startswith("bool"):
        ok = isinstance(value, bool)
    elif text.startswith("str | None"):
        ok = value is None or isinstance(value, str)
    elif text.startswith("str"):
        ok = isinstance(value, str)
    elif text.startswith("list[int]"):
        ok = isinstance(value, list) and all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value
        )
        text = "a list of class ids (integers >= 0)"
    else:
        ok = True
    if not ok:
        what = text if text.startswith("a list") else text.split(" ")[0]
        raise ConfigError(f"{where} must be {what}, got {value!r}")
    return value


def _validate(cfg: RunConfig) -> RunConfig:
    from metaunsup.evaluation.kinds import TASK_KINDS

    t, tr, d = cfg.task, cfg.train, cfg.data
    if t.kind not in TASK_KINDS:
        choices = " or ".join(repr(k) for k in TASK_KINDS)
        raise ConfigError(f"task.kind must be {choices}, got {t.kind!r}")
    kind = TASK_KINDS[t.kind]
    for name in ("n_way", "k_shot"):
        if getattr(t, name) < 1:
            raise ConfigError(f"task.{name} must be at least 1, got {getattr(t, name)}")
    if t.val_n_way < 0:
        raise ConfigError(f"task.val_n_way must be >= 0, got {t.val_n_way}")
    if t.n_query < 0 or (kind.has_query and t.n_query < 1):
        raise ConfigError(
            f"task.n_query must be at least 1 for {t.kind} tasks (they have a query), "
            f"got {t.n_query}"
        )
    for name in ("steps", "meta_batch", "val_every", "val_tasks", "checkpoint_every", "log_every"):
        if getattr(tr, name) < 1:
            raise ConfigError(f"train.{name} must be at least 1, got {getattr(tr, name)}")
    if not tr.lr > 0:
        raise ConfigError(f"train.lr must be positive, got {tr.lr}")
    if tr.optimizer not in ("adam", "sgd"):
        raise ConfigError(f"train.optimizer must be 'adam' or 'sgd', got {tr.optimizer!r}")
    if tr.seed < 0 or tr.threads < 0 or tr.grad_clip < 0 or tr.lr_decay_steps < 0:
        raise ConfigError("train.seed, threads, grad_clip and lr_decay_steps must be >= 0")
    if not 0.0 <= tr.ema < 1.0:
        raise ConfigError(f"train.ema must be in [0, 1) (0: no averaging), got {tr.ema}")
    if not 0.0 <= d.val_fraction < 1.0:
        raise ConfigError(f"data.val_fraction must be in [0, 1), got {d.val_fraction}")
    if d.val_by not in ("classes", "examples"):
        raise ConfigError(f"data.val_by must be 'classes' or 'examples', got {d.val_by!r}")
    if tr.device != "cpu" and not tr.device.startswith("cuda"):
        raise ConfigError(f"train.device must be 'cpu' or 'cuda[:N]', got {tr.device!r}")
    if tr.precision not in PRECISIONS:
        choices = ", ".join(PRECISIONS)
        raise ConfigError(f"train.precision must be one of {choices}, got {tr.precision!r}")
    if cfg.unsupervised is not None:
        _validate_unsupervised(cfg.unsupervised, t, kind)
    if "name" not in cfg.learner or not isinstance(cfg.learner["name"], str):
        raise ConfigError("[learner] needs a 'name', e.g. name = \"maml\"")
    return cfg


def _check_pseudo_groups(u: UnsupervisedConfig, kind: TaskKind) -> None:
    """``pseudo_groups`` is what CACTUs pseudo-tasks of the ``anomaly-hard`` kind need (their
    anomalies come from the normal cluster's group), and nothing else reads it."""
    if u.pseudo_groups < 0 or u.pseudo_groups == 1:
        raise ConfigError(f"unsupervised.pseudo_groups must be 0 or >= 2, got {u.pseudo_groups}")
    hard = kind.name == "anomaly-hard" and u.tasks == "cactus"
    if hard and not u.pseudo_groups:
        from metaunsup.tasks.pseudo.cactus_anomaly import no_groups_error

        raise no_groups_error(kind.name)
    if u.pseudo_groups and not hard:
        raise ConfigError(
            "unsupervised.pseudo_groups groups the clusters of CACTUs anomaly-hard pseudo-tasks; "
            f"tasks = {u.tasks!r} of kind {kind.name!r} do not read it: remove it"
        )


def _validate_unsupervised(u: UnsupervisedConfig, t: TaskConfig, kind: TaskKind) -> None:
    """Check the ``[unsupervised]`` table against the run's tasks (``kind``: its task kind)."""
    if u.tasks not in UNSUPERVISED_TASKS:
        choices = ", ".join(UNSUPERVISED_TASKS)
        raise ConfigError(f"unsupervised.tasks must be one of {choices}, got {u.tasks!r}")
    for name in ("pretrain_batch", "partitions", "clusters", "n_init", "fit_size", "neighbors"):
        if getattr(u, name) < 1:
            raise ConfigError(f"unsupervised.{name} must be at least 1, got {getattr(u, name)}")
    if u.consensus < 0:
        raise ConfigError(f"unsupervised.consensus must be >= 0, got {u.consensus}")
    if u.consensus and u.spectral_dims < 1:
        raise ConfigError("unsupervised.consensus needs spectral_dims >= 1 (it combines graphs)")
    if 0 in u.consensus_dims or 0 in u.consensus_neighbors:
        raise ConfigError("unsupervised.consensus_dims and consensus_neighbors must be >= 1")
    if u.spectral_dims < 0:
        raise ConfigError(f"unsupervised.spectral_dims must be >= 0, got {u.spectral_dims}")
    if u.pretrain_steps < 0:
        raise ConfigError(f"unsupervised.pretrain_steps must be >= 0, got {u.pretrain_steps}")
    if not (u.pretrain_lr > 0 and u.pretrain_temperature > 0):
        raise ConfigError("unsupervised.pretrain_lr and pretrain_temperature must be positive")
    if u.tasks == "umtra" and (not kind.has_query or t.k_shot != 1):
        raise ConfigError("UMTRA tasks are few-shot with k_shot = 1 (one image per class)")
    source = u.features_from
    if source and (u.tasks != "cactus" or source in (".", "..") or Path(source).name != source):
        raise ConfigError(
            "unsupervised.features_from names a CACTUs run folder beside this one "
            f"(a plain folder name), got {source!r} with tasks = {u.tasks!r}"
        )
    if u.tasks == "cactus" and u.clusters < t.n_way:
        raise ConfigError(
            f"unsupervised.clusters ({u.clusters}) must be at least task.n_way ({t.n_way})"
        )
    # CACTUs tasks of clustering and few-shot runs (not UMTRA, not a kind's own pseudo-tasks)
    plain_cactus = u.tasks == "cactus" and kind.pseudo_source is None
    if u.task_augment != "none" and not plain_cactus:
        raise ConfigError(
            "unsupervised.task_augment applies to CACTUs tasks of clustering and few-shot "
            f"runs, not to {u.tasks} tasks of kind {t.kind!r}; remove it"
        )
    _check_pseudo_groups(u, kind)
    if not 0.0 <= u.val_fraction < 1.0:
        raise ConfigError(f"unsupervised.val_fraction must be in [0, 1), got {u.val_fraction}")
    if u.val_fraction and not plain_cactus:
        raise ConfigError(
            "unsupervised.val_fraction selects among checkpoints on held-out CACTUs tasks "
            f"of clustering and few-shot runs, not {u.tasks} tasks of kind {t.kind!r}; "
            "remove it"
        )
    if u.task_augment not in ("none", "auto"):
        from metaunsup.data.augment import Augment

        try:
            Augment.preset(u.task_augment)
        except ConfigError as err:
            raise ConfigError(f"unsupervised.task_augment: {err}") from None


def config_from_dict(raw: dict[str, Any]) -> RunConfig:
    """Build and validate a :class:`RunConfig` from a parsed TOML/JSON mapping."""
    allowed = {"name", "data", "task", "learner", "train", "unsupervised"}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ConfigError(f"unknown top-level key(s) {', '.join(unknown)}; allowed: {allowed}")
    for key in ("name", "data", "learner"):
        if key not in raw:
            raise ConfigError(f"config is missing '{key}'")
    if not isinstance(raw["name"], str) or not raw["name"]:
        raise ConfigError("'name' must be a non-empty string")
    name = raw["name"]
    if name in (".", "..") or Path(name).name != name or "\\" in name or not name.isprintable():
        raise ConfigError(
            f"'name' is the run's folder under runs/, so it must be a plain folder name (no "
            f"'/', '\\' or '..'), got {name!r}"
        )
    if not isinstance(raw["learner"], dict):
        raise ConfigError("[learner] must be a table")
    cfg = RunConfig(
        name=raw["name"],
        data=_build(DataConfig, raw["data"], "data"),
        task=_build(TaskConfig, raw.get("task", {}), "task"),
        learner=dict(raw["learner"]),
        train=_build(TrainConfig, raw.get("train", {}), "train"),
        unsupervised=(
            _build(UnsupervisedConfig, raw["unsupervised"], "unsupervised")
            if "unsupervised" in raw
            else None
        ),
    )
    return _validate(cfg)


def packaged_configs() -> dict[str, Path]:
    """The run configs that come with the package (``digits-unsup``, the demo's run), by name."""
    folder = Path(str(resources.files("metaunsup") / "configs"))
    return {p.stem: p for p in sorted(folder.glob("*.toml"))}


def resolve_config(path_or_name: str | os.PathLike) -> Path:
    """A config file: the path itself, or the packaged config of that name (``digits-unsup``)."""
    p = Path(path_or_name).expanduser()
    if p.is_file():
        return p
    packaged = packaged_configs()
    if str(path_or_name) in packaged:
        return packaged[str(path_or_name)]
    if p.is_dir():
        raise ConfigError(f"config {str(p)!r} is a folder; give a .toml file")
    raise ConfigError(
        f"config file {str(p)!r} not found (packaged configs: {', '.join(packaged) or 'none'})"
    )


def load_config(
    path_or_name: str | os.PathLike, overrides: dict[str, Any] | None = None
) -> RunConfig:
    """Read a TOML run config (a path, or a packaged config's name); ``overrides`` maps
    ``"train.steps"``-style keys to values."""
    p = resolve_config(path_or_name)
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"config {str(p)!r} is not valid TOML: {err}") from None
    except OSError as err:
        raise ConfigError(f"cannot read config {str(p)!r} ({err.strerror or err})") from None
    for dotted, value in (overrides or {}).items():
        table, _, key = dotted.rpartition(".")
        target = raw.setdefault(table, {}) if table else raw
        if not isinstance(target, dict):
            raise ConfigError(f"[{table}] must be a table")
        target[key] = value
    return config_from_dict(raw)
