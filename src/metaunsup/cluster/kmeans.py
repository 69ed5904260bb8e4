"""Batched k-means: k-means++ seeding and Lloyd iterations over many tasks and restarts at once.

A meta-batch holds ``B`` small clustering tasks (``x: [B, n, d]``, e.g. 1000 tasks of 200 points).
Looping a CPU k-means over them is dominated by per-call overhead; here the ``B * n_init``
problems are batches of tensors, so each step of every problem is a handful of batched
operations:

* the restarts of a task share its points, so the distances from the ``n`` points of a task to
  the ``n_init * k`` centres of all its restarts come from one ``[n_init*k, d+1] x [d+1, n]``
  product per task (rows ``[c, ||c||²]`` times columns ``[-2x; 1]``, i.e. the squared distance
  less ``||x||²``, which does not change the nearest centre);
* the new centres are one product of the one-hot assignment ``[n_init*k, n]`` with the points
  and a column of ones ``[n, d+1]``, giving the sums and sizes of all clusters at once;
* tasks go in cache-sized chunks (about a dozen tasks of 200 points), spread over
  ``torch.get_num_threads()`` threads; within a chunk stopped restarts are frozen, and the
  working batch is compacted as tasks and restarts finish, so the work follows the problems
  still moving rather than the slowest one.

The algorithm follows scikit-learn's ``KMeans(init="k-means++", algorithm="lloyd")``:

* greedy k-means++ (Arthur & Vassilvitskii 2007): the first centre uniformly at random, each next
  one by drawing ``2 + int(log k)`` candidates with probability proportional to the squared
  distance to the nearest chosen centre and keeping the candidate that lowers the potential
  (sum of those distances) most;
* Lloyd iterations (Lloyd 1982): assign each point to its nearest centre, move each centre to
  the mean of its points. A cluster left empty is re-seeded, as scikit-learn does, with the point
  farthest from its own centre (the ``j``-th empty cluster of a problem takes the ``j``-th
  farthest point, which leaves its old cluster);
* a problem stops when its labels no longer change, or when the squared shift of its centres
  (summed over centres) is ``<= tol * mean per-feature variance`` of the task's points; stopped
  problems no longer change while the others go on, up to ``max_iter`` iterations;
* the final labels are the nearest centres of the final centres, the inertia the sum of squared
  distances to them, and each task keeps the restart with the lowest inertia.

Randomness: task ``b`` draws from its own ``torch.Generator`` seeded with
``task_seeds(seed, B)[b]`` (see :func:`~metaunsup.cluster.task_seeds`), so a task's result does
not depend on the rest of the batch: ``kmeans(x, k, seed=s)`` gives task ``b`` the labels of
``kmeans(x[b], k, seed=task_seeds(s, len(x))[b])``, and task 0 those of ``kmeans(x[0], k, seed=s)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import torch

from metaunsup._validation import check_float, check_int
from metaunsup.cluster._common import (
    SeedLike,
    check_k,
    check_points,
    gather_rows,
    resolve_seeds,
    task_uniforms,
)
from metaunsup.errors import ConfigError, DataError

__all__ = ["KMeansResult", "kmeans", "kmeans_plusplus"]

#: Elements in the main tensors of one chunk of tasks (distances, points, centres): a few MB in
#: float32, so that they stay in the core's cache between operations.
_CHUNK_ELEMENTS = 1 << 20
#: Compact Lloyd's working batch once the work left is at most this fraction of it.
_COMPACT_AT = 0.5

T = TypeVar("T")


@dataclass(frozen=True, eq=False)
class KMeansResult:
    """The best restart of k-means for each task.

    Attributes
    ----------
    labels:
        ``int64 [B, n]`` cluster of each point, ``0..k-1`` (the nearest of ``centers``).
    centers:
        ``[B, k, d]`` cluster centres, in the dtype of the input.
    inertia:
        ``[B]`` sum over points of the squared distance to their centre.
    n_iter:
        ``int64 [B]`` Lloyd iterations the kept restart ran.

    The task dimension ``B`` is absent when the input was one task ``[n, d]``.
    """

    labels: torch.Tensor
    centers: torch.Tensor
    inertia: torch.Tensor
    n_iter: torch.Tensor


def _n_local_trials(k: int) -> int:
    return 2 + int(math.log(k))


def _chunk_size(n_tasks: int, per_task: int, device: torch.device) -> int:
    """Tasks per chunk: main tensors of about ``_CHUNK_ELEMENTS`` elements on the CPU."""
    budget = _CHUNK_ELEMENTS if device.type == "cpu" else _CHUNK_ELEMENTS * 1024
    return max(1, min(n_tasks, budget // max(1, per_task)))


def _augment(xT: torch.Tensor) -> torch.Tensor:
    """``[b, d+1, n]``: the transposed points times ``-2`` with a row of ones appended.

    With centres written as rows ``[c, ||c||²]`` (:func:`_augment_centers`) one batched product
    then gives ``||c||² - 2 c·x``, the squared distance less ``||x||²`` (which does not change
    an argmin).
    """
    return torch.cat([xT * -2.0, torch.ones_like(xT[:, :1])], dim=1)


def _augment_centers(c: torch.Tensor) -> torch.Tensor:
    """``[..., d+1]`` rows ``[c, ||c||²]`` for centres ``c: [..., d]``."""
    return torch.cat([c, (c * c).sum(-1, keepdim=True)], dim=-1)


def _plusplus(x: torch.Tensor, xsq: torch.Tensor, k: int, u: torch.Tensor) -> torch.Tensor:
    """Greedy k-means++ seeding for ``R`` restarts of each task at once.

    ``x: [b, n, d]``, ``xsq: [b, n]`` squared norms, ``u: float64 [b, R, 1 + (k-1)*L]``
    uniforms (the first picks the first centre, then ``L`` per further centre).
    Returns the indices of the chosen points, ``int64 [b, R, k]``.

    Points are written once as rows ``[-2x, ||x||², 1]`` and columns ``[x; 1; ||x||²]``: the
    squared distances from the ``R*L`` candidates of a task to its points are then one product of
    the gathered candidate rows with the columns.
    """
    b, n, _ = x.shape
    R = u.shape[1]
    L = _n_local_trials(k)
    idx = torch.empty((b, R, k), dtype=torch.int64, device=x.device)
    idx[:, :, 0] = (u[:, :, 0] * n).long().clamp_(max=n - 1)
    if k == 1:
        return idx
    trials = u[:, :, 1:].to(x.dtype).reshape(b, R, k - 1, L)
    one = torch.ones_like(xsq).unsqueeze(-1)
    rows = torch.cat([x * -2.0, xsq.unsqueeze(-1), one], dim=-1)  # [b, n, d+2]
    cols = torch.cat([x, one, xsq.unsqueeze(-1)], dim=-1).transpose(1, 2)  # [b, d+2, n]
    tb = torch.arange(b, device=x.device).view(b, 1)
    tr = torch.arange(R, device=x.device).view(1, R)
    closest = torch.bmm(rows[tb, idx[:, :, 0]], cols).clamp_(min=0)  # [b, R, n]
    pot = closest.sum(-1)  # [b, R]
    for j in range(1, k):
        rv = trials[:, :, j - 1] * pot.unsqueeze(-1)  # [b, R, L]
        cand = torch.searchsorted(closest.cumsum(-1), rv).clamp_(max=n - 1)  # [b, R, L]
        dc = torch.bmm(rows[tb, cand.view(b, R * L)], cols).clamp_(min=0).view(b, R, L, n)
        dc = torch.minimum(dc, closest.unsqueeze(2), out=dc)  # [b, R, L, n]
        pot, best = dc.sum(-1).min(-1)  # [b, R]: the candidate lowering the potential most
        closest = dc[tb, tr, best]  # [b, R, n]
        idx[:, :, j] = cand[tb, tr, best]
    return idx


def _assign(
    xa: torch.Tensor, c: torch.Tensor, augmented: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest centre of each point, for every restart of every task.

    ``xa: [b, d+1, n]`` (points from :func:`_augment`), ``c: [b, R, k, d]`` centres (or
    ``[b, R, k, d+1]`` rows from :func:`_augment_centers` when ``augmented``). Returns
    ``(mind [b, R, n], onehot [b, R, k, n])``: ``mind + ||x||²`` is the squared distance to the
    nearest centre and ``onehot`` (in ``c.dtype``) marks that centre.

    The minimum over ``k`` and an in-place equality test build the one-hot directly (``argmin``
    over a middle dimension is slower on CPU). A point at exactly the same distance
    from two centres — common with discrete data such as pixel intensities — is marked twice;
    callers detect it from the cluster sizes and apply :func:`_first_mark`.
    """
    b, R, k, _ = c.shape
    ca = c if augmented else _augment_centers(c)
    dist = torch.bmm(ca.reshape(b, R * k, -1), xa).view(b, R, k, -1)
    mind = dist.amin(2)  # [b, R, n]
    return mind, dist.eq_(mind.unsqueeze(2))  # 1.0 at the minimum, in place of the distances


