"""Task sources for meta-training without labels, built from a run's ``[unsupervised]`` table.

:func:`unsupervised_source` turns the unlabeled training split into tasks:

1. optional SimCLR pre-training of the learner's own backbone
   (:func:`metaunsup.training.pretraining.pretrain_contrastive`), saved as ``pretrain.safetensors``
   in the run folder so that a resumed run does not redo it;
2. ``"cactus"``: k-means partitions of the pre-trained features (of the pixels without
   pre-training; of another run's pre-trained backbone with ``features_from``; or of the
   spectral embedding of their nearest-neighbour graph when ``spectral_dims > 0``), cached as
   ``partitions.safetensors``, and a
   :class:`~metaunsup.tasks.pseudo.cactus.CactusTaskSource` (clustering layout for clustering runs);
   ``"umtra"``: a :class:`~metaunsup.tasks.pseudo.umtra.UmtraTaskSource`.

The data reaches every step only through an :class:`~metaunsup.data.unlabeled.UnlabeledView`,
which raises :class:`~metaunsup.errors.LabelAccessError` if anything reads a label.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from metaunsup.checkpoint import read_checkpoint, read_checkpoint_meta, save_checkpoint
from metaunsup.data.augment import Augment
from metaunsup.data.base import Dataset
from metaunsup.data.unlabeled import UnlabeledView
from metaunsup.embed.features import net_embeddings
from metaunsup.errors import CheckpointError, ConfigError
from metaunsup.evaluation.kinds import task_kind
from metaunsup.evaluation.protocol import TaskShape
from metaunsup.learners import MetaLearner
from metaunsup.nets import FunctionalNet, build_net
from metaunsup.training.config import RunConfig, UnsupervisedConfig
from metaunsup.training.pretraining import final_loss, pretrain_contrastive
from metaunsup.training.trainer import BEST, LAST, read_training_state

__all__ = [
    "PARTITIONS_FILE",
    "PRETRAIN_DIR",
    "PRETRAIN_FILE",
    "PseudoValidation",
    "check_unsupervised_folder",
    "consensus_partitions",
    "pretrain_settings",
    "pretrained_only_learner",
    "unsupervised_source",
]

log = logging.getLogger(__name__)

PRETRAIN_FILE = "pretrain.safetensors"
#: Folder of the pre-training's log and (while it runs) checkpoints, inside the run folder.
PRETRAIN_DIR = "pretrain"
PARTITIONS_FILE = "partitions.safetensors"
_PRETRAIN_KIND = "metaunsup-pretrain"
#: Candidates drawn per partition kept by :func:`consensus_partitions`.
CONSENSUS_CANDIDATES = 4
#: Offset of the held-out examples' draw from the run's seed (``unsupervised.val_fraction``).
HELD_OUT_SEED_OFFSET = 7_919


@dataclass(frozen=True)
class PseudoValidation:
    """Label-free meta-validation of an unsupervised run (``unsupervised.val_fraction``).

    ``dataset``: the held-out examples, their ``y`` the pseudo-classes of the first partition
    (renumbered ``0..C-1``; never a label). ``shape``: the validation tasks, the run's task
    shape shrunk where the held-out pseudo-classes are too small for it.
    """

    dataset: Dataset
    shape: TaskShape


def _held_out_count(n: int, fraction: float) -> int:
    """How many of ``n`` examples ``val_fraction = fraction`` holds out (at least one)."""
    return max(1, round(fraction * n))


def held_out_examples(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(kept, held_out)`` sorted ``int64`` indices of ``n`` examples: ``round(fraction * n)``
    of them (at least one) drawn uniformly with ``seed`` are held out."""
    g = torch.Generator().manual_seed(seed + HELD_OUT_SEED_OFFSET)
    order = torch.randperm(n, generator=g)
    n_held = _held_out_count(n, fraction)
    return torch.sort(order[n_held:]).values, torch.sort(order[:n_held]).values


