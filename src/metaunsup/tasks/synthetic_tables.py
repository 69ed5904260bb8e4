"""A seeded prior over tables: synthetic clustering (and anomaly) tasks for zero-shot models.

Each task is one small table drawn from a generative prior, in the spirit of the priors of
TabPFN (Hollmann et al., "TabPFN: A Transformer That Solves Small Tabular Classification
Problems in a Second", ICLR 2023: random structural networks mapping latent causes to columns)
and FoMo-0D (Shen et al., "FoMo-0D: A Foundation Model for Zero-shot Tabular Outlier
Detection", 2024: Gaussian mixtures with inflated-variance or shifted anomalies). A model
meta-trained only on such tasks clusters and scores a user's table with no training on it.

One task, in order (:meth:`SyntheticTables.sample_table`):

1. **Size.** ``d`` columns, log-uniform in ``2..max_features`` (real tables are more often
   narrow than wide); ``k`` clusters (shared by a meta-batch); ``n`` rows split among them by
   a Dirichlet(2) draw (every cluster gets at least 2 rows).
2. **Latent mixture.** A latent dimension ``q`` uniform in ``1..min(d, MAX_LATENT)``; cluster
   means ``N(0, s² I_q)`` with separation ``s`` log-uniform in ``SEPARATION``; each cluster a
   diagonal Gaussian with its own per-axis spreads (log-uniform in ``[1/2, 2]``).
3. **Random network.** The latent points go through a random map to ``d`` columns: with
   probability 1/2 linear, else an MLP of 1 or 2 random layers (width 16..64, activation drawn
   from tanh, ReLU, sine, sigmoid), then a random linear read-out, plus Gaussian noise of a
   random share of each column's spread.
4. **Column kinds.** A random share (up to 1/2) of the columns is pure noise (no cluster
   signal, Gaussian or uniform); with probability 1/3 a random share of the columns is
   discretised to 2..5 levels (categorical or ordinal columns, one-hot-like when 2).
5. **Anomalies** (``anomaly_rate > 0``): that share of the rows is replaced by anomalies of
   one kind per task, drawn uniformly from ``anomaly_kinds`` — the four types of ADBench (Han
   et al., "ADBench: Anomaly Detection Benchmark", NeurIPS 2022):

   - ``"local"``: points of their cluster with its latent spread inflated by 3..6
     (variance-inflated) or its mean shifted 3..6 spreads along a random direction (shifted),
     half each in expectation (the only kind by default);
   - ``"clustered"``: a small cluster of their own, its latent mean drawn as the others' and
     its spread 1/4..1 of theirs (a rare class: dense, so local-density scores miss it);
   - ``"global"``: uniform in each column's range widened by 10% on each side;
   - ``"dependency"``: each cell copied from a random normal row of its column (every
     marginal normal, the columns' dependence broken).

   They keep their cluster's label and are flagged in ``anomaly``.
6. **Standardised** as :class:`~metaunsup.MetaKMeans` scales a user's table for the
   ``tabular`` checkpoint (:func:`metaunsup.estimators.scaling.table_scaling`, ``"standard"``):
   each column centred and divided by its standard deviation over its observed cells.
7. **Missing cells.** With probability ``missing_prob`` a task has a missing-completely-at-
   random rate uniform in ``[0, max_missing]`` (NaN cells; every row keeps one observed cell);
   the columns are shuffled into the first ``d`` positions and the ``max_features - d`` others
   are absent (NaN), which is how a narrower user table reaches the network.

Shapes: :meth:`SyntheticTables.sample` returns a clustering
:class:`~metaunsup.tasks.TaskBatch` with ``x`` ``float32 [B, n, max_features]`` (NaN: missing
or absent) and ``y`` ``int64 [B, n]``; :meth:`~SyntheticTables.sample_table` one table
``x [n, max_features]``, ``y [n]``, ``anomaly bool [n]`` and its width ``d``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from metaunsup._validation import check_float, check_int, check_seed
from metaunsup.errors import ConfigError
from metaunsup.tasks.batch import TaskBatch
from metaunsup.tasks.stream import SeededStream

__all__ = ["ANOMALY_KINDS", "SYNTHETIC_TABLES", "SyntheticTable", "SyntheticTables"]

#: The ``data.dataset`` of a run config that meta-trains on this prior (no real data).
SYNTHETIC_TABLES = "synthetic-tables"

#: Largest latent dimension of a task's mixture.
MAX_LATENT = 10
#: Range of the separation of the cluster means (in units of a cluster's spread).
SEPARATION = (1.0, 6.0)
#: Range of the inflation of a variance-inflated anomaly's spread, or of a shift (spreads).
ANOMALY_STRENGTH = (3.0, 6.0)
#: The kinds of anomalies the prior draws (module docstring, step 5).
ANOMALY_KINDS = ("local", "clustered", "global", "dependency")
_ACTIVATIONS = (torch.tanh, torch.relu, torch.sin, torch.sigmoid)


@dataclass(frozen=True)
class SyntheticTable:
    """One task of the prior: ``x`` ``float32 [n, max_features]`` (standardised; NaN missing
    or absent), ``y`` ``int64 [n]`` clusters, ``anomaly`` ``bool [n]``, ``d`` its width."""

    x: Tensor
    y: Tensor
    anomaly: Tensor
    d: int


class SyntheticTables(SeededStream):
    """A seeded stream of synthetic clustering tasks (see the module docstring).

    Parameters
    ----------
    max_features:
        Width of every task's ``x`` (the network's input); each task uses its first ``d``.
    max_clusters, rows:
        A meta-batch's ``k`` is uniform in ``2..max_clusters``; its tasks hold
        ``k * (rows // k)`` rows.
    min_features:
        Least ``d``.
    missing_prob, max_missing:
        Share of tasks with missing cells, and the largest missing rate of one.
    anomaly_rate:
        Share of anomalous rows (0 for clustering meta-training: an anomaly labelled with its
        cluster would teach the embedding to pull it in).
    anomaly_kinds:
        The kinds of anomalies a task draws one of (:data:`ANOMALY_KINDS`; module docstring,
        step 5).
    seed:
        Seeds the stream (same seed → same tasks).
    """

    def __init__(
        self,
        max_features: int = 100,
        max_clusters: int = 10,
        rows: int = 200,
        *,
        min_features: int = 2,
        missing_prob: float = 0.5,
        max_missing: float = 0.3,
        anomaly_rate: float = 0.0,
        anomaly_kinds: tuple[str, ...] = ("local",),
        seed: int = 0,
    ) -> None:
        self.max_features = check_int("max_features", max_features, 2)
        self.min_features = check_int("min_features", min_features, 1)
        if self.min_features > self.max_features:
            raise ConfigError(f"min_features={min_features} exceeds max_features={max_features}")
        self.max_clusters = check_int("max_clusters", max_clusters, 2)
        self.rows = check_int("rows", rows, 4 * self.max_clusters)
        self.missing_prob = check_float("missing_prob", missing_prob, 0.0, 1.0)
        self.max_missing = check_float("max_missing", max_missing, 0.0, 0.9)
        self.anomaly_rate = check_float("anomaly_rate", anomaly_rate, 0.0, 0.5)
        self.anomaly_kinds = tuple(anomaly_kinds)
        unknown = sorted(set(self.anomaly_kinds) - set(ANOMALY_KINDS))
        if unknown or not self.anomaly_kinds:
            raise ConfigError(
                f"anomaly_kinds must be some of {', '.join(ANOMALY_KINDS)}, got "
                f"{list(anomaly_kinds)}"
            )
        self.seed = check_seed("seed", seed)
        self.start_stream()

    def stream_facts(self) -> dict[str, int]:
        return {"max_features": self.max_features, "max_clusters": self.max_clusters}

    # ------------------------------------------------------------------ sampling
    def _u(self, low: float = 0.0, high: float = 1.0) -> float:
        return low + (high - low) * float(torch.rand((), generator=self._generator))

    def _int(self, low: int, high: int) -> int:
        """Uniform in ``low..high`` (inclusive)."""
        return int(torch.randint(low, high + 1, (), generator=self._generator))

    def _log_u(self, low: float, high: float) -> float:
        return math.exp(self._u(math.log(low), math.log(high)))

    def sample(self, n_tasks: int) -> TaskBatch:
        """``n_tasks`` clustering tasks sharing one ``k`` (see the module docstring)."""
        check_int("n_tasks", n_tasks, 1)
        k = self._int(2, self.max_clusters)
        per = self.rows // k
        tables = [self.sample_table(k, k * per) for _ in range(n_tasks)]
        n = k * per
        self.tasks_drawn += n_tasks
        return TaskBatch(
            x=torch.stack([t.x for t in tables]),
            y=torch.stack([t.y for t in tables]),
            classes=torch.arange(k).expand(n_tasks, k).clone(),
            indices=torch.arange(n).expand(n_tasks, n).clone(),
            n_way=k,
            k_shot=per,
        )

    def sample_table(self, k: int, n: int) -> SyntheticTable:
        """One table of ``n`` rows in ``k`` clusters (see the module docstring)."""
        check_int("k", k, 1)
        check_int("n", n, 2 * k)
        g = self._generator
        d = round(self._log_u(self.min_features, self.max_features + 0.999) - 0.499)
        d = min(max(d, self.min_features), self.max_features)
        y = self._cluster_sizes(k, n)
        z = self._latent(y, k, self._int(1, min(d, MAX_LATENT)))
        anomaly = torch.rand(n, generator=g) < self.anomaly_rate
        kind = "local"
        if anomaly.any():
            if len(self.anomaly_kinds) > 1:  # one draw only then: the default stream is kept
                kind = self.anomaly_kinds[self._int(0, len(self.anomaly_kinds) - 1)]
            else:
                kind = self.anomaly_kinds[0]
            if kind in ("local", "clustered"):
                z = self._anomalies(z, y, anomaly, kind)
        x = self._columns(z, d)
        if kind in ("global", "dependency"):
            x = self._column_anomalies(x, anomaly, kind)
        x = (x - x.mean(0)) / x.std(0).clamp_min(1e-6)
        x = self._missing(x)
        out = torch.full((n, self.max_features), float("nan"))
        out[:, :d] = x[:, torch.randperm(d, generator=g)]
        order = torch.randperm(n, generator=g)
        return SyntheticTable(out[order], y[order], anomaly[order], d)

    def _cluster_sizes(self, k: int, n: int) -> Tensor:
        """Labels ``[n]``: 2 rows per cluster, the rest split by a Dirichlet(2) draw."""
        share = torch._standard_gamma(torch.full((k,), 2.0), generator=self._generator)
        extra = torch.multinomial(share / share.sum(), n - 2 * k, True, generator=self._generator)
        return torch.cat([torch.arange(k).repeat(2), extra]).sort().values

    def _latent(self, y: Tensor, k: int, q: int) -> Tensor:
        """Latent points ``[n, q]`` of a Gaussian mixture with means ``N(0, s² I)``."""
        g = self._generator
        means = torch.randn(k, q, generator=g)  # drawn before the separation, as always
        self._separation = self._log_u(*SEPARATION)
        means = means * self._separation
        spreads = torch.exp(torch.empty(k, q).uniform_(-math.log(2), math.log(2), generator=g))
        self._means, self._spreads = means, spreads
        return means[y] + torch.randn(len(y), q, generator=g) * spreads[y]

    def _anomalies(self, z: Tensor, y: Tensor, anomaly: Tensor, kind: str) -> Tensor:
        """``z`` with the anomalous rows redrawn in the latent space: variance-inflated or
        shifted points of their cluster (``"local"``) or a small cluster of their own
        (``"clustered"``; module docstring, step 5)."""
        g = self._generator
        m, q = int(anomaly.sum()), z.shape[1]
        if kind == "clustered":
            mean = torch.randn(q, generator=g) * self._separation
            spread = torch.exp(torch.empty(q).uniform_(-math.log(2), math.log(2), generator=g))
            spread = spread * self._u(0.25, 1.0)
            z = z.clone()
            z[anomaly] = mean + torch.randn(m, q, generator=g) * spread
            return z
        c = y[anomaly]
        strength = torch.empty(m, 1).uniform_(*ANOMALY_STRENGTH, generator=g)
        noise = torch.randn(m, q, generator=g) * self._spreads[c]
        direction = torch.randn(m, q, generator=g)
        direction = direction / direction.norm(dim=1, keepdim=True) * self._spreads[c]
        inflated = torch.rand(m, 1, generator=g) < 0.5
        point = torch.where(
            inflated,
            self._means[c] + noise * strength,
            self._means[c] + noise + direction * strength,
        )
        z = z.clone()
        z[anomaly] = point
        return z

    def _column_anomalies(self, x: Tensor, anomaly: Tensor, kind: str) -> Tensor:
        """``x`` ``[n, d]`` with the anomalous rows redrawn in the column space: uniform in
        each column's widened range (``"global"``) or each cell from a random normal row
        (``"dependency"``; module docstring, step 5)."""
        g = self._generator
        m, d = int(anomaly.sum()), x.shape[1]
        normal = x[~anomaly]
        x = x.clone()
        if kind == "global":
            low, high = normal.min(0).values, normal.max(0).values
            pad = 0.1 * (high - low)
            x[anomaly] = low - pad + torch.rand(m, d, generator=g) * (high - low + 2 * pad)
        else:
            rows = torch.randint(0, len(normal), (m, d), generator=g)
            x[anomaly] = normal[rows, torch.arange(d)]
        return x

    def _columns(self, z: Tensor, d: int) -> Tensor:
        """``d`` columns ``[n, d]`` of the latent points through a random network, with noise
        columns and discretised columns (module docstring, steps 3-4)."""
        g = self._generator
        h = z
        if self._u() < 0.5:
            for _ in range(self._int(1, 2)):
                w = torch.randn(h.shape[1], self._int(16, 64), generator=g) / math.sqrt(h.shape[1])
                act = _ACTIVATIONS[self._int(0, len(_ACTIVATIONS) - 1)]
                h = act(h @ w + torch.randn(w.shape[1], generator=g) * 0.5)
                h = (h - h.mean(0)) / h.std(0).clamp_min(1e-6)
        x = h @ torch.randn(h.shape[1], d, generator=g)
        x = x + torch.randn(x.shape, generator=g) * x.std(0) * self._u(0.0, 0.5)
        n_noise = self._int(0, d // 2)
        if n_noise:
            cols = torch.randperm(d, generator=g)[:n_noise]
            uniform = torch.rand(len(z), n_noise, generator=g) * 2 - 1
            x[:, cols] = uniform if self._u() < 0.5 else torch.randn(len(z), n_noise, generator=g)
        if self._u() < 1 / 3:
            cols = torch.randperm(d, generator=g)[: self._int(1, d)]
            for c in cols.tolist():
                levels = self._int(2, 5)
                edges = torch.quantile(x[:, c], torch.rand(levels - 1, generator=g).sort().values)
                x[:, c] = torch.bucketize(x[:, c].contiguous(), edges).to(x.dtype)
        return x

    def _missing(self, x: Tensor) -> Tensor:
        """``x`` with a random MCAR share of its cells set to NaN (every row keeps one)."""
        g = self._generator
        if self.max_missing <= 0 or self._u() >= self.missing_prob:
            return x
        rate = self._u(0.0, self.max_missing)
        drop = torch.rand(x.shape, generator=g) < rate
        keep = torch.randint(0, x.shape[1], (len(x),), generator=g)
        drop[torch.arange(len(x)), keep] = False
        return x.masked_fill(drop, float("nan"))