def _first_mark(onehot: torch.Tensor) -> torch.Tensor:
    """``onehot: [b, R, k, n]`` with only the first (lowest-index) mark of each point kept.

    This breaks ties as ``argmin`` does.
    """
    out = onehot.clone()
    seen = out[:, :, 0].clone()  # [b, R, n]: 1 once a point has its mark
    for j in range(1, out.shape[2]):
        out[:, :, j].mul_(1.0 - seen)
        seen.add_(out[:, :, j])
    return out


def _labels(onehot: torch.Tensor) -> torch.Tensor:
    """``int64 [b, R, n]`` cluster index of each point from ``onehot: [b, R, k, n]``."""
    k = onehot.shape[2]
    ar = torch.arange(k, dtype=onehot.dtype, device=onehot.device).view(1, 1, k, 1)
    return (onehot * ar).sum(2).round_().long()


def _relocate_empty(
    x: torch.Tensor,
    xsq: torch.Tensor,
    c: torch.Tensor,
    mind: torch.Tensor,
    onehot: torch.Tensor,
    sums: torch.Tensor,
    counts: torch.Tensor,
) -> None:
    """Re-seed empty clusters with the points farthest from their centres (in place).

    ``sums: [b, R, k, d]`` and ``counts: [b, R, k]`` are the per-cluster sums and sizes of the
    assignment ``onehot: [b, R, k, n]`` to the centres ``c: [b, R, k, d]``. The ``j``-th empty
    cluster of a problem becomes the ``j``-th farthest point from its centre, which leaves its
    old cluster (scikit-learn's rule). In a problem whose points all sit on their centres
    (fewer distinct points than ``k``), empty clusters keep their centre.
    """
    k = counts.shape[-1]
    empty = counts == 0
    far_d = (mind + xsq.unsqueeze(1)).clamp_(min=0)  # [b, R, n]
    far = far_d.topk(k - 1, dim=-1).indices  # [b, R, k-1], farthest first
    rank = (empty.cumsum(-1) - 1).clamp_(min=0)  # [b, R, k]
    eb, er, ej = empty.nonzero(as_tuple=True)
    ok = far_d.amax(-1)[eb, er] > 0
    sums[eb[~ok], er[~ok], ej[~ok]] = c[eb[~ok], er[~ok], ej[~ok]]
    counts[eb[~ok], er[~ok], ej[~ok]] = 1
    eb, er, ej = eb[ok], er[ok], ej[ok]
    p = far[eb, er, rank[eb, er, ej]]
    old = _labels(onehot[eb, er].unsqueeze(1)).squeeze(1)  # [E, n]
    old = old.gather(1, p.unsqueeze(1)).squeeze(1)
    xp = x[eb, p]
    sums.index_put_((eb, er, old), -xp, accumulate=True)
    counts.index_put_((eb, er, old), -torch.ones_like(p, dtype=counts.dtype), accumulate=True)
    sums[eb, er, ej] = xp
    counts[eb, er, ej] = 1
    # A far point that was alone in its cluster leaves it empty: it keeps its centre.
    gone = counts == 0
    sums[gone] = c[gone]
    counts[gone] = 1


