"""From a :class:`~metaunsup.training.config.RunConfig` to a trained checkpoint.

This module wires the pieces a run needs — dataset, class split, task source, learner,
validation — and hands them to the algorithm-agnostic :class:`~metaunsup.training.trainer.Trainer`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from metaunsup import data
from metaunsup.data.base import Dataset
from metaunsup.data.transforms import with_rotations
from metaunsup.errors import ConfigError
from metaunsup.evaluation.kinds import task_kind
from metaunsup.evaluation.protocol import TaskShape, evaluate
from metaunsup.learners import LEARNERS, MetaLearner, build_learner, learner_class
from metaunsup.nets import BACKBONES
from metaunsup.tasks import split_classes
from metaunsup.training.config import RunConfig
from metaunsup.training.trainer import Trainer, TrainResult

log = logging.getLogger(__name__)

#: Seed offset of the fixed meta-validation tasks (distinct from the training stream).
VAL_SEED_OFFSET = 1_000_003
#: Meta-validation tasks drawn and run at a time.
VAL_CHUNK = 50


def learner_config(cfg: RunConfig, example_shape: tuple[int, ...]) -> dict[str, Any]:
    """The learner config with the network's input shape and head size filled in from the data.

    ``[learner.net]`` may omit what its backbone's ``shape_config`` fills in from the data
    (e.g. ``in_channels`` and ``image_size`` of a Conv4, ``in_features`` of an MLP) and
    ``n_way`` (from ``[task]``). Learners declared ``headless`` (metric, clustering and
    generative ones) get no head.
    """
    learner = dict(cfg.learner)
    net = dict(learner.get("net", {"name": "conv4" if len(example_shape) == 3 else "mlp"}))
    name = net.get("name")
    backbone = BACKBONES.get(name) if isinstance(name, str) else None
    if backbone is not None:  # an unknown name is reported when the learner is built
        for key, value in backbone.shape_config(example_shape).items():
            net.setdefault(key, value)
    if learner_class(learner["name"]).headless:
        net["n_way"] = None  # a metric or clustering learner embeds; it has no head
    else:  # a kind whose tasks have a fixed number of classes sizes the head (one-class: 1)
        net.setdefault("n_way", task_kind(cfg.task.kind).fixed_n_way or cfg.task.n_way)
    learner["net"] = net
    return learner


def task_kinds(name: str) -> tuple[str, ...]:
    """The ``task.kind`` values learner ``name`` meta-trains on (its declared ``task_kinds``)."""
    return learner_class(name).task_kinds


def split_examples(ds: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """Hold out ``fraction`` of every class's examples (at least one per class, seeded).

    Returns ``(kept, held_out)``; both keep all classes and their ids.
    """
    g = torch.Generator().manual_seed(seed)
    held = []
    for c in range(ds.n_classes):
        idx = torch.nonzero(ds.y == c).flatten()
        n_held = max(1, round(fraction * idx.numel())) if idx.numel() > 1 else 0
        held.append(idx[torch.randperm(idx.numel(), generator=g)[:n_held]])
    mask = torch.zeros(len(ds), dtype=torch.bool)
    mask[torch.cat(held)] = True

    def part(keep: torch.Tensor, suffix: str) -> Dataset:
        return Dataset(
            name=ds.name,
            split=f"{ds.split}/{suffix}",
            x=ds.x[keep],
            y=ds.y[keep],
            classes=ds.classes,
            groups=ds.groups,
            info=dict(ds.info),
        )

    return part(~mask, "meta-train-examples"), part(mask, "meta-val-examples")


def load_training_split(cfg: RunConfig) -> Dataset:
    """The run's training split, restricted to ``data.classes`` when the config names some."""
    ds = data.load(cfg.data.dataset, cfg.data.split, root=cfg.data.root)
    if not cfg.data.classes:
        return ds
    bad = [c for c in cfg.data.classes if c >= ds.n_classes]
    if bad or len(set(cfg.data.classes)) != len(cfg.data.classes):
        raise ConfigError(
            f"data.classes must be distinct class ids of {ds.name}/{ds.split} "
            f"(0..{ds.n_classes - 1}), got {cfg.data.classes}"
        )
    return ds.subset_classes(cfg.data.classes)


