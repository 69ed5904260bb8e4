"""CACTUs: few-shot tasks made from clusters of unlabeled embeddings.

Hsu, Levine & Finn, "Unsupervised Learning via Meta-Learning", ICLR 2019. With no labels at all:

1. embed the unlabeled examples (:mod:`metaunsup.embed`: an autoencoder, SimCLR, ...);
2. :func:`cactus_partitions`: cluster the embeddings ``P`` times with k-means into ``k``
   clusters each; before every clustering but the first, each embedding dimension is multiplied
   by its own random weight, uniform in ``[0, 1]`` (as the authors' code does), so the ``P``
   partitions differ and together describe many ways of grouping the data;
3. :class:`CactusTaskSource`: each task picks a partition, then ``n_way`` of its clusters and
   ``k_shot + n_query`` examples of each: the clusters play the classes. Clusters with fewer
   than ``k_shot + n_query`` examples are left out, and so are partitions left with fewer than
   ``n_way`` clusters.

The tasks are then meta-trained on like labelled ones (MAML, ProtoNets, ... through the
Trainer), and the meta-learner is tested on real classes.

Cost of step 2 (the expensive part): k-means over ``n`` points is ``O(n k d)`` per iteration. To
keep 60 000 points and ``k`` in the hundreds at a few minutes on a CPU, each partition fits its
centres on a random subsample of ``fit_size`` points (one k-means++ seeding, ``n_init=1``, at
most ``max_iter`` Lloyd iterations; the authors' code also used ``n_init=1`` for ``P > 1``), then
assigns **every** point to its nearest centre and runs ``refine_iter`` Lloyd steps on all of
them (each one pass); with ``k`` in the hundreds the k-means++ seeding of the centres
dominates. :func:`save_partitions` /
:func:`load_partitions` keep the result (``int32 [P, n]`` in safetensors), and ``cache=`` in
:func:`cactus_partitions` reuses it when the embeddings and settings are the same.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from metaunsup._validation import MAX_SEED, check_int
from metaunsup.checkpoint import read_checkpoint, save_checkpoint
from metaunsup.cluster.kmeans import kmeans
from metaunsup.data.augment import Augment
from metaunsup.data.base import Dataset
from metaunsup.data.unlabeled import UnlabeledView, as_unlabeled
from metaunsup.errors import CheckpointError, ConfigError, DataError
from metaunsup.tasks.batch import TaskBatch
from metaunsup.tasks.samplers import gather_float
from metaunsup.tasks.sampling import ClassIndex, draw_uniforms, sample_grouped
from metaunsup.tasks.stream import SeededStream

__all__ = [
    "CactusTaskSource",
    "cactus_partitions",
    "load_partitions",
    "save_partitions",
]

logger = logging.getLogger(__name__)

_KIND = "cactus-partitions"
#: Elements of the largest temporary (points × centres) of the nearest-centre pass.
_ASSIGN_ELEMENTS = 1 << 23
#: Elements of the subsampled points handed to one batched k-means call.
_FIT_ELEMENTS = 1 << 23


# ----------------------------------------------------------------------------- partitions


def _check_embeddings(embeddings: torch.Tensor) -> torch.Tensor:
    if not isinstance(embeddings, torch.Tensor) or embeddings.dim() != 2:
        shape = tuple(embeddings.shape) if isinstance(embeddings, torch.Tensor) else None
        raise DataError(f"embeddings must be a tensor [n, d], got {shape or type(embeddings)}")
    if embeddings.shape[0] == 0 or embeddings.shape[1] == 0:
        raise DataError(f"embeddings are empty: shape {tuple(embeddings.shape)}")
    z = embeddings.detach().to(torch.float32)
    if not bool(torch.isfinite(z).all()):
        raise DataError("embeddings contain NaN or infinite values")
    return z


def _fingerprint(z: torch.Tensor) -> str:
    """SHA-256 of the embeddings' float32 bytes (identifies them in the partition cache)."""
    return hashlib.sha256(z.cpu().contiguous().numpy().tobytes()).hexdigest()