def check_held_out_size(cfg: RunConfig, n_examples: int) -> None:
    """Before any work: :class:`ConfigError` when ``unsupervised.val_fraction`` of
    ``n_examples`` cannot fill even the smallest validation task (``n_way`` pseudo-classes of
    two examples for clustering, of ``k_shot + 1`` for few-shot tasks), whatever the
    partitions turn out to be."""
    u, t = cfg.unsupervised, cfg.task
    if u is None or u.val_fraction == 0:
        return
    per_class = t.k_shot + 1 if task_kind(t.kind).has_query else 2
    held = _held_out_count(n_examples, u.val_fraction)
    if held < t.n_way * per_class:
        raise ConfigError(
            f"unsupervised.val_fraction = {u.val_fraction} holds out {held} of {n_examples} "
            f"examples, too few for validation tasks of {t.n_way} pseudo-classes of "
            f"{per_class} (at least {t.n_way * per_class}); raise val_fraction or set it to 0"
        )


def pseudo_validation(
    view: UnlabeledView, pseudo: torch.Tensor, cfg: RunConfig
) -> PseudoValidation:
    """The held-out examples ``view`` with their pseudo-classes ``pseudo`` ``[m]`` as a
    validation set, and the largest task shape (up to the run's) that their classes fill;
    :class:`ConfigError` when too few examples are held out for even the smallest task."""
    t, u = cfg.task, cfg.unsupervised
    assert u is not None
    kind = task_kind(t.kind)
    ids, y = torch.unique(pseudo.to(torch.int64), return_inverse=True)
    counts = torch.sort(torch.bincount(y), descending=True).values
    fill = int(counts[t.n_way - 1]) if counts.numel() >= t.n_way else 0
    if kind.has_query:
        shape = TaskShape(t.n_way, t.k_shot, min(t.n_query, fill - t.k_shot))
        enough = shape.n_query >= 1
    else:
        shape = TaskShape(t.n_way, min(t.k_shot, fill), 0)
        enough = shape.k_shot >= 2
    if not enough:
        raise ConfigError(
            f"unsupervised.val_fraction = {u.val_fraction} holds out {len(view)} examples, too "
            f"few for validation tasks of {t.n_way} pseudo-classes (the {t.n_way}th largest "
            f"has {fill} examples); raise val_fraction or set it to 0"
        )
    dataset = Dataset(
        name=view.name,
        split=f"{view.split}, held out (pseudo-classes)",
        x=view.x,
        y=y,
        classes=tuple(f"pseudo-class {int(c)}" for c in ids),
    )
    return PseudoValidation(dataset, shape)


def _augment(name: str, view: UnlabeledView, strong: bool = True) -> Augment:
    """The preset ``name`` (``"auto"``: the one for the view's example shape, strong for
    contrastive views, mild for task images)."""
    if name == "auto":
        return Augment.for_shape(view.example_shape, strong=strong)
    return Augment.preset(name)


def pretrain_settings(cfg: RunConfig, learner: MetaLearner) -> dict[str, Any]:
    """What identifies a run's pre-training: its settings and the backbone it pre-trains (a
    cached or interrupted pre-training is reused only when these are unchanged)."""
    u = cfg.unsupervised
    assert u is not None
    return {
        "steps": u.pretrain_steps,
        "batch": u.pretrain_batch,
        "lr": u.pretrain_lr,
        "temperature": u.pretrain_temperature,
        "augment": u.augment,
        "seed": cfg.train.seed,
        # the backbone that is pre-trained: a classification head is neither trained nor saved,
        # so learners with and without one (MAML, ProtoNets) share a pre-training
        "net": {**learner.net.config(), "n_way": None},
    }


def _check_pretraining_meta(meta: dict[str, Any], settings: dict[str, Any], path: Path) -> None:
    if meta.get("kind") != _PRETRAIN_KIND or meta.get("settings") != settings:
        raise CheckpointError(
            f"{str(path)!r} holds a pre-training with other settings; delete it, start "
            "again with --overwrite or use another --out folder"
        )


def check_unsupervised_folder(
    cfg: RunConfig, learner: MetaLearner, out_dir: Path, resume: bool
) -> None:
    """What an unsupervised run needs from the folders, checked before any work: a cached
    pre-training (``pretrain.safetensors``) of the same settings, the pre-training checkpoint a
    resume continues, and the run that ``features_from`` names."""
    u = cfg.unsupervised
    assert u is not None
    if u.pretrain_steps > 0:
        settings = pretrain_settings(cfg, learner)
        done, started = out_dir / PRETRAIN_FILE, out_dir / PRETRAIN_DIR / LAST
        if done.exists():
            _check_pretraining_meta(read_checkpoint_meta(done), settings, done)
        elif resume and started.is_file():
            read_training_state(started, {"pretraining": settings})
    if u.features_from:
        teacher = out_dir.parent / u.features_from
        if not (teacher / PRETRAIN_FILE).is_file():
            raise ConfigError(
                f"unsupervised.features_from: {str(teacher / PRETRAIN_FILE)!r} not found; "
                f"train the run {teacher.name!r} into {str(teacher)!r} first"
            )