def split_for_training(cfg: RunConfig) -> tuple[Dataset, Dataset | None]:
    """Load the meta-training split and hold out ``val_fraction`` of its classes (or, with
    ``data.val_by = "examples"``, of every class's examples)."""
    ds = load_training_split(cfg)
    if cfg.data.val_by == "examples" and cfg.data.val_fraction > 0:
        train_ds, held_out = split_examples(ds, cfg.data.val_fraction, cfg.train.seed)
        if cfg.data.rotations:
            train_ds = with_rotations(train_ds)
        return train_ds, held_out
    n_val = round(cfg.data.val_fraction * ds.n_classes)
    val: Dataset | None = None
    if n_val > 0:
        parts = split_classes(
            ds.n_classes, counts=(ds.n_classes - n_val, n_val, 0), seed=cfg.train.seed
        )
        train_ds, val, _ = parts.apply(ds)
    else:
        train_ds = ds
    if cfg.data.rotations:
        train_ds = with_rotations(train_ds)
    return train_ds, val


def make_validator(
    cfg: RunConfig, val: Dataset, device: torch.device | str
) -> Callable[[MetaLearner], dict[str, float]]:
    """Validation on a fixed set of meta-validation tasks (the same tasks every time), scored
    by the task kind's headline score (query accuracy for few-shot runs, Hungarian clustering
    accuracy for clustering runs): ``{score: mean, score + "_ci95": half-width}``."""
    t = cfg.task
    kind = task_kind(t.kind)
    shape = TaskShape(t.val_n_way or t.n_way, t.k_shot, t.n_query if kind.has_query else 0)
    headline = kind.scores[0]

    def validate(learner: MetaLearner) -> dict[str, float]:
        learner.eval()
        report = evaluate(
            kind,
            val,
            [kind.method_of("val", learner, device=device)],
            shape=shape,
            n_tasks=cfg.train.val_tasks,
            seed=cfg.train.seed + VAL_SEED_OFFSET,
            chunk_size=VAL_CHUNK,
            method_seed=cfg.train.seed,
        )
        score = report.results[0].scores[headline]
        return {headline: score.mean, f"{headline}_ci95": score.ci95}

    return validate


def train_run(
    cfg: RunConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    tensorboard: str | Path | None = None,
) -> TrainResult:
    """Meta-train the run described by ``cfg`` into ``out_dir`` (``--resume`` continues;
    ``tensorboard``: a folder for TensorBoard event files of the training log)."""
    t, tr = cfg.task, cfg.train
    kinds = task_kinds(cfg.learner["name"])
    if cfg.learner["name"] in LEARNERS and t.kind not in kinds:
        others = ", ".join(n for n in LEARNERS if t.kind in task_kinds(n))
        raise ConfigError(
            f"learner {cfg.learner['name']!r} trains on task.kind = {' or '.join(kinds)!r}, "
            f"not {t.kind!r}" + (f" (learners for {t.kind!r} tasks: {others})" if others else "")
        )
    if tr.threads:
        torch.set_num_threads(tr.threads)
    device = torch.device(tr.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is 'cuda' but no CUDA device is available")
    run_config = cfg.to_dict()
    if cfg.unsupervised is not None:
        from metaunsup.data.unlabeled import UnlabeledView
        from metaunsup.training.unsupervised import unsupervised_source

        # No labels: the whole split, read through a view that refuses labels; no validation.
        view = UnlabeledView(load_training_split(cfg))
        learner = fresh_learner(cfg, view.example_shape)
        source, record = unsupervised_source(cfg, learner, view, out_dir, device, progress, resume)
        run_config["unsupervised_record"] = record
        val = None
    else:
        train_ds, val = split_for_training(cfg)
        kind = task_kind(t.kind)
        shape = TaskShape(t.n_way, t.k_shot, t.n_query if kind.has_query else 0)
        source = kind.make_sampler(train_ds, shape, tr.seed)
        learner = fresh_learner(cfg, train_ds.example_shape)
    trainer = Trainer(
        learner,
        learner.meta_loss,
        source,
        tr,
        out_dir,
        identity={"learner": learner.config()},
        describe={"run": run_config},
        validate=None if val is None else make_validator(cfg, val, device),
        device=device,
        progress=progress,
        tensorboard=tensorboard,
        name=f"meta-train {cfg.name}",
    )
    result = trainer.fit(resume=resume)
    calibrator = task_kind(t.kind).calibrate
    if calibrator is not None:
        from metaunsup.training.calibrate import calibrate_run

        calibrate_run(calibrator, learner, source, Path(out_dir), tr.seed)
    return result


def fresh_learner(cfg: RunConfig, example_shape: tuple[int, ...]) -> MetaLearner:
    """The run's learner with initial weights drawn from ``train.seed`` (before any training)."""
    with torch.random.fork_rng():
        torch.manual_seed(cfg.train.seed)
        return build_learner(learner_config(cfg, example_shape))
