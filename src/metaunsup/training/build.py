"""From a :class:`~metaunsup.training.config.RunConfig` to a trained checkpoint.

This module wires the pieces a run needs — dataset, class split, task source, learner,
validation — and hands them to the algorithm-agnostic :class:`~metaunsup.training.trainer.Trainer`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from metaunsup import data
from metaunsup.checkpoint import (
    load_model_state,
    read_checkpoint,
    read_checkpoint_meta,
    resolve_checkpoint,
)
from metaunsup.data.base import Dataset
from metaunsup.data.transforms import with_rotated_images, with_rotations
from metaunsup.errors import CheckpointError, ConfigError
from metaunsup.evaluation.kinds import task_kind
from metaunsup.evaluation.protocol import Method, TaskShape, evaluate
from metaunsup.fileio import check_output_folder
from metaunsup.learners import LEARNERS, MetaLearner, build_learner, learner_class
from metaunsup.nets import BACKBONES
from metaunsup.tasks import TaskBatch, split_classes
from metaunsup.tasks.synthetic_tables import SYNTHETIC_TABLES, SyntheticTables
from metaunsup.training.config import RunConfig
from metaunsup.training.distributed import (
    DEFAULT_TIMEOUT,
    Distributed,
    from_environment,
    set_threads,
)
from metaunsup.training.trainer import BEST, LAST, LOG, Trainer, TrainResult, read_training_state
from metaunsup.training.unsupervised import PARTITIONS_FILE, PRETRAIN_DIR, PRETRAIN_FILE

if TYPE_CHECKING:
    from metaunsup.data.unlabeled import UnlabeledView
    from metaunsup.training.unsupervised import PseudoValidation

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


@dataclass(frozen=True)
class _CastMethod:
    """A method that sees its tasks' examples in ``dtype`` (the weights' dtype)."""

    method: Method
    dtype: torch.dtype

    @property
    def name(self) -> str:
        return self.method.name

    def run(self, batch: TaskBatch, seed: int) -> torch.Tensor:
        return self.method.run(_cast(batch, self.dtype), seed)


def _cast(batch: TaskBatch, dtype: torch.dtype) -> TaskBatch:
    return dataclasses.replace(batch, x=batch.x.to(dtype))


def bf16_unsafe(learner: MetaLearner) -> str | None:
    """Why bfloat16 autocast would spoil ``learner``'s meta-gradient, or ``None``.

    A second-order inner loop differentiates its own gradients: the Hessian terms of the
    meta-gradient are small differences of large products, which bfloat16's 8-bit mantissa
    loses. iMAML solves a linear system by conjugate gradients on Hessian-vector products,
    which bfloat16 rounding stalls. First-order MAML, Reptile, Prototypical Networks, the
    clustering learners and SimCLR only differentiate a forward pass.
    """
    if learner.name == "imaml":
        return "iMAML's conjugate gradients on bfloat16 Hessian-vector products do not converge"
    if getattr(learner, "first_order", True) is False and learner.train_steps > 0:
        return (
            f"{learner.name}'s second-order inner loop differentiates its own gradients, whose "
            "Hessian terms bfloat16 rounds away; set first_order = true or precision = 'float32'"
        )
    return None


def precision_objective(
    learner: MetaLearner, precision: str, device: torch.device
) -> Callable[[TaskBatch], tuple[torch.Tensor, dict[str, float]]]:
    """``learner.meta_loss`` in ``train.precision``: float32 as is; float64 with the learner
    cast to double and every batch's examples too; bf16 under CUDA autocast (matrix products
    and convolutions in bfloat16, weights, reductions and the optimiser in float32), refused
    on the CPU and where :func:`bf16_unsafe` says why."""
    if precision == "float64":
        learner.double()
        return lambda batch: learner.meta_loss(_cast(batch, torch.float64))
    if precision == "bf16":
        if device.type != "cuda":
            raise ConfigError(
                "train.precision = 'bf16' autocasts on CUDA only (the CPU kernels are float32)"
            )
        reason = bf16_unsafe(learner)
        if reason is not None:
            raise ConfigError(f"train.precision = 'bf16' is not safe here: {reason}")

        def autocast_loss(batch: TaskBatch) -> tuple[torch.Tensor, dict[str, float]]:
            with torch.autocast(device.type, dtype=torch.bfloat16):
                return learner.meta_loss(batch)

        return autocast_loss
    return learner.meta_loss


def make_validator(
    cfg: RunConfig, val: Dataset, device: torch.device | str, shape: TaskShape | None = None
) -> Callable[[MetaLearner], dict[str, float]]:
    """Validation on a fixed set of meta-validation tasks (the same tasks every time), scored
    by the task kind's headline score (query accuracy for few-shot runs, Hungarian clustering
    accuracy for clustering runs): ``{score: mean, score + "_ci95": half-width}``.

    ``shape``: of the validation tasks (default: the run's, with ``task.val_n_way``)."""
    t = cfg.task
    kind = task_kind(t.kind)
    if shape is None:
        shape = TaskShape(t.val_n_way or t.n_way, t.k_shot, t.n_query if kind.has_query else 0)
    headline = kind.scores[0]

    def validate(learner: MetaLearner) -> dict[str, float]:
        learner.eval()
        method = kind.method_of("val", learner, device=device)
        if cfg.train.precision == "float64":
            method = _CastMethod(method, torch.float64)
        report = evaluate(
            kind,
            val,
            [method],
            shape=shape,
            n_tasks=cfg.train.val_tasks,
            seed=cfg.train.seed + VAL_SEED_OFFSET,
            chunk_size=VAL_CHUNK,
            method_seed=cfg.train.seed,
        )
        score = report.results[0].scores[headline]
        return {headline: score.mean, f"{headline}_ci95": score.ci95}

    return validate


@dataclass(frozen=True)
class RunState:
    """What a run folder holds, read from its files' headers (``None``: no such file).

    ``meta_step``: the step of ``last.safetensors`` (meta-training); ``pretrain_step``: of
    ``pretrain/last.safetensors`` (an unfinished pre-training); ``pretrained``: the finished
    pre-training ``pretrain.safetensors``; ``partitions``: the CACTUs partitions;
    ``model``: ``best.safetensors``.
    """

    folder: Path
    meta_step: int | None = None
    pretrain_step: int | None = None
    pretrained: bool = False
    partitions: bool = False
    model: bool = False

    @property
    def holds_run(self) -> bool:
        """A run was started here: writing a new one would replace it."""
        return self.meta_step is not None or self.pretrain_step is not None or self.model

    @property
    def resumable(self) -> bool:
        """There is something a resumed run continues from or reuses."""
        return self.holds_run or self.pretrained or self.partitions

    def describe(self, cfg: RunConfig | None = None) -> str:
        """``"the finished pre-training and meta-training at step 150 of 200"``, or
        ``"nothing"``."""
        parts = []
        if self.pretrain_step is not None:
            total = f" of {cfg.unsupervised.pretrain_steps}" if cfg and cfg.unsupervised else ""
            parts.append(f"pre-training at step {self.pretrain_step}{total}")
        if self.pretrained:
            parts.append("the finished pre-training")
        if self.partitions:
            parts.append("the CACTUs partitions")
        if self.meta_step is not None:
            total = f" of {cfg.train.steps}" if cfg else ""
            parts.append(f"meta-training at step {self.meta_step}{total}")
        elif self.model:
            parts.append("a trained model")
        return " and ".join(parts) or "nothing"


def _step_of(path: Path) -> int | None:
    if not path.is_file():
        return None
    try:
        return int(read_checkpoint_meta(path).get("step", 0))
    except (CheckpointError, TypeError, ValueError):
        return 0  # there, but unreadable: a resume will say what is wrong with it


def run_state(out_dir: str | Path) -> RunState:
    """What the run folder ``out_dir`` holds (see :class:`RunState`)."""
    out = Path(out_dir)
    return RunState(
        folder=out,
        meta_step=_step_of(out / LAST),
        pretrain_step=_step_of(out / PRETRAIN_DIR / LAST),
        pretrained=(out / PRETRAIN_FILE).is_file(),
        partitions=(out / PARTITIONS_FILE).is_file(),
        model=(out / BEST).is_file(),
    )


def clear_run(out_dir: str | Path) -> None:
    """Remove the files a run writes into ``out_dir`` (checkpoints, logs, caches; nothing
    else), so that a new run leaves no mix of old and new files (``--overwrite``)."""
    out = Path(out_dir)
    for name in (LAST, BEST, LOG, PRETRAIN_FILE, PARTITIONS_FILE):
        (out / name).unlink(missing_ok=True)
    pre = out / PRETRAIN_DIR
    for name in (LAST, BEST, LOG):
        (pre / name).unlink(missing_ok=True)
    if pre.is_dir() and not any(pre.iterdir()):
        pre.rmdir()


#: Run settings a resumed run must share with the checkpoint it continues (``train.steps``
#: may grow; the device, threads and cadences may change).
_RESUME_KEYS = {
    "data": ("dataset", "split", "val_fraction", "val_by", "rotations"),
    "task": ("kind", "n_way", "k_shot", "n_query", "val_n_way"),
    "train": (
        "seed",
        "meta_batch",
        "lr",
        "optimizer",
        "lr_decay_steps",
        "lr_decay",
        "grad_clip",
        "ema",
    ),
}


#: Resume settings added after runs were already written: the value an older run had.
_ADDED_LATER: dict[tuple[str, str], Any] = {("train", "ema"): 0.0}


def _check_same_run(cfg: RunConfig, meta: dict[str, Any], path: Path) -> None:
    """:class:`CheckpointError` naming the first setting ``cfg`` changed since ``path``."""
    old, new = meta.get("run"), cfg.to_dict()
    if not isinstance(old, dict):
        return
    keys: list[tuple[str, str | None]] = [
        (table, key) for table, names in _RESUME_KEYS.items() for key in names
    ]
    keys += [("unsupervised", key) for key in (new.get("unsupervised") or {})]
    if (old.get("unsupervised") is None) != (new.get("unsupervised") is None):
        keys.insert(0, ("unsupervised", None))
    for table, key in keys:
        was = (
            (old.get(table) or {}).get(key, _ADDED_LATER.get((table, key)))
            if key
            else old.get(table)
        )
        now = (new.get(table) or {}).get(key) if key else new.get(table)
        if was != now:
            name = f"{table}.{key}" if key else f"[{table}]"
            raise CheckpointError(
                f"{str(path)!r} was trained with {name} = {was!r}, the config says {now!r}: "
                "resume with the config it was started with (only train.steps may grow), or "
                "start again with --overwrite or in another --out folder"
            )


def check_run_folder(
    cfg: RunConfig, learner: MetaLearner, out: Path, resume: bool, overwrite: bool
) -> None:
    """Everything a run needs from its folder, before any work: a new run does not replace a
    run unasked, a resume has a run to continue from, made with the same learner and settings
    (and, unsupervised, the same pre-training)."""
    state = run_state(out)
    if resume and not state.resumable:
        raise CheckpointError(
            f"cannot resume: {str(out)!r} holds no run to continue (start without --resume)"
        )
    if not resume and state.holds_run and not overwrite:
        raise ConfigError(
            f"{str(out)!r} holds a run ({state.describe(cfg)}); continue it with --resume, "
            "replace it with --overwrite, or choose another --out folder",
            api_hint="(train_run(..., resume=True) or overwrite=True)",
        )
    if resume and state.meta_step is not None:
        _, meta = read_training_state(out / LAST, {"learner": learner.config()})
        _check_same_run(cfg, meta, out / LAST)
    if cfg.unsupervised is not None and not overwrite:
        from metaunsup.training.unsupervised import check_unsupervised_folder

        check_unsupervised_folder(cfg, learner, out, resume)


def _check_learner_kind(cfg: RunConfig) -> None:
    kinds = task_kinds(cfg.learner["name"])
    if cfg.learner["name"] in LEARNERS and cfg.task.kind not in kinds:
        others = ", ".join(n for n in LEARNERS if cfg.task.kind in task_kinds(n))
        raise ConfigError(
            f"learner {cfg.learner['name']!r} trains on task.kind = {' or '.join(kinds)!r}, "
            f"not {cfg.task.kind!r}"
            + (f" (learners for {cfg.task.kind!r} tasks: {others})" if others else "")
        )


def _join_processes(
    device_name: str, threads: int, timeout: float
) -> tuple[torch.device, Distributed | None]:
    """This process's device and place in a distributed run (``None``: one process), with
    its thread count set."""
    device = torch.device(device_name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is 'cuda' but no CUDA device is available")
    dist = from_environment(device_name, timeout)
    set_threads(threads, dist)
    return (device if dist is None else dist.device), dist


def _prepare_folder(
    cfg: RunConfig,
    learner: MetaLearner,
    out: Path,
    resume: bool,
    overwrite: bool,
    dist: Distributed | None,
) -> None:
    """Check what the run needs from ``out`` (:func:`check_run_folder`); with ``overwrite``
    rank 0 clears the previous run while the other processes wait."""
    check_run_folder(cfg, learner, out, resume, overwrite)
    if overwrite and (dist is None or dist.writer):
        clear_run(out)
    if overwrite and dist is not None:
        dist.wait_for_writer("clearing the run folder")


def train_run(
    cfg: RunConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    tensorboard: str | Path | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> TrainResult:
    """Meta-train the run described by ``cfg`` into ``out_dir``.

    ``resume`` continues the run in ``out_dir`` (its pre-training, partitions and
    meta-training, each where it stopped: the weights end as an unbroken run's would);
    ``overwrite`` replaces the run there. A folder that holds a run needs one of them; what a
    run needs from the folder is checked before any work (:func:`check_run_folder`).
    ``tensorboard``: a folder for TensorBoard event files of the training log.

    In a process started by ``metaunsup train --nproc`` or ``torchrun`` this process joins the
    distributed run (:mod:`metaunsup.training.distributed`; ``timeout``: seconds a collective
    waits for the others): it meta-trains on its share of every meta-batch, and rank 0
    alone pre-trains and partitions the data of an unsupervised run (the others then read the
    results from the run folder's cache, see :func:`unsupervised_training_source`).
    """
    tr = cfg.train
    _check_learner_kind(cfg)
    if resume and overwrite:
        raise ConfigError("--resume continues the run in the folder, --overwrite replaces it: "
                          "give one of them")  # fmt: skip
    out = check_output_folder(out_dir)
    device, dist = _join_processes(tr.device, tr.threads, timeout)
    progress = progress and (dist is None or dist.writer)
    run_config = cfg.to_dict()
    if cfg.unsupervised is not None:
        view = _unlabeled_split(cfg)
        learner = fresh_learner(cfg, view.example_shape)
    else:
        learner, source, val = _task_source(cfg)
    val_shape: TaskShape | None = None
    if tr.init and not resume:
        warm_start(learner, tr.init)
    _prepare_folder(cfg, learner, out, resume, overwrite, dist)
    if cfg.unsupervised is not None:
        source, record, pseudo_val = unsupervised_training_source(
            cfg, learner, view, out, device, progress, resume, dist
        )
        run_config["unsupervised_record"] = record
        val = None if pseudo_val is None else pseudo_val.dataset
        val_shape = None if pseudo_val is None else pseudo_val.shape
    if dist is not None:
        source = dist.shard(source, tr.meta_batch)
    objective = precision_objective(learner, tr.precision, device)
    trainer = Trainer(
        learner,
        objective,
        source,
        tr,
        out,
        identity={"learner": learner.config()},
        describe={"run": run_config},
        validate=None if val is None else make_validator(cfg, val, device, val_shape),
        device=device,
        progress=progress,
        tensorboard=tensorboard,
        name=f"meta-train {cfg.name}",
        distributed=dist,
    )
    try:
        result = trainer.fit(resume=resume and (out / LAST).is_file())
    finally:
        if dist is not None:
            dist.close()
    if dist is None or dist.writer:
        _calibrate(cfg, learner, source, out)
    return result


def _unlabeled_split(cfg: RunConfig) -> UnlabeledView:
    """The training split of a run with no labels, whole (with ``data.rotations``, each image
    also turned by 90°, 180° and 270°), read through a view that refuses labels (validation, if
    any, on held-out pseudo-tasks: ``unsupervised.val_fraction``, whose size is checked here,
    before any work)."""
    from metaunsup.data.unlabeled import UnlabeledView
    from metaunsup.training.unsupervised import check_held_out_size

    view = UnlabeledView(load_training_split(cfg))
    if cfg.data.rotations:  # rotated copies join the unlabeled images; no label is read
        view = with_rotated_images(view)
    check_held_out_size(cfg, len(view))
    return view


def _task_source(cfg: RunConfig) -> tuple[MetaLearner, Any, Dataset | None]:
    """``(learner, task source, validation split)`` of a run with labels: tasks of the
    training split (its held-out part validates), or of the synthetic prior (no validation)."""
    if cfg.data.dataset == SYNTHETIC_TABLES:
        prior = prior_source(cfg)
        return fresh_learner(cfg, (prior.max_features,)), prior, None
    t = cfg.task
    train_ds, val = split_for_training(cfg)
    kind = task_kind(t.kind)
    shape = TaskShape(t.n_way, t.k_shot, t.n_query if kind.has_query else 0)
    learner = fresh_learner(cfg, train_ds.example_shape)
    return learner, kind.make_sampler(train_ds, shape, cfg.train.seed), val


def _calibrate(cfg: RunConfig, learner: MetaLearner, source: Any, out: Path) -> None:
    """Calibrate the finished run's checkpoints when the run has a calibration step (the
    anomaly scorers' thresholds, :func:`metaunsup.training.calibrate.run_calibrator`)."""
    from metaunsup.training.calibrate import calibrate_run, run_calibrator

    calibrator = run_calibrator(cfg.task.kind, learner)
    if calibrator is not None:
        calibrate_run(calibrator, learner, source, out, cfg.train.seed)


def unsupervised_training_source(
    cfg: RunConfig,
    learner: MetaLearner,
    view: UnlabeledView,
    out: Path,
    device: torch.device,
    progress: bool,
    resume: bool,
    dist: Distributed | None,
) -> tuple[Any, dict[str, Any], PseudoValidation | None]:
    """``(task source, record, validation)`` of a run with no labels, read through ``view`` (a
    view of the training split that refuses labels; validation on held-out pseudo-tasks when
    ``unsupervised.val_fraction > 0``, see
    :func:`~metaunsup.training.unsupervised.unsupervised_source`).

    In a distributed run rank 0 pre-trains the backbone and partitions the data first (both
    are cached in the run folder: ``pretrain.safetensors``, ``partitions.safetensors``) while
    the others wait, then the others build the same source from those caches. Done once
    rather than split: SimCLR's loss uses every example of a batch as the others' negatives,
    and both steps are one-off costs beside meta-training.
    """
    from metaunsup.training.unsupervised import unsupervised_source

    def build() -> tuple[Any, dict[str, Any], PseudoValidation | None]:
        return unsupervised_source(cfg, learner, view, out, device, progress, resume)

    if dist is None:
        return build()
    if dist.writer:
        built = build()
        dist.wait_for_writer("pre-training and partitioning the data")
        return built
    dist.wait_for_writer("pre-training and partitioning the data")
    return build()


def prior_source(cfg: RunConfig) -> SyntheticTables:
    """The synthetic-table prior of a run with ``data.dataset = "synthetic-tables"``: tables
    of ``learner.net.in_features`` columns, ``2..task.n_way`` clusters, ``n_way * k_shot``
    rows, seeded with ``train.seed`` (:mod:`metaunsup.tasks.synthetic_tables`)."""
    width = cfg.learner.get("net", {}).get("in_features")
    if not isinstance(width, int):
        raise ConfigError(
            "a synthetic-tables run needs [learner.net] in_features (the widest table, e.g. 100)"
        )
    t = cfg.task
    return SyntheticTables(width, t.n_way, t.n_way * t.k_shot, seed=cfg.train.seed)


def warm_start(learner: MetaLearner, init: str) -> None:
    """Load the weights of checkpoint ``init`` (``train.init``) into the run's fresh
    ``learner``; :class:`CheckpointError` when it holds another learner or network."""
    path = resolve_checkpoint(init)
    tensors, meta = read_checkpoint(path)
    stored = json.loads(json.dumps(meta.get("learner")))
    wanted = json.loads(json.dumps(learner.config()))
    if stored != wanted:
        changed = sorted(
            k for k in set(stored or {}) | set(wanted) if (stored or {}).get(k) != wanted.get(k)
        )
        raise CheckpointError(
            f"train.init {init!r} holds another learner than the config's (differs in "
            f"{', '.join(changed) or 'everything'}); start from a checkpoint of the same learner "
            "and network"
        )
    load_model_state(learner, tensors, str(path))
    log.info("starting from the weights of %s", path)


def fresh_learner(cfg: RunConfig, example_shape: tuple[int, ...]) -> MetaLearner:
    """The run's learner with initial weights drawn from ``train.seed`` (before any training)."""
    with torch.random.fork_rng():
        torch.manual_seed(cfg.train.seed)
        return build_learner(learner_config(cfg, example_shape))