def _lloyd(
    x: torch.Tensor, xsq: torch.Tensor, c: torch.Tensor, tol: torch.Tensor, max_iter: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd iterations for ``R`` restarts of ``b`` tasks; ``c: [b, R, k, d]`` initial centres.

    ``x: [b, n, d]`` (centred), ``xsq: [b, n]``, ``tol: [b]`` the absolute tolerance on the
    summed squared centre shift of each task. Returns the final centres ``[b, R, k, d]`` and
    the iterations each restart ran, ``int64 [b, R]``.

    One iteration is two batched products per task: distances ``[R*k, d+1] x [d+1, n]`` and
    sums and sizes of the clusters ``[R*k, n] x [n, d+1]`` (one-hot times points with a column
    of ones). scikit-learn also stops when the labels no longer change; the centres then do
    not move (the same assignment gives bit-identical means), so ``shift <= tol`` stops at the
    same iteration.

    Stopped restarts are frozen by a mask. Once the work left is at most ``_COMPACT_AT`` of
    the working batch, it is compacted: finished tasks leave it, and each task's running
    restarts move to the front so that the restart dimension shrinks to the most any task
    still runs.
    """
    b, R, k, d = c.shape
    n = x.shape[1]
    dev = x.device
    out_c = c.clone()
    out_it = torch.zeros((b, R), dtype=torch.int64, device=dev)
    ids = torch.arange(b, device=dev).view(b, 1)  # task of each working row
    rid = torch.arange(R, device=dev).expand(b, R)  # restart of each working slot
    # Centres live as rows [c, ||c||²] (see _augment_centers): the sums and sizes of a cluster,
    # [Σx, m], divided by m give [c, 1], whose last entry is then overwritten with ||c||².
    ca, tolw, xsqw = _augment_centers(c), tol.unsqueeze(1), xsq
    xa = _augment(x.transpose(1, 2))  # [b, d+1, n] for distances
    x1 = torch.cat([x, torch.ones_like(x[:, :, :1])], dim=2)  # [b, n, d+1] for sums, sizes
    itw = torch.zeros((b, R), dtype=torch.int64, device=dev)
    done = torch.zeros((b, R), dtype=torch.bool, device=dev)
    any_done = False
    for _ in range(max_iter):
        bw, Rw = done.shape
        mind, onehot = _assign(xa, ca, augmented=True)
        S = torch.bmm(onehot.view(bw, Rw * k, n), x1).view(bw, Rw, k, d + 1)
        counts = S[..., d]
        # Every point has at least one mark: more marks than points means a tie.
        if int(counts.sum(dtype=torch.float64)) != bw * Rw * n:
            onehot = _first_mark(onehot)
            S = torch.bmm(onehot.view(bw, Rw * k, n), x1).view(bw, Rw, k, d + 1)
            counts = S[..., d]
        if float(counts.amin()) == 0:
            _relocate_empty(x1[..., :d], xsqw, ca[..., :d], mind, onehot, S[..., :d], counts)
        cnew = S.mul_(S[..., d:].reciprocal())  # [bw, Rw, k, d+1]: [c, 1]
        shift = torch.linalg.vector_norm(cnew[..., :d] - ca[..., :d], dim=(2, 3)).square_()
        cnew[..., d] = torch.linalg.vector_norm(cnew[..., :d], dim=-1).square_()
        if any_done:
            active = ~done
            ca = torch.where(active.view(bw, Rw, 1, 1), cnew, ca)
            itw += active
        else:
            ca = cnew
            itw += 1
        done |= shift <= tolw
        n_active = (~done).sum(1)  # [bw]
        counts_left = n_active.tolist()
        r_left = max(counts_left)
        if r_left == 0:
            break
        b_left = sum(1 for a in counts_left if a)
        any_done = sum(counts_left) < bw * Rw
        if b_left * r_left <= _COMPACT_AT * bw * Rw:
            left = n_active > 0
            out_c[ids, rid] = ca[..., :d]
            out_it[ids, rid] = itw
            # running restarts first (a stable sort keeps their order), then cut the rest
            order = torch.argsort(done[left].to(torch.int8), dim=1, stable=True)[:, :r_left]
            rows = torch.arange(b_left, device=dev).view(b_left, 1)
            ca, itw = ca[left][rows, order], itw[left][rows, order]
            done, rid = done[left][rows, order], rid[left][rows, order]
            ids, xa, x1, xsqw, tolw = ids[left], xa[left], x1[left], xsqw[left], tolw[left]
            any_done = bool(done.any())
    out_c[ids, rid] = ca[..., :d]
    out_it[ids, rid] = itw
    return out_c, out_it


def _kmeans_chunk(
    x: torch.Tensor, k: int, init: torch.Tensor, max_iter: int, tol: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """k-means on ``x: [b, n, d]``; returns the best restart of each task.

    ``init`` is either ``float64 [b, R, m]`` uniforms for ``R`` k-means++ seedings, or given
    initial centres ``[b, 1, k, d]`` (same dtype as ``x``).
    """
    b, _, d = x.shape
    mean = x.mean(1, keepdim=True)
    xc = x - mean  # centred, as scikit-learn does, for accuracy of ||x||² - 2x·c + ||c||²
    xsq = (xc * xc).sum(-1)
    abs_tol = xsq.mean(1) * (tol / d)  # [b]: tol * mean per-feature variance
    if init.dim() == 4:
        centers = init - mean.unsqueeze(1)
    else:
        centers = gather_rows(xc, _plusplus(xc, xsq, k, init))  # [b, R, k, d]
    centers, n_iter = _lloyd(xc, xsq, centers, abs_tol, max_iter)
    xa = _augment(xc.transpose(1, 2))
    mind, _ = _assign(xa, centers)
    inertia_r = (mind + xsq.unsqueeze(1)).clamp_(min=0).sum(-1)  # [b, R]
    best = inertia_r.argmin(1)  # [b]: the first of equal inertias, as scikit-learn keeps
    ar = torch.arange(b, device=x.device)
    best_c = centers[ar, best]  # [b, k, d]
    _, onehot = _assign(xa, best_c.unsqueeze(1))
    labels = _labels(_first_mark(onehot)).squeeze(1)  # [b, n]
    inertia = (xc - gather_rows(best_c, labels)).pow_(2).sum((1, 2))
    return labels, best_c + mean, inertia, n_iter[ar, best]


def _map_chunks(fn: Callable[[int], T], starts: Sequence[int], device: torch.device) -> list[T]:
    """``[fn(s) for s in starts]``, spread over ``torch.get_num_threads()`` threads.

    Each chunk of tasks is small (its temporaries stay in cache), so running whole chunks side
    by side, each on one intra-op thread, uses the cores far better than splitting every small
    operation across them. Torch operations release the GIL. Results keep the order of
    ``starts`` and do not depend on the number of threads. Off the CPU, chunks run in turn.
    """
    n_threads = torch.get_num_threads()
    if n_threads <= 1 or len(starts) <= 1 or device.type != "cpu":
        return [fn(s) for s in starts]

    def run(s: int) -> T:
        torch.set_num_threads(1)  # this worker thread only
        return fn(s)

    try:
        with ThreadPoolExecutor(min(n_threads, len(starts))) as pool:
            return list(pool.map(run, starts))
    finally:
        # a worker's setting also becomes the default of threads started later: restore it
        torch.set_num_threads(n_threads)


def kmeans(
    x: torch.Tensor,
    k: int,
    n_init: int = 10,
    max_iter: int = 300,
    tol: float = 1e-4,
    seed: SeedLike = 0,
    init: str | torch.Tensor = "k-means++",
) -> KMeansResult:
    """k-means of each task of a batch, with k-means++ seeding and ``n_init`` restarts.

    Parameters
    ----------
    x:
        ``[B, n, d]`` points of ``B`` tasks, or ``[n, d]`` for one task (then the results have
        no task dimension). ``float32`` or ``float64`` (integers are cast to ``float32``);
        NaN or infinite values raise :class:`~metaunsup.errors.DataError`.
    k:
        Number of clusters, ``1 <= k <= n``.
    n_init:
        Restarts per task, each from its own k-means++ seeding; the lowest inertia is kept.
    max_iter:
        Most Lloyd iterations per restart.
    tol:
        Relative tolerance: a restart stops when the summed squared shift of its centres is
        ``<= tol * mean(var(x_task, axis=0))`` (scikit-learn's rule), or when its labels stop
        changing. ``0`` stops only on unchanged labels.
    seed:
        An int, or one int per task; see :func:`~metaunsup.cluster.task_seeds`. The same seed
        gives the same result.
    init:
        ``"k-means++"``, or initial centres ``[B, k, d]`` (``[k, d]`` for one task), e.g.
        prototypes to refine; with given centres there is one run, so ``n_init`` must be 1.

    Returns
    -------
    KMeansResult
        ``labels int64 [B, n]``, ``centers [B, k, d]``, ``inertia [B]``, ``n_iter int64 [B]``.

    Notes
    -----
    Computed in the dtype of ``x`` (``float32`` by default), without gradients (see
    :func:`~metaunsup.cluster.soft_kmeans` for a differentiable version). On the CPU, chunks of
    tasks run on ``torch.get_num_threads()`` threads; the results do not depend on the number
    of threads nor on the other tasks of the batch.

    References
    ----------
    Arthur & Vassilvitskii, "k-means++: the advantages of careful seeding", SODA 2007.
    Lloyd, "Least squares quantization in PCM", IEEE Trans. Inf. Theory 28(2), 1982.

    Example
    -------
    >>> x = torch.randn(8, 60, 2) + 6 * torch.arange(3.0).repeat_interleave(20)[None, :, None]
    >>> res = kmeans(x, 3, n_init=4)
    >>> res.labels.shape, res.centers.shape
    (torch.Size([8, 60]), torch.Size([8, 3, 2]))
    """
    xb, batched = check_points(x)
    B, n, d = xb.shape
    k = check_k(k, n)
    n_init = check_int("n_init", n_init, 1)
    max_iter = check_int("max_iter", max_iter, 1)
    tol = check_float("tol", tol, 0.0)
    L = _n_local_trials(k)
    start = _starts(xb, k, n_init, seed, init, batched)
    chunk = _chunk_size(B, n * n_init * max(k, L) + (n + n_init * k) * (d + 1), xb.device)
    xb = xb.detach()

    def run(s: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            return _kmeans_chunk(xb[s : s + chunk], k, start[s : s + chunk], max_iter, tol)

    outs = _map_chunks(run, range(0, B, chunk), xb.device)
    labels, centers, inertia, n_iter = (torch.cat(t) for t in zip(*outs, strict=True))
    if not batched:
        labels, centers, inertia, n_iter = labels[0], centers[0], inertia[0], n_iter[0]
    return KMeansResult(labels=labels, centers=centers, inertia=inertia, n_iter=n_iter)


def _starts(
    xb: torch.Tensor, k: int, n_init: int, seed: SeedLike, init: str | torch.Tensor, batched: bool
) -> torch.Tensor:
    """Where each task's restarts begin: given centres ``[B, 1, k, d]``, or for k-means++ the
    uniforms each task's seeding draws from, ``[B, n_init, 1 + (k - 1) * L]``."""
    B, _, d = xb.shape
    if isinstance(init, torch.Tensor):
        if n_init != 1:
            raise ConfigError(
                f"with given initial centres there is one run: set n_init=1, not {n_init}"
            )
        return _check_centers(init, B, k, d, batched).to(xb.dtype).unsqueeze(1)
    if init == "k-means++":
        trials = 1 + (k - 1) * _n_local_trials(k)
        return task_uniforms(resolve_seeds(seed, B), (n_init, trials)).to(xb.device)
    raise ConfigError(f"init must be 'k-means++' or a tensor of centres, got {init!r}")


def _check_centers(c: object, B: int, k: int, d: int, batched: bool) -> torch.Tensor:
    """Given initial centres as ``[B, k, d]`` (``[k, d]`` for one task); :class:`DataError` else."""
    if not isinstance(c, torch.Tensor):
        raise DataError(f"initial centres must be a tensor, got {type(c).__name__}")
    t = c.detach()
    if not batched and t.dim() == 2:
        t = t.unsqueeze(0)
    if tuple(t.shape) != (B, k, d):
        want = f"[{B}, {k}, {d}]" if batched else f"[{k}, {d}]"
        raise DataError(f"initial centres must have shape {want}, got {tuple(c.shape)}")
    if not t.is_floating_point() or not bool(torch.isfinite(t).all()):
        raise DataError("initial centres must be finite floating-point values")
    return t


def kmeans_plusplus(
    x: torch.Tensor, k: int, seed: SeedLike = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy k-means++ seeding of each task (Arthur & Vassilvitskii 2007).

    ``x: [B, n, d]`` (or ``[n, d]``). Returns ``(centers [B, k, d], indices int64 [B, k])``, the
    chosen points and their positions, drawn as the seeding of :func:`kmeans`.
    """
    xb, batched = check_points(x)
    B, n, _ = xb.shape
    k = check_k(k, n)
    seeds = resolve_seeds(seed, B)
    u = task_uniforms(seeds, (1, 1 + (k - 1) * _n_local_trials(k))).to(xb.device)
    with torch.no_grad():
        xc = xb.detach() - xb.detach().mean(1, keepdim=True)
        idx = _plusplus(xc, (xc * xc).sum(-1), k, u)[:, 0]
    centers = gather_rows(xb, idx)
    if not batched:
        return centers[0], idx[0]
    return centers, idx