def _nearest(z: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """``int64 [n]`` the nearest of ``centers [k, d]`` for each row of ``z [n, d]``."""
    csq = (centers * centers).sum(1)
    step = max(1, _ASSIGN_ELEMENTS // centers.shape[0])
    out = torch.empty(z.shape[0], dtype=torch.int64, device=z.device)
    for s in range(0, z.shape[0], step):
        part = z[s : s + step]
        # ||x - c||² less ||x||², which does not change the argmin.
        out[s : s + step] = torch.addmm(csq, part, centers.T, alpha=-2.0).argmin(1)
    return out


def _refine(z: torch.Tensor, centers: torch.Tensor, n_iter: int) -> torch.Tensor:
    """Nearest-centre labels of all of ``z [n, d]`` after ``n_iter`` Lloyd steps on all of it.

    Each step moves every non-empty cluster's centre to the mean of its points (an empty one
    keeps its centre) and reassigns; it starts from centres fitted on a subsample.
    """
    labels = _nearest(z, centers)
    k = centers.shape[0]
    for _ in range(n_iter):
        sums = torch.zeros_like(centers).index_add_(0, labels, z)
        counts = torch.bincount(labels, minlength=k).unsqueeze(1)
        centers = torch.where(counts > 0, sums / counts.clamp(min=1), centers)
        labels = _nearest(z, centers)
    return labels


def cactus_partitions(
    embeddings: torch.Tensor,
    n_partitions: int,
    k: int,
    *,
    seed: int = 0,
    scale: bool = True,
    fit_size: int | None = 10000,
    refine_iter: int = 2,
    n_init: int = 1,
    max_iter: int = 50,
    tol: float = 1e-4,
    device: torch.device | str | None = None,
    cache: str | os.PathLike | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """``P`` k-means partitions of the embeddings: ``int32 [P, n]`` cluster ids ``0..k-1``.

    Parameters
    ----------
    embeddings:
        ``[n, d]`` features of the unlabeled examples, e.g. from
        :func:`metaunsup.embed.net_embeddings`.
    n_partitions:
        ``P`` (the paper used 100 for MNIST, 1–100 for Omniglot).
    k:
        Clusters per partition (the paper: 10 for MNIST, 500 for Omniglot).
    seed:
        Seeds the scalings, the subsamples and the k-means seedings: same seed, same partitions.
    scale:
        Multiply each dimension by a weight uniform in ``[0, 1]``, drawn anew for every
        partition but the first (which clusters the embeddings as they are).
    fit_size:
        Fit the centres of each partition on a random subsample of this many points (all of
        them when ``None`` or ``>= n``), then assign every point to its nearest centre.
    refine_iter:
        Lloyd steps on all ``n`` points after the subsample fit (each one pass over the data:
        centres to the means of their points, then reassign).
    n_init, max_iter, tol:
        Passed to :func:`metaunsup.cluster.kmeans.kmeans` for the fit.
    device:
        Where to run k-means (e.g. ``"cuda"``); the result is on the CPU.
    cache:
        A ``.safetensors`` path: when it holds partitions of the same embeddings (by content
        hash) made with the same settings they are loaded instead of recomputed; otherwise they
        are computed and written there.
    progress:
        Show a progress bar over partitions.

    Returns
    -------
    ``int32 [P, n]``. Clusters may be small or empty; :class:`CactusTaskSource` leaves out those
    too small for a task.

    Example
    -------
    >>> z = net_embeddings(pretrained_backbone, mnist_train.float_x())
    >>> parts = cactus_partitions(z, n_partitions=100, k=10, seed=0, cache="mnist_p100.safetensors")
    """
    z = _check_embeddings(embeddings)
    n = z.shape[0]
    settings = _settings(
        n, n_partitions, k, seed, scale, fit_size, refine_iter, n_init, max_iter, tol
    )
    fingerprint = None
    if cache is not None:
        fingerprint = _fingerprint(z)
        cached = _read_cache(Path(cache), settings, fingerprint, n)
        if cached is not None:
            return cached
    out = _partitions(z, settings, tol, device, progress)
    if cache is not None:
        save_partitions(cache, out, {**settings, "embeddings_sha256": fingerprint})
    return out


def _partitions(
    z: torch.Tensor,
    settings: dict[str, Any],
    tol: float,
    device: torch.device | str | None,
    progress: bool,
) -> torch.Tensor:
    """The partitions ``int32 [P, n]`` of ``z`` ``[n, d]`` for checked ``settings``: the random
    per-partition scalings and k-means seeds (all from ``settings["seed"]``), then the fits."""
    n_partitions, k, m = settings["n_partitions"], settings["k"], settings["fit_size"]
    d = z.shape[1]
    dev = torch.device("cpu") if device is None else torch.device(device)
    g = torch.Generator().manual_seed(settings["seed"])
    weights = torch.rand((n_partitions, d), generator=g)
    if not settings["scale"]:
        weights.fill_(1.0)
    weights[0] = 1.0
    km_seeds = torch.randint(0, 2**62, (n_partitions,), generator=g).tolist()
    fit = functools.partial(
        kmeans, n_init=settings["n_init"], max_iter=settings["max_iter"], tol=tol
    )
    out = _partition_groups(
        z.to(dev), weights.to(dev), km_seeds, k, m, g, fit, settings["refine_iter"], progress
    )
    _log_sizes(out, k)
    return out


def _settings(
    n: int,
    n_partitions: int,
    k: int,
    seed: int,
    scale: bool,
    fit_size: int | None,
    refine_iter: int,
    n_init: int,
    max_iter: int,
    tol: float,
) -> dict[str, Any]:
    """The checked settings of :func:`cactus_partitions` for ``n`` points (what its cache
    stores and compares); ``fit_size`` becomes the points each fit uses."""
    k = check_int("k", k, 1, n)
    return {
        "n_partitions": check_int("n_partitions", n_partitions, 1),
        "k": k,
        "seed": check_int("seed", seed, 0, MAX_SEED),
        "scale": bool(scale),
        "fit_size": n if fit_size is None else min(n, check_int("fit_size", fit_size, k)),
        "refine_iter": check_int("refine_iter", refine_iter, 0),
        "n_init": check_int("n_init", n_init, 1),
        "max_iter": check_int("max_iter", max_iter, 1),
        "tol": float(tol),
    }


def _partition_groups(
    z: torch.Tensor,
    weights: torch.Tensor,
    km_seeds: list[int],
    k: int,
    m: int,
    g: torch.Generator,
    fit: Callable[..., Any],
    refine_iter: int,
    progress: bool,
) -> torch.Tensor:
    """``int32 [P, n]``: partition ``p`` fits k-means (``fit``, seeded with ``km_seeds[p]``)
    to ``m`` random points of ``z * weights[p]`` (all of them when ``m == n``), then refines
    on all points. Partitions are fitted in groups of as many as fit in memory at once."""
    n_partitions, (n, d) = weights.shape[0], z.shape
    out = torch.empty((n_partitions, n), dtype=torch.int32)
    group = max(1, _FIT_ELEMENTS // (m * d))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_partitions, desc="CACTUs partitions", unit="partition")
    try:
        for start in range(0, n_partitions, group):
            ids = range(start, min(start + group, n_partitions))
            w = weights[list(ids)]  # [g, d]
            if m < n:
                sub = torch.stack([torch.randperm(n, generator=g)[:m] for _ in ids]).to(z.device)
                pts = z[sub] * w[:, None, :]  # [g, m, d]
            else:
                pts = z.unsqueeze(0) * w[:, None, :]
            res = fit(pts, k, seed=km_seeds[start : ids.stop])
            for j, p in enumerate(ids):
                zw = z * w[j]
                labels = _refine(zw, res.centers[j].to(z.device, torch.float32), refine_iter)
                out[p] = labels.to(torch.int32).cpu()
            if bar is not None:
                bar.update(len(ids))
    finally:
        if bar is not None:
            bar.close()
    return out


def _log_sizes(partitions: torch.Tensor, k: int) -> None:
    """Log how the cluster sizes of ``partitions`` ``[P, n]`` spread (empty clusters too)."""
    sizes = torch.stack([torch.bincount(row.long(), minlength=k) for row in partitions])
    logger.info(
        "CACTUs: %d partitions of %d points into k=%d; cluster sizes median %d, min %d, "
        "%.1f%% of clusters empty",
        partitions.shape[0],
        partitions.shape[1],
        k,
        int(sizes.median()),
        int(sizes.min()),
        100.0 * float((sizes == 0).float().mean()),
    )


def save_partitions(
    path: str | os.PathLike, partitions: torch.Tensor, info: dict[str, Any] | None = None
) -> Path:
    """Write partitions ``[P, n]`` (stored as ``int32``) and JSON ``info`` to a safetensors file.

    The write is atomic (see :func:`metaunsup.checkpoint.save_checkpoint`).
    """
    parts = _check_partitions(partitions)
    meta = {
        "kind": _KIND,
        "n_partitions": int(parts.shape[0]),
        "n": int(parts.shape[1]),
        "info": dict(info or {}),
    }
    return save_checkpoint(path, {"partitions": parts.to(torch.int32)}, meta)


def load_partitions(path: str | os.PathLike) -> tuple[torch.Tensor, dict[str, Any]]:
    """``(int32 [P, n] partitions, info)`` from :func:`save_partitions`."""
    tensors, meta = read_checkpoint(path)
    if meta.get("kind") != _KIND or "partitions" not in tensors:
        raise CheckpointError(
            f"{str(path)!r} holds no CACTUs partitions (kind {meta.get('kind')!r})"
        )
    parts = tensors["partitions"]
    if parts.dim() != 2 or tuple(parts.shape) != (meta.get("n_partitions"), meta.get("n")):
        raise CheckpointError(
            f"{str(path)!r}: partitions of shape {tuple(parts.shape)} do not "
            "match the file's header"
        )
    return parts, dict(meta.get("info", {}))


def _read_cache(
    path: Path, settings: dict[str, Any], fingerprint: str, n: int
) -> torch.Tensor | None:
    if not path.is_file():
        return None
    try:
        parts, info = load_partitions(path)
    except CheckpointError as err:
        logger.warning("CACTUs cache %s unusable (%s); recomputing", path, err)
        return None
    wanted = {**settings, "embeddings_sha256": fingerprint}
    if parts.shape[1] != n or {k: info.get(k) for k in wanted} != wanted:
        logger.warning(
            "CACTUs cache %s was made from other embeddings or settings; recomputing", path
        )
        return None
    logger.info("CACTUs: partitions loaded from %s", path)
    return parts


def _check_partitions(partitions: torch.Tensor) -> torch.Tensor:
    if not isinstance(partitions, torch.Tensor) or partitions.dim() != 2:
        raise DataError("partitions must be an integer tensor [P, n]")
    if partitions.dtype.is_floating_point or partitions.dtype == torch.bool:
        raise DataError(f"partitions must hold integer cluster ids, got {partitions.dtype}")
    if partitions.numel() == 0:
        raise DataError(f"partitions are empty: shape {tuple(partitions.shape)}")
    if int(partitions.min()) < 0:
        raise DataError("cluster ids in partitions must be non-negative")
    return partitions


# ----------------------------------------------------------------------------- tasks


class CactusTaskSource(SeededStream):
    """Seeded few-shot tasks whose classes are clusters of CACTUs partitions.

    Each task draws one of the usable partitions uniformly, then ``n_way`` of its usable
    clusters uniformly (in a random order: the order gives the task-local labels) and
    ``k_shot + n_query`` distinct examples of each cluster uniformly, which of them are support
    being random too. Sampling is vectorised: the tasks of a batch that share a partition are
    drawn together by :func:`metaunsup.tasks.sampling.sample_grouped`.

    Parameters
    ----------
    source:
        The unlabeled examples the partitions index: an
        :class:`~metaunsup.data.unlabeled.UnlabeledView`, a dataset (only ``x`` is read) or a
        tensor ``[n, *example_shape]``.
    partitions:
        ``[P, n]`` integer cluster ids, e.g. from :func:`cactus_partitions`.
    n_way, k_shot, n_query:
        Clusters per task, support and query examples per cluster.
    seed:
        Seed of the source's own ``torch.Generator``.
    shuffle:
        Clustering layout instead of the few-shot one: needs ``n_query == 0`` and permutes the
        ``n_way * k_shot`` examples of each task (as
        :class:`~metaunsup.tasks.ClusteringTaskSampler` does), for meta-clustering learners.
    augment:
        Optional :class:`~metaunsup.data.augment.Augment` applied to every example of every
        task, drawn from the source's generator (so a saved state resumes the same draws):
        each task then shows augmented views of its examples, not the stored images.

    Attributes
    ----------
    partition_ids:
        ``int64 [P']`` the partitions tasks are drawn from (those with ``>= n_way`` usable
        clusters).
    n_clusters:
        ``max cluster id + 1``; ``TaskBatch.classes`` holds ``partition * n_clusters +
        cluster`` (see :meth:`decode_classes`).
    partitions:
        ``[P, n]`` the partitions given (all of them, usable or not).

    The returned :class:`~metaunsup.tasks.TaskBatch` has the few-shot layout: the support
    (``n_way * k_shot``, class-major) then the query (``n_way * n_query``, class-major); ``y``
    are the task-local pseudo-labels ``0..n_way-1``.

    Example
    -------
    >>> source = CactusTaskSource(UnlabeledView(omniglot_bg), parts, 5, 1, 15, seed=0)
    >>> batch = source.sample(8)  # x: [8, 80, 1, 28, 28]
    """

    def __init__(
        self,
        source: Dataset | UnlabeledView | torch.Tensor,
        partitions: torch.Tensor,
        n_way: int,
        k_shot: int,
        n_query: int,
        seed: int = 0,
        *,
        shuffle: bool = False,
        augment: Augment | None = None,
    ) -> None:
        self.view = as_unlabeled(source)
        self.augment = None if augment is None or augment.is_identity else augment
        parts = _check_partitions(partitions)
        self.partitions = parts
        if parts.shape[1] != len(self.view):
            raise DataError(
                f"partitions index {parts.shape[1]} examples but {self.view.name}/"
                f"{self.view.split} has {len(self.view)}"
            )
        self.n_way = check_int("n_way", n_way, 1)
        self.k_shot = check_int("k_shot", k_shot, 1)
        self.n_query = check_int("n_query", n_query, 0)
        self.seed = check_int("seed", seed, 0, MAX_SEED)
        self.shuffle = bool(shuffle)
        if self.shuffle and self.n_query:
            raise ConfigError("shuffle=True gives clustering tasks: it needs n_query=0")
        need = self.k_shot + self.n_query
        self.n_clusters = int(parts.max()) + 1
        indexes: list[ClassIndex] = []
        kept: list[int] = []
        usable = []
        for p in range(parts.shape[0]):
            labels = parts[p].to(torch.int64)
            counts = torch.bincount(labels, minlength=self.n_clusters)
            ok = torch.nonzero(counts >= need).reshape(-1)
            usable.append(ok.numel())
            if ok.numel() >= self.n_way:
                indexes.append(ClassIndex.from_labels(labels, ok, n_labels=self.n_clusters))
                kept.append(p)
        if not kept:
            raise ConfigError(
                f"no partition has {self.n_way} clusters of at least k_shot + n_query = {need} "
                f"examples (most usable clusters in a partition: {max(usable)}); use fewer, "
                "larger clusters (smaller k) or smaller tasks"
            )
        if len(kept) < parts.shape[0]:
            logger.info(
                "CACTUs: %d of %d partitions have fewer than %d clusters of >= %d examples; "
                "left out",
                parts.shape[0] - len(kept),
                parts.shape[0],
                self.n_way,
                need,
            )
        logger.info(
            "CACTUs: %d partitions, %.1f usable clusters each on average (of %d)",
            len(kept),
            sum(usable) / len(usable),
            self.n_clusters,
        )
        self.partition_ids = torch.tensor(kept, dtype=torch.int64)
        self._indexes = indexes
        self._max_clusters = max(ix.n_classes for ix in indexes)
        self.start_stream()

    # -- the stream -------------------------------------------------------------------------

    def stream_facts(self) -> dict[str, int]:
        """A saved state must be of as many examples and usable partitions."""
        return {"n_examples": len(self.view), "n_partitions": int(self.partition_ids.numel())}

    @property
    def n_per_task(self) -> int:
        """Examples per task, ``n_way * (k_shot + n_query)``."""
        return self.n_way * (self.k_shot + self.n_query)

    def sample_indices(
        self, n_tasks: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The next ``n_tasks`` tasks as indices only.

        Returns
        -------
        partition:
            ``int64 [B]`` the partition (row of ``partitions``) of each task.
        clusters:
            ``int64 [B, n_way]`` the cluster behind each task-local label.
        indices:
            ``int64 [B, n]`` example indices, in the task layout.
        y:
            ``int64 [B, n]`` task-local labels.
        """
        n_tasks = check_int("n_tasks", n_tasks, 1)
        m = self.k_shot + self.n_query
        per_class = 2 * self.n_way * m  # Floyd draws and ordering keys
        extra = self.n_per_task if self.shuffle else 0
        u = draw_uniforms(self._generator, n_tasks, 1 + self._max_clusters + per_class + extra)
        n_parts = self.partition_ids.numel()
        which = torch.floor(u[:, 0] * n_parts).to(torch.int64).clamp_(max=n_parts - 1)
        clusters = torch.empty((n_tasks, self.n_way), dtype=torch.int64)
        examples = torch.empty((n_tasks, self.n_way, m), dtype=torch.int64)
        for pos in torch.unique(which).tolist():
            rows = torch.nonzero(which == pos).reshape(-1)
            index = self._indexes[pos]
            positions, ex = sample_grouped(index, u[rows, 1:], self.n_way, m, shuffle_within=True)
            clusters[rows] = index.class_ids[positions]
            examples[rows] = ex
        k, q = self.k_shot, self.n_query
        indices = torch.cat(
            [examples[:, :, :k].reshape(n_tasks, -1), examples[:, :, k:].reshape(n_tasks, -1)],
            dim=1,
        )
        way = torch.arange(self.n_way, dtype=torch.int64)
        y = torch.cat([way.repeat_interleave(k), way.repeat_interleave(q)])
        y = y.expand(n_tasks, -1).contiguous()
        if self.shuffle:
            perm = torch.argsort(u[:, -extra:], dim=1)
            indices = torch.gather(indices, 1, perm)
            y = torch.gather(y, 1, perm)
        self.tasks_drawn += n_tasks
        return self.partition_ids[which], clusters, indices, y

    def sample(self, n_tasks: int) -> TaskBatch:
        """The next ``n_tasks`` tasks, examples as ``float32 [B, n, *example_shape]``.

        ``classes`` holds ``partition * n_clusters + cluster`` per task-local label.
        """
        partition, clusters, indices, y = self.sample_indices(n_tasks)
        x = gather_float(self.view.x, indices.reshape(-1))
        if self.augment is not None:
            x = self.augment(x, self._generator)
        return TaskBatch(
            x=x.reshape(*indices.shape, *self.view.example_shape),
            y=y,
            classes=partition.unsqueeze(1) * self.n_clusters + clusters,
            indices=indices,
            n_way=self.n_way,
            k_shot=self.k_shot,
            n_query=self.n_query,
        )

    def decode_classes(self, classes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(partition, cluster)`` from ``TaskBatch.classes`` of this source."""
        return classes // self.n_clusters, classes % self.n_clusters

    def __repr__(self) -> str:
        return (
            f"CactusTaskSource({self.view.name}/{self.view.split}, "
            f"partitions={self.partition_ids.numel()}, n_way={self.n_way}, "
            f"k_shot={self.k_shot}, n_query={self.n_query}, seed={self.seed}, "
            f"tasks_drawn={self.tasks_drawn})"
        )