def pretrained_backbone(
    cfg: RunConfig,
    learner: MetaLearner,
    view: UnlabeledView,
    out_dir: Path,
    device: torch.device,
    progress: bool,
    resume: bool = False,
) -> dict[str, Any]:
    """Pre-train ``learner.net`` (or load the run's earlier pre-training); returns its record.

    The pre-training runs through the Trainer in ``out_dir/pretrain/`` (its log and, while it
    runs, its checkpoints, every ``train.checkpoint_every`` steps): with ``resume`` an
    interrupted pre-training continues where it stopped.

    The record (``{"steps", "seconds", "final_loss"}``) is stored with the weights and in the
    checkpoints' run description, so the card of a trained model says what pre-training cost.
    """
    u = cfg.unsupervised
    assert u is not None
    path = out_dir / PRETRAIN_FILE
    settings = pretrain_settings(cfg, learner)
    if path.exists():
        tensors, meta = read_checkpoint(path)
        _check_pretraining_meta(meta, settings, path)
        _load_backbone(learner, tensors, path)
        log.info("pre-trained backbone loaded from %s", path)
        return meta["record"]
    folder = out_dir / PRETRAIN_DIR
    result = pretrain_contrastive(
        learner.net,
        view,
        steps=u.pretrain_steps,
        batch_size=u.pretrain_batch,
        temperature=u.pretrain_temperature,
        augment=_augment(u.augment, view),
        lr=u.pretrain_lr,
        seed=cfg.train.seed,
        device=device,
        progress=progress,
        out_dir=folder,
        resume=resume and (folder / LAST).is_file(),
        checkpoint_every=cfg.train.checkpoint_every,
        identity=settings,
        remedy="lower unsupervised.pretrain_lr",
    )
    record = {
        "steps": u.pretrain_steps,
        "seconds": round(result.seconds, 2),
        "final_loss": final_loss(result),
    }
    head = set(learner.net.head_names)
    save_checkpoint(
        path,
        {k: v for k, v in learner.net.state_dict().items() if k not in head},
        {"kind": _PRETRAIN_KIND, "settings": settings, "record": record},
    )
    for name in (LAST, BEST):  # the backbone is kept above; its log stays beside it
        (folder / name).unlink(missing_ok=True)
    return record


def _load_backbone(learner: MetaLearner, tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Load pre-trained backbone weights into ``learner.net`` (its head, if any, is not in
    them); raises :class:`CheckpointError` when they are not this backbone's."""
    head = set(learner.net.head_names)
    missing, unexpected = learner.net.load_state_dict(tensors, strict=False)
    if unexpected or set(missing) - head:
        raise CheckpointError(
            f"{str(path)!r} does not hold this backbone's weights (missing "
            f"{sorted(set(missing) - head)}, unexpected {sorted(unexpected)})"
        )


def pretrained_net_of_run(run_dir: Path) -> FunctionalNet:
    """The SimCLR pre-trained backbone of another run (``run_dir/pretrain.safetensors``), in
    evaluation mode; raises :class:`ConfigError` when that run has not been pre-trained."""
    path = run_dir / PRETRAIN_FILE
    if not path.is_file():
        raise ConfigError(
            f"unsupervised.features_from: {str(path)!r} not found; train the run "
            f"{run_dir.name!r} into {str(run_dir)!r} first"
        )
    tensors, meta = read_checkpoint(path)
    if meta.get("kind") != _PRETRAIN_KIND:
        raise CheckpointError(f"{str(path)!r} is not a metaunsup pre-training")
    net_config = (meta.get("settings") or {}).get("net")
    if not isinstance(net_config, dict):
        raise CheckpointError(f"{str(path)!r} does not say which network it pre-trained")
    net = build_net(net_config)
    missing, unexpected = net.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{str(path)!r} does not match the network its settings name")
    return net.eval()


def pretrained_only_learner(learner: MetaLearner, run_dir: str | Path) -> MetaLearner | None:
    """``learner`` (the run's learner before training, see
    :func:`~metaunsup.training.build.fresh_learner`) in evaluation mode with the run's SimCLR
    pre-trained backbone and no meta-training (the baseline that shows what meta-training
    adds); ``None`` when the run folder holds no pre-training."""
    path = Path(run_dir) / PRETRAIN_FILE
    if not path.exists():
        return None
    tensors, meta = read_checkpoint(path)
    if meta.get("kind") != _PRETRAIN_KIND:
        raise CheckpointError(f"{str(path)!r} is not a metaunsup pre-training")
    _load_backbone(learner, tensors, path)
    return learner.eval()


def consensus_partitions(
    z: torch.Tensor, u: UnsupervisedConfig, seed: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """``int32 [partitions, n]`` CACTUs partitions of the features ``z`` ``[n, d]`` from the
    consensus of many views, with no labels (``unsupervised.consensus > 0``).

    One spectral embedding partitioned again and again gives one partition up to relabelling,
    so a merge of two classes in that embedding reaches every pseudo-task. Here:

    1. a pool of ``consensus`` k-means partitions (``clusters`` each, every dimension randomly
       scaled as CACTUs does) of the spectral embedding of each graph of ``consensus_dims`` ×
       ``consensus_neighbors``;
    2. the spectral embedding of the pool's co-association (evidence accumulation, Fred & Jain
       2005; :func:`~metaunsup.cluster.consensus.consensus_embedding`), ``clusters`` dimensions;
    3. ``CONSENSUS_CANDIDATES × partitions`` scaled k-means candidates of that embedding, of
       which the ``partitions`` with the lowest normalised cut of the co-association are kept
       (:func:`~metaunsup.cluster.consensus.consensus_cut`): a label-free selection that drops
       the candidates whose scaling merged two groups the pool keeps apart.

    Every draw comes from ``seed``: same seed, same partitions.
    """
    from metaunsup.cluster.consensus import consensus_cut, consensus_embedding
    from metaunsup.cluster.graph import spectral_embedding
    from metaunsup.tasks.pseudo.cactus import cactus_partitions

    graphs = [
        (dims, nb)
        for dims in (u.consensus_dims or [u.spectral_dims])
        for nb in (u.consensus_neighbors or [u.neighbors])
    ]
    seeds = torch.randint(
        0, 2**62, (len(graphs) + 1,), generator=torch.Generator().manual_seed(seed)
    )
    kw: dict[str, Any] = {"n_init": u.n_init, "fit_size": u.fit_size, "device": device}
    pool = torch.cat(
        [
            cactus_partitions(
                spectral_embedding(z, dims, nb),
                u.consensus,
                u.clusters,
                seed=int(s),
                scale=True,
                **kw,
            )
            for (dims, nb), s in zip(graphs, seeds.tolist(), strict=False)
        ]
    )
    emb = consensus_embedding(pool, u.clusters)
    candidates = cactus_partitions(
        emb, CONSENSUS_CANDIDATES * u.partitions, u.clusters, seed=int(seeds[-1]), scale=True, **kw
    )
    cut = consensus_cut(pool, candidates)
    keep = torch.sort(torch.argsort(cut, stable=True)[: u.partitions]).values
    log.info(
        "CACTUs consensus of %d partitions over %d graphs; kept the %d of %d candidates that "
        "cut it least (normalised cuts %s)",
        pool.shape[0],
        len(graphs),
        u.partitions,
        candidates.shape[0],
        [round(c, 3) for c in cut.tolist()],
    )
    return candidates[keep]


def _pseudo_partitions(
    z: torch.Tensor, cfg: RunConfig, out: Path, device: torch.device, progress: bool
) -> torch.Tensor:
    """``int64 [P, n]`` pseudo-partitions of the embedded training set ``z`` ``[n, D]``:
    consensus partitions (``unsupervised.consensus > 0``) or CACTUs k-means partitions (of the
    spectral embedding when ``unsupervised.spectral_dims > 0``), kept in ``out``."""
    from metaunsup.tasks.pseudo.cactus import cactus_partitions, save_partitions

    u = cfg.unsupervised
    assert u is not None
    if u.consensus > 0:
        parts = consensus_partitions(z, u, cfg.train.seed, device)
        save_partitions(out / PARTITIONS_FILE, parts, {"consensus": True, "seed": cfg.train.seed})
        return parts
    if u.spectral_dims > 0:
        from metaunsup.cluster.graph import spectral_embedding

        z = spectral_embedding(z, u.spectral_dims, u.neighbors)
    return cactus_partitions(
        z,
        u.partitions,
        u.clusters,
        seed=cfg.train.seed,
        scale=u.scale,
        fit_size=u.fit_size,
        n_init=u.n_init,
        device=device,
        cache=out / PARTITIONS_FILE,
        progress=progress,
    )


def unsupervised_source(
    cfg: RunConfig,
    learner: MetaLearner,
    view: UnlabeledView,
    out_dir: str | Path,
    device: torch.device,
    progress: bool = False,
    resume: bool = False,
) -> tuple[Any, dict[str, Any], PseudoValidation | None]:
    """``(task source, record, validation)`` for meta-training ``learner`` on ``view`` with no
    labels.

    Pre-trains the learner's backbone in place when ``unsupervised.pretrain_steps > 0``
    (continuing an interrupted pre-training with ``resume``).
    ``record`` says what was done (pre-training time and loss, partition count, held-out
    examples). ``validation``: the held-out pseudo-tasks' data when
    ``unsupervised.val_fraction > 0`` (:class:`PseudoValidation`), else ``None``.
    """
    from metaunsup.tasks.pseudo.cactus import CactusTaskSource
    from metaunsup.tasks.pseudo.umtra import UmtraTaskSource

    u, t = cfg.unsupervised, cfg.task
    assert u is not None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {"tasks": u.tasks}
    if u.pretrain_steps > 0:
        record["pretrain"] = pretrained_backbone(cfg, learner, view, out, device, progress, resume)
    if u.tasks == "umtra":
        source = UmtraTaskSource(
            view, t.n_way, t.n_query, augment=_augment(u.augment, view), seed=cfg.train.seed
        )
        return source, record, None
    start = time.perf_counter()
    if u.features_from:
        teacher = pretrained_net_of_run(out.parent / u.features_from)
        z = net_embeddings(teacher, view.float_x(), device=device)
        record["features_from"] = u.features_from
    elif u.pretrain_steps > 0:
        learner.net.eval()
        z = net_embeddings(learner.net, view.float_x(), device=device)
    else:
        z = view.float_x().reshape(len(view), -1)
    parts = _pseudo_partitions(z, cfg, out, device, progress)
    log.info("CACTUs partitions ready in %.1f s", time.perf_counter() - start)
    record["partitions"] = int(parts.shape[0])
    kind = task_kind(t.kind)
    if kind.pseudo_source is not None:  # the kind's own pseudo-tasks (one-class kinds)
        shape = TaskShape(t.n_way, t.k_shot, t.n_query)
        groups = None
        if u.pseudo_groups > 0:
            from metaunsup.tasks.pseudo.cactus_anomaly import pseudo_class_groups

            groups = pseudo_class_groups(z, parts, u.pseudo_groups, cfg.train.seed)
            record["pseudo_groups"] = u.pseudo_groups
        return kind.pseudo_source(view, parts, shape, cfg.train.seed, groups), record, None
    validation = None
    examples = view
    if u.val_fraction > 0:  # held out of every pseudo-task, scored against its pseudo-class
        kept, held = held_out_examples(len(view), u.val_fraction, cfg.train.seed)
        validation = pseudo_validation(view.subset(held), parts[0, held], cfg)
        examples, parts = view.subset(kept), parts[:, kept]
        record["validation"] = {
            "held_out": int(held.numel()),
            "pseudo_classes": len(validation.dataset.classes),
            "task_shape": list(dataclasses.astuple(validation.shape)),
        }
    clustering = not kind.has_query  # tasks without a query: clustering layout
    cactus = CactusTaskSource(
        examples,
        parts,
        t.n_way,
        t.k_shot,
        0 if clustering else t.n_query,
        seed=cfg.train.seed,
        shuffle=clustering,
        augment=None if u.task_augment == "none" else _augment(u.task_augment, view, strong=False),
    )
    return cactus, record, validation
