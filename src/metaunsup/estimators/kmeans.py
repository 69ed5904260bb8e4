"""``MetaKMeans``: meta-learned clustering behind the scikit-learn estimator interface.

The estimator embeds the examples with a meta-learned network and clusters the embedding with
k-means (:func:`~metaunsup.cluster.kmeans`: k-means++ seeding, ``n_init`` restarts, Lloyd). The
network comes from

* a trained checkpoint (``checkpoint="digits"``, ``"mnist"``, ``"omniglot-protonet"``,
  ``"omniglot-unsup"`` or a ``.safetensors`` path) of a clustering learner (Meta-K-means or
  Clustering-MAML, :mod:`metaunsup.learners`) or of Prototypical Networks, whose input shape
  the data must match; or
* with ``checkpoint=None``, meta-training on the data itself: pseudo-tasks cut from spectral
  partitions of the rows' neighbourhood graphs (or, on small data, k-means partitions of
  random feature subsets, STUNT-style;
  :mod:`metaunsup.estimators.self_train`), so it works on any table of numbers.

Shapes: ``X`` is ``[n, d]`` (a table or flattened images), ``[n, H, W]`` (grey images) or
``[n, C, H, W]``; ``transform`` returns the embedding ``[n, D]``; ``cluster_centers_`` are
``[k, D]`` in that embedding.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any

import numpy as np
import torch
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    ClusterMixin,
    TransformerMixin,
)
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_array, check_is_fitted

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data
except ImportError:  # pragma: no cover - older scikit-learn

    def validate_data(estimator: BaseEstimator, X: Any, **kwargs: Any) -> np.ndarray:
        return estimator._validate_data(X, **kwargs)


from metaunsup._validation import (
    check_bool,
    check_choice,
    check_float,
    check_int,
    check_positive,
)
from metaunsup.checkpoint import checkpoint_card, k_calibration
from metaunsup.cluster import kmeans, spectral_clustering
from metaunsup.cluster.choose_k import (
    KChoice,
    choose_k,
    choose_k_eigencount,
    choose_k_eigengap,
)
from metaunsup.data.arrays import check_value_range
from metaunsup.data.normalize import InputConvention, Normalization, plan_normalization
from metaunsup.errors import CheckpointError, ConfigError, DataError, DataWarning
from metaunsup.estimators.guard import (
    EMBEDDING,
    FEATURES,
    GuardDecision,
    decide,
    kmeans_agreement,
    partition_agreement,
    separated,
)
from metaunsup.estimators.missing import ALLOW_NAN, FilledFeatures, MissingCells
from metaunsup.estimators.scaling import SCALINGS, TableScaling, table_scaling
from metaunsup.estimators.table_input import TableInput, table_width
from metaunsup.learners.base import AdaptiveEmbedder, Embedder, MetaLearner
from metaunsup.learners.fit import fitted_shape

__all__ = ["MetaKMeans"]


def _has_batch_norm(module: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in module.modules())


_FLOATS = (np.float64, np.float32)

#: Most examples k-means is fitted on in the embedding: on more, its restarts run on a seeded
#: sample of this many and every example then goes to its nearest centre, in chunks
#: (:func:`nearest_centers`), so memory stays bounded on millions of rows.
KMEANS_FIT_ROWS = 100_000
#: Most examples ``assign="spectral"`` takes: its graph and eigenvectors are of all of them.
SPECTRAL_ROWS = 20_000
#: Most examples ``n_clusters="auto"`` looks at: the graph rules' neighbourhood graph (as
#: self-training's graphs) and the silhouette rule's k-means runs.
EIGENGAP_ROWS = 4000
SILHOUETTE_ROWS = 20_000
#: Examples per chunk of :func:`nearest_centers`.
ASSIGN_CHUNK = 65_536


def _bar(total: int, desc: str, enabled: bool) -> Any:
    """A tqdm progress bar on stderr (shown when ``enabled`` and stderr is a terminal)."""
    import sys

    from tqdm.auto import tqdm

    show = enabled and sys.stderr.isatty()
    return tqdm(total=total, desc=desc, file=sys.stderr, leave=False, disable=not show)


def nearest_centers(
    z: torch.Tensor, centers: torch.Tensor, progress: bool = False
) -> tuple[torch.Tensor, float]:
    """``(labels int64 [n], inertia)``: the nearest of ``centers`` ``[k, D]`` for each row of
    ``z`` ``[n, D]`` and the sum of squared distances to it, in chunks of 65,536 rows (at most
    ``[65536, k]`` distances at once). Exact differences, not the matrix-product form, so that
    ``predict`` on the training data gives back ``labels_`` for points almost as near to two
    centres."""
    labels = torch.empty(len(z), dtype=torch.int64)
    inertia = 0.0
    with _bar(len(z), "assigning to clusters", progress) as bar:
        for s in range(0, len(z), ASSIGN_CHUNK):
            d = torch.cdist(
                z[s : s + ASSIGN_CHUNK], centers, compute_mode="donot_use_mm_for_euclid_dist"
            )
            best, labels[s : s + ASSIGN_CHUNK] = d.min(1)
            inertia += float((best * best).sum())
            bar.update(len(d))
    return labels, inertia


class InputTypeError(DataError, TypeError):
    """Input of a type that cannot be read as numbers (also a ``TypeError``, as scikit-learn's
    conventions expect)."""


def fit_shape(x: np.ndarray, expected: tuple[int, ...] | None, source: str) -> np.ndarray:
    """``x`` ``[n, *s]`` reshaped to ``[n, *expected]``, or the :class:`DataError` of the one
    fit check (:func:`metaunsup.learners.fit.fitted_shape`) saying how to fix it."""
    if expected is None:
        return x
    alternative = "or cluster without a checkpoint (meta-training on the data itself)"
    shape = fitted_shape(tuple(x.shape[1:]), expected, source, alternative)
    return x.reshape(x.shape[0], *shape)


def _warn_duplicates(x: np.ndarray, k: int) -> None:
    """Warn (as scikit-learn's ``KMeans`` does) when ``x`` has fewer distinct rows than ``k``:
    the clusters beyond them can only be empty or split identical examples. The first 4096
    rows decide when they already hold ``k`` distinct ones (no sort of a large table)."""
    from sklearn.exceptions import ConvergenceWarning

    flat = x.reshape(len(x), -1)
    if len(np.unique(flat[:4096], axis=0)) >= k:
        return
    distinct = len(np.unique(flat, axis=0))
    if distinct < k:
        warnings.warn(
            f"only {distinct} distinct example(s) for n_clusters={k}: the extra clusters are "
            f"empty or split identical examples; use n_clusters <= {distinct}",
            ConvergenceWarning,
            stacklevel=3,
        )


#: Median intensity (in ``[0, 1]``) above which images count as light-background.
LIGHT_BACKGROUND = 0.5


def _warn_light_background(x: np.ndarray, scale: float, checkpoint: str) -> None:
    """Warn when images look dark-on-light: the checkpoints are trained ink-bright (a dark
    background and bright strokes, as MNIST, Omniglot and scikit-learn's digits), and the
    inverted images cluster far worse with them. The median of (at most) 200 images decides."""
    sample = x[: min(len(x), 200)]
    median = float(np.median(sample)) / scale
    if median > LIGHT_BACKGROUND:
        warnings.warn(
            f"the images look light-background (median intensity {median:.2f} of 1), but "
            f"checkpoint {checkpoint!r} was trained on bright strokes on a dark background: "
            "invert them (255 - x for 8-bit images), or pass input_normalize='auto'",
            DataWarning,
            stacklevel=4,
        )


def check_input(
    estimator: BaseEstimator, X: Any, reset: bool, allow_nan: bool = False
) -> np.ndarray:
    """``X`` as a finite float array ``[n, d]``, ``[n, H, W]`` or ``[n, C, H, W]`` for
    ``estimator``; sets (``reset``) or checks its ``n_features_in_`` (the values per example),
    raising :class:`~metaunsup.errors.DataError` (or :class:`InputTypeError`) otherwise.
    ``allow_nan``: NaN (missing cells) may pass; infinite values may not."""
    finite = ALLOW_NAN if allow_nan else {}
    try:
        ndim = getattr(X, "ndim", None)
        if ndim is None and isinstance(X, list | tuple):
            ndim = np.ndim(np.asarray(X, dtype=object)) if len(X) else 2
        if ndim is not None and ndim >= 3:
            x = check_array(X, allow_nd=True, dtype=_FLOATS, ensure_min_samples=1, **finite)
            if x.ndim > 4:
                raise DataError(
                    f"X has shape {x.shape}; expected [n, d], [n, H, W] or [n, C, H, W]"
                )
            _check_n_features(estimator, math.prod(x.shape[1:]), reset)
        else:
            x = validate_data(
                estimator, X, reset=reset, dtype=_FLOATS, ensure_min_samples=1, **finite
            )
    except DataError:
        raise
    except TypeError as err:
        raise InputTypeError(str(err)) from None
    except ValueError as err:
        raise DataError(str(err)) from None
    check_value_range(x, "X")
    return x


def _check_n_features(estimator: BaseEstimator, n_features: int, reset: bool) -> None:
    if reset:
        estimator.n_features_in_ = n_features
        if hasattr(estimator, "feature_names_in_"):
            del estimator.feature_names_in_
    elif n_features != estimator.n_features_in_:
        raise DataError(
            f"X has {n_features} features, but {type(estimator).__name__} is expecting "
            f"{estimator.n_features_in_} features as input"
        )


def _grey(x: np.ndarray) -> np.ndarray:
    """Grey images ``[n, H, W]`` from ``[n, H, W]``, ``[n, 1, H, W]`` or square ``[n, H*W]``,
    or a :class:`DataError` saying what ``input_normalize="auto"`` accepts."""
    if x.ndim == 4 and x.shape[1] == 1:
        return x[:, 0]
    if x.ndim == 3:
        return x
    side = math.isqrt(x.shape[1]) if x.ndim == 2 else 0
    if x.ndim == 2 and side * side == x.shape[1]:
        return x.reshape(len(x), side, side)
    raise DataError(
        f"input_normalize='auto' handles grey images ([n, H, W], [n, 1, H, W] or square "
        f"[n, H*W]), got shape {x.shape}; use input_normalize='off'"
    )


#: What ``input_normalize`` can be.
NORMALIZE = ("off", "auto")


#: Rules ``n_clusters="auto"`` can choose ``k`` by.
K_SELECTIONS = ("auto", "eigencount", "eigengap", "silhouette")
#: Values of ``assign``: how the embedding is partitioned.
ASSIGN = ("kmeans", "spectral")


class MetaKMeans(ClassNamePrefixFeaturesOutMixin, ClusterMixin, TransformerMixin, BaseEstimator):
    """K-means in an embedding meta-learned for clustering small unlabeled tasks.

    Parameters
    ----------
    n_clusters : int or "auto", default=8
        Number of clusters. ``"auto"`` picks ``k`` in ``2..max_clusters`` by ``k_selection``:
        in a checkpoint's embedding, or without a checkpoint on the scaled data (before
        meta-training, whose pseudo-tasks then have that many clusters).
    checkpoint : str, path or None, default=None
        A packaged model name (``"digits"``, ``"mnist"``, ``"omniglot-protonet"``,
        ``"omniglot-unsup"``) or a ``.safetensors`` checkpoint of a clustering learner
        (Meta-K-means, Clustering-MAML) or of Prototypical Networks (whose metric space is
        clustered). ``None``: meta-train on pseudo-tasks from ``X`` itself (works on any
        table; see :mod:`metaunsup.estimators.self_train`).
    adapt_steps : int or None, default=None
        Test-time adaptation steps of a Clustering-MAML checkpoint (gradient steps of its
        embedding on ``X``'s own clustering objective); ``None``: the checkpoint's own number.
        Ignored by learners that do not adapt their embedding (Meta-K-means).
    n_init : int, default=10
        k-means restarts in the embedding; the lowest inertia is kept.
    assign : {"kmeans", "spectral"}, default="kmeans"
        How the embedding is partitioned into ``k`` clusters: k-means, or spectral clustering
        of its 10-nearest-neighbour graph (cosine; von Luxburg 2007,
        :func:`~metaunsup.cluster.spectral_clustering`), which follows clusters that are
        chains of near neighbours rather than round blobs (the Omniglot alphabets in
        ``docs/results/choose_k_spectral.md``). With ``"spectral"``, ``cluster_centers_`` are
        the clusters' means in the embedding (``predict`` assigns to the nearest), and at
        most :data:`SPECTRAL_ROWS` examples are taken (its graph is of all of them).
    max_iter : int, default=300
        Most Lloyd iterations per restart.
    tol : float, default=1e-4
        Relative tolerance of k-means (scikit-learn's rule).
    meta_steps : int, default=300
        Meta-training steps when ``checkpoint=None`` (each one Adam step on 4 pseudo-tasks);
        ``0`` clusters in a random (untrained) embedding.
    max_clusters : int, default=15
        Largest ``k`` tried by ``n_clusters="auto"``.
    k_selection : {"auto", "eigencount", "eigengap", "silhouette"}, default="auto"
        How ``n_clusters="auto"`` chooses: the number of eigenvalues of the
        10-nearest-neighbour graph above the threshold calibrated for the checkpoint
        (``"eigencount"``, :func:`~metaunsup.cluster.choose_k.choose_k_eigencount`; the
        threshold is on the checkpoint's card), the largest eigengap of that graph
        (:func:`~metaunsup.cluster.choose_k.choose_k_eigengap`; by cosine similarity in an
        embedding, Euclidean distance on a table), or the highest mean silhouette of k-means
        partitions (:func:`~metaunsup.cluster.choose_k.choose_k`). ``"auto"``: the eigenvalue
        count where the checkpoint's card has a threshold (``omniglot-protonet``,
        ``omniglot-unsup``), else the eigengap in a checkpoint's embedding, and the silhouette
        on a table without one - the rules that erred least in each setting in
        ``docs/results/choose_k.md`` (the eigengap splits small round blobs of a few dozen
        points in two). ``k_choice_.reason`` names the rule. On large data on a seeded
        sample: 4000 examples for the graph, 20,000 for the silhouette's k-means.
    input_scale : float, "auto", "standard" or "global", default="auto"
        With a checkpoint, ``X`` is divided by this number before embedding. ``"auto"``: 255
        for ``uint8`` arrays, else the largest value of the training ``X`` when it exceeds 1
        (e.g. 16 for scikit-learn's digits, 255 for pixel intensities), else 1 — checkpoints
        are trained on values in ``[0, 1]``, ink bright. Without a checkpoint, how the table is
        scaled before self-training (:mod:`metaunsup.estimators.scaling`): ``"standard"``
        (each column by its own standard deviation), ``"global"`` (all by their overall
        spread), a number, or ``"auto"``: standardised when the columns' spreads are more than
        10 times apart (different units), else global (pixels).
    input_normalize : {"off", "auto"}, default="off"
        With a checkpoint, ``"auto"`` brings grey images to the input convention on its card
        (:mod:`metaunsup.data.normalize`): values rescaled to ``[0, 1]``, light backgrounds
        inverted, and for MNIST-framed checkpoints each image cropped to its ink, resized into
        the card's box and centred by mass - each step only when the images need it
        (``input_normalization_.steps`` says which were done). ``input_scale`` must then be
        ``"auto"``. Images of another size are accepted when the card's convention re-frames.
    guard : bool, default=True
        Check, without labels, that the learned embedding explains ``X`` at least as well as
        the features (the scaled table, or the standardised pixels with a checkpoint), and
        cluster the features instead when it does not
        (:mod:`metaunsup.estimators.guard`); ``guard_`` says what was used and why. Without a
        checkpoint, features whose k-means clusters are separated are clustered without
        self-training (:func:`~metaunsup.estimators.guard.separated`). With missing cells
        (taken natively) the features are the scaled table with each missing cell filled from
        its 5 nearest rows (``feature_filler_``).
    batch_size : int, default=2048
        Examples embedded at once. Networks with batch normalisation normalise each such batch
        with its own statistics (as in meta-training, where a task is a batch), so their
        embedding depends slightly on it; the default self-trained network does not.
    random_state : int, RandomState or None, default=None
        Seeds meta-training, k-means and the choice of ``k``.
    device : str, default="cpu"
        Where the network runs, e.g. ``"cuda"``. A network with batch normalisation (whose
        embedding depends on the batch anyway) runs in ``float32``; others run in ``float64``
        on the CPU, so that an example's embedding does not depend on the others it is
        embedded with. The embedding is taken to ``float64`` for k-means, ``transform`` and
        ``predict``.
    impute : {None, "simple", "knn", "iterative"}, default=None
        Missing cells (NaN) in ``X``: ``None`` takes them natively (without a checkpoint: a
        network that reads the observed-cell mask, pseudo-labels from distances over observed
        features); else scikit-learn's ``SimpleImputer``/``KNNImputer``/``IterativeImputer``
        fills them first (needed with a checkpoint). See :mod:`metaunsup.estimators.missing`.
    verbose : bool, default=False
        Show a progress bar with ETA over the meta-training steps (``checkpoint=None``) when
        stderr is a terminal.

    Large tables (millions of rows) keep memory bounded: examples are scaled, embedded and
    assigned to centres in chunks; the graphs of self-training and the choice of ``k`` use
    seeded samples; on more than 100,000 examples k-means' restarts run on a seeded sample of
    100,000 and every example then goes to its nearest centre. ``verbose`` shows bars for the
    long phases. ``benchmarks/bench_table_scale.py`` measures time and peak memory against n.

    Attributes
    ----------
    labels_ : ndarray of shape (n_samples,)
        Cluster of each training example (its nearest centre), ``0..n_clusters_-1``.
    cluster_centers_ : ndarray of shape (n_clusters_, embedding_dim_)
        Centres in the embedding.
    inertia_ : float
        Sum of squared distances of the embedded examples to their centres.
    n_iter_ : int
        Lloyd iterations of the kept k-means restart.
    n_clusters_ : int
        The number of clusters used (chosen when ``n_clusters="auto"``).
    k_choice_ : KChoice or None
        With ``n_clusters="auto"``: the score of each ``k`` tried and the reason.
    input_normalization_ : Normalization or None
        With ``input_normalize="auto"``: the steps taken (``.steps``, in words).
    guard_ : GuardDecision or None
        With ``guard=True``: which representation was clustered (``guard_.use``:
        ``"embedding"`` or ``"features"``), the two scores and ``guard_.reason``.
    representation_ : str
        ``"embedding"`` or ``"features"``: what ``transform`` returns and the centres live in.
    scaling_ : TableScaling or None
        Without a checkpoint: how the table was scaled (``scaling_.how``, ``scaling_.reason``).
    feature_filler_ : FilledFeatures or None
        With missing cells taken natively and the guard on: how the scaled features the guard
        scored had their missing cells filled; when it fell back to the features, ``predict``
        and ``transform`` fill new rows' missing cells the same way
        (:class:`~metaunsup.estimators.missing.FilledFeatures`).
    embedding_dim_ : int
        ``D``, the dimension of the clustered representation.
    learner_ : MetaKMeansLearner or ClusterMAML
        The network and learned clustering settings (a ``torch.nn.Module``).
    training_ : dict or None
        Without a checkpoint: meta-training steps, seconds, task shape and final loss.
    n_features_in_ : int
        Values per example seen in ``fit`` (``H*W`` for images).

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> X, _ = load_digits(return_X_y=True)
    >>> model = MetaKMeans(n_clusters=10, meta_steps=20, random_state=0).fit(X[:300])
    >>> model.labels_.shape, model.cluster_centers_.shape
    ((300,), (10, 64))
    """

    learner_: MetaLearner
    adapted_params_: dict[str, torch.Tensor] | None
    training_: dict[str, Any] | None

    def __init__(
        self,
        n_clusters: int | str = 8,
        *,
        checkpoint: str | None = None,
        adapt_steps: int | None = None,
        n_init: int = 10,
        assign: str = "kmeans",
        max_iter: int = 300,
        tol: float = 1e-4,
        meta_steps: int = 300,
        max_clusters: int = 15,
        k_selection: str = "auto",
        input_scale: float | str = "auto",
        input_normalize: str = "off",
        guard: bool = True,
        batch_size: int = 2048,
        random_state: int | np.random.RandomState | None = None,
        device: str = "cpu",
        impute: str | None = None,
        verbose: bool = False,
    ) -> None:
        self.n_clusters = n_clusters
        self.checkpoint = checkpoint
        self.adapt_steps = adapt_steps
        self.n_init = n_init
        self.assign = assign
        self.max_iter = max_iter
        self.tol = tol
        self.meta_steps = meta_steps
        self.max_clusters = max_clusters
        self.k_selection = k_selection
        self.input_scale = input_scale
        self.input_normalize = input_normalize
        self.guard = guard
        self.batch_size = batch_size
        self.random_state = random_state
        self.device = device
        self.impute = impute
        self.verbose = verbose

    # ------------------------------------------------------------------ scikit-learn API
    def fit(self, X: Any, y: Any = None) -> MetaKMeans:
        """Embed ``X`` and cluster it; ``y`` is ignored.

        Raises :class:`~metaunsup.errors.DataError` (a ``ValueError``) for unusable data and
        :class:`~metaunsup.errors.ConfigError` for bad parameters, each saying how to fix it.
        """
        self._check_params()
        uint8 = str(getattr(X, "dtype", "")) in ("uint8", "torch.uint8")
        x = self._check_input(X, reset=True)
        rng = check_random_state(self.random_state)
        seed = int(rng.randint(np.iinfo(np.int32).max))
        self.missing_ = MissingCells(self.impute, seed)
        tables = self.checkpoint is not None and table_width(self.checkpoint) is not None
        x = self.missing_.fit(x, native_ok=self.checkpoint is None or tables)
        if len(x) < 2:
            raise DataError(f"got 1 sample (shape {x.shape}); clustering needs at least 2 examples")
        k = self.n_clusters
        if isinstance(k, int) and k > len(x):
            raise ConfigError(
                f"n_clusters={k} but only {len(x)} examples; use n_clusters <= {len(x)}"
            )
        self.k_choice_: KChoice | None = None
        self.guard_: GuardDecision | None = None
        self.representation_ = EMBEDDING
        self.scaling_: TableScaling | None = None
        self.feature_filler_: FilledFeatures | None = None
        self.input_normalization_: Normalization | None = None
        self.table_input_: TableInput | None = None
        if self.checkpoint is not None:
            self._fit_checkpoint(x, uint8, seed)
        else:
            self._fit_self_trained(x, seed)
        z = self._embed(x)
        self.embedding_dim_ = int(z.shape[1])
        if k == "auto":
            assert self.k_choice_ is not None  # set by _fit_checkpoint / _fit_self_trained
            k = self.k_choice_.k
        _warn_duplicates(x, int(k))
        self._cluster(z, int(k), seed)
        return self

    def _cluster(self, z: torch.Tensor, k: int, seed: int) -> None:
        """k-means of the embedding ``z`` ``[n, D]``: on all of it, or on more than
        :data:`KMEANS_FIT_ROWS` examples on a seeded sample of that many, every example then
        assigned to its nearest centre in chunks (or spectral clustering, ``assign``)."""
        if self.assign == "spectral":
            self._cluster_spectral(z, k, seed)
            return
        n = len(z)
        fit = z
        if n > KMEANS_FIT_ROWS:
            g = torch.Generator().manual_seed(seed)
            fit = z[torch.randperm(n, generator=g)[:KMEANS_FIT_ROWS]]
        result = kmeans(fit, k, n_init=self.n_init, max_iter=self.max_iter, tol=self.tol, seed=seed)
        self.n_clusters_ = k
        self.cluster_centers_ = result.centers.numpy()
        self.n_iter_ = int(result.n_iter)
        if fit is z:
            self.labels_ = result.labels.numpy().astype(np.int64)
            self.inertia_ = float(result.inertia)
        else:
            labels, self.inertia_ = nearest_centers(z, result.centers, bool(self.verbose))
            self.labels_ = labels.numpy()

    def _cluster_spectral(self, z: torch.Tensor, k: int, seed: int) -> None:
        """Spectral clustering of ``z`` ``[n, D]`` (10-nearest-neighbour cosine graph); the
        centres are the clusters' means, the inertia the squared distances to them."""
        if len(z) > SPECTRAL_ROWS:
            raise ConfigError(
                f"assign='spectral' builds a graph of all {len(z)} examples, more than "
                f"{SPECTRAL_ROWS}; use assign='kmeans' (on the command line --assign kmeans)"
            )
        labels = spectral_clustering(z, k, n_neighbors=10, metric="cosine", n_init=self.n_init,
                                     seed=seed)  # fmt: skip
        onehot = torch.nn.functional.one_hot(labels, k).to(z.dtype)
        centers = (onehot.T @ z) / onehot.sum(0).clamp_min(1.0)[:, None]
        self.n_clusters_ = k
        self.cluster_centers_ = centers.numpy()
        self.n_iter_ = 0
        self.labels_ = labels.numpy().astype(np.int64)
        self.inertia_ = float(((z - centers[labels]) ** 2).sum())

    def predict(self, X: Any) -> np.ndarray:
        """Nearest centre of each example of ``X``: ``int64 [n]``."""
        x = self._check_input(X, reset=False)
        z = self._embed(self.missing_.apply(x))
        centers = torch.from_numpy(self.cluster_centers_).to(z.dtype)
        return nearest_centers(z, centers)[0].numpy()

    def transform(self, X: Any) -> np.ndarray:
        """The embedding of ``X``, ``[n, embedding_dim_]``, in ``X``'s float dtype."""
        x = self._check_input(X, reset=False)
        x = self.missing_.apply(x)
        return self._embed(x).numpy().astype(x.dtype if x.dtype in _FLOATS else np.float64)

    @property
    def _n_features_out(self) -> int:
        return self.embedding_dim_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        tags.input_tags.allow_nan = True  # missing cells: natively or imputed (impute=)
        return tags

    def _more_tags(self) -> dict[str, Any]:  # scikit-learn < 1.6
        return {"preserves_dtype": [np.float64, np.float32], "allow_nan": True}

    # ------------------------------------------------------------------ fitting
    def _check_params(self) -> None:
        if self.n_clusters != "auto":
            try:
                check_int("n_clusters", self.n_clusters, 1)
            except ConfigError:
                raise ConfigError(
                    f"n_clusters must be an integer >= 1 or 'auto', got {self.n_clusters!r}"
                ) from None
        for name, low in (("n_init", 1), ("max_iter", 1), ("max_clusters", 2), ("batch_size", 1)):
            check_int(name, getattr(self, name), low)
        check_choice("k_selection", self.k_selection, K_SELECTIONS)
        check_choice("assign", self.assign, ASSIGN)
        check_int("meta_steps", self.meta_steps, 0)
        if self.adapt_steps is not None:
            check_int("adapt_steps", self.adapt_steps, 0)
        check_float("tol", self.tol, 0.0)
        check_bool("guard", self.guard)
        check_choice("input_normalize", self.input_normalize, NORMALIZE)
        if self.input_normalize == "auto" and self.checkpoint is None:
            raise ConfigError(
                "input_normalize='auto' brings images to a checkpoint's input convention; "
                "give a checkpoint, or use input_normalize='off' to meta-train on the data"
            )
        if self.input_normalize == "auto" and self.input_scale != "auto":
            raise ConfigError(
                "input_normalize='auto' sets the value range itself; leave input_scale='auto'"
            )
        if not isinstance(self.input_scale, str) or self.input_scale not in SCALINGS:
            try:
                check_positive("input_scale", self.input_scale)
            except ConfigError:
                raise ConfigError(
                    f"input_scale must be a positive number or one of {SCALINGS}, got "
                    f"{self.input_scale!r}"
                ) from None
        elif self.checkpoint is not None and self.input_scale != "auto":
            raise ConfigError(
                f"input_scale={self.input_scale!r} scales a table for self-training; with a "
                "checkpoint give a number (the pixels' largest value) or 'auto'"
            )
        self._device()

    def _device(self) -> torch.device:
        try:
            device = torch.device(self.device)
        except (RuntimeError, TypeError):
            raise ConfigError(f"unknown device {self.device!r}; use 'cpu' or 'cuda'") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError("device 'cuda' asked for, but no CUDA device is available")
        return device

    def _fit_checkpoint(self, x: np.ndarray, uint8: bool, seed: int) -> None:
        from metaunsup.learners import load_learner

        assert self.checkpoint is not None
        learner = load_learner(self.checkpoint)
        if not isinstance(learner, Embedder):
            raise CheckpointError(
                f"checkpoint {str(self.checkpoint)!r} holds a {learner.name!r} learner, which "
                "does not cluster or embed; use a checkpoint of a learner that does (meta_kmeans, "
                "cluster_maml, protonet, meta_gmvae)"
            )
        self.input_shape_ = tuple(learner.net.example_shape)
        width = table_width(self.checkpoint)
        if width is not None:  # a table model: standardised columns, absent ones missing
            self._fit_table_input(x, width)
        elif self.input_normalize == "auto":
            convention = InputConvention.from_card(
                checkpoint_card(self.checkpoint), self.input_shape_
            )
            self.input_normalization_ = plan_normalization(_grey(x), convention, uint8)
        if self.table_input_ is None:
            fit_shape(
                self._normalized(x), self.input_shape_, f"checkpoint {str(self.checkpoint)!r}"
            )
        if self.input_normalization_ is not None or self.table_input_ is not None:
            scale = 1.0
        elif self.input_scale != "auto":
            scale = float(self.input_scale)
        elif uint8:
            scale = 255.0
        else:
            scale = max(1.0, float(x.max()))
        if self.input_normalization_ is None and len(self.input_shape_) == 3:
            _warn_light_background(x, scale, str(self.checkpoint))
        self.offset_: float | np.ndarray = 0.0
        self.scale_: float | np.ndarray = scale
        self.training_ = None
        self._set_learner(learner)
        self.adapted_params_ = None
        k = self.n_clusters
        if k == "auto":  # chosen in the (not yet adapted) embedding of the checkpoint
            self.k_choice_ = self._choose_k(self._embed(x), seed)
            k = self.k_choice_.k
        self.adapted_params_ = self._adapt(x, int(k), seed)
        if self.guard:
            self._guard_checkpoint(x, int(k), seed)

    def _fit_table_input(self, x: np.ndarray, width: int) -> None:
        """A table model's input (:mod:`metaunsup.estimators.table_input`), fitted on ``x``."""
        rescaled = self.input_normalize == "auto" or self.input_scale != "auto"
        self.table_input_ = TableInput.for_checkpoint(
            x,
            width,
            str(self.checkpoint),
            "cluster it without a checkpoint (self-training on the table itself)",
            ["input_scale='auto'", "input_normalize='off'"] if rescaled else [],
        )

    def _guard_checkpoint(self, x: np.ndarray, k: int, seed: int) -> None:
        """Compare the agreement of k-means partitions of the embedding with that of the
        standardised pixels' or columns' (:mod:`metaunsup.estimators.guard`); fall back to
        them when theirs agree more. A table's missing cells are filled for the features
        (:meth:`_guard_features`)."""
        if self.table_input_ is not None:
            flat = x.reshape(len(x), -1).astype(np.float64)
            self.scaling_ = self.table_input_.scaling
        else:
            flat = self._net_input(x).reshape(len(x), -1).double().numpy()
            self.scaling_ = table_scaling(flat, "standard")
        features = self._guard_features(self.scaling_.apply(flat), seed)
        z = self._embed(x)
        self.guard_ = decide(
            kmeans_agreement(z, k, seed=seed),
            kmeans_agreement(features, k, seed=seed),
            "k-means agreement",
        )
        self.representation_ = self.guard_.use

    def _guard_features(self, scaled: np.ndarray, seed: int) -> torch.Tensor:
        """The features the guard scores, ``[m, d]``: ``scaled`` itself, or with
        missing cells its rows filled by a :class:`FilledFeatures` (kept as
        ``feature_filler_``; at most ``FILL_DONORS`` rows)."""
        if not np.isnan(scaled).any():
            return torch.from_numpy(np.ascontiguousarray(scaled))
        self.feature_filler_ = FilledFeatures(scaled, seed)
        return torch.from_numpy(self.feature_filler_.rows)

    def _fit_self_trained(self, x: np.ndarray, seed: int) -> None:
        from metaunsup.estimators.self_train import SelfTrainSettings, self_train

        flat = x.reshape(len(x), -1)
        self.input_shape_ = (flat.shape[1],)
        self.scaling_ = table_scaling(flat, self.input_scale)  # NaN cells stay missing
        self.offset_, self.scale_ = self.scaling_.offset, self.scaling_.scale
        scaled = self.scaling_.apply(flat)
        table = torch.from_numpy(scaled.astype(np.float32))
        k = self.n_clusters
        if k == "auto":  # chosen on the scaled data, so that the pseudo-tasks have that k too
            filled = np.nan_to_num(scaled) if self._k_rule() == "silhouette" else scaled
            self.k_choice_ = self._choose_k(torch.from_numpy(filled), seed, metric="euclidean")
            k = self.k_choice_.k
        guarded = self.guard and int(self.meta_steps) > 0
        features = self._guard_features(scaled, seed) if guarded else None
        shortcut = separated(features, int(k), seed=seed) if features is not None else None
        settings = SelfTrainSettings(steps=0 if shortcut is not None else int(self.meta_steps))

        def guard(partitions: torch.Tensor) -> GuardDecision:
            assert features is not None
            return decide(
                partition_agreement(partitions),
                kmeans_agreement(features, int(k), seed=seed),
                "pseudo-partition agreement",
            )

        result = self_train(
            table,
            int(k),
            settings,
            seed,
            progress=bool(self.verbose),
            guard=guard if guarded else None,
            device=self._device(),
        )
        self.guard_ = shortcut or result.decision
        if self.guard_ is not None:
            self.representation_ = self.guard_.use
        self.training_ = result.summary()
        self._set_learner(result.learner)
        self.adapted_params_ = None

    def _set_learner(self, learner: MetaLearner) -> None:
        device = self._device()
        learner = learner.to(device).eval()
        if device.type == "cpu" and not _has_batch_norm(learner):
            learner = learner.double()  # batch-independent embeddings (float32 GEMMs are not)
        self.learner_ = learner

    def _adapt(self, x: np.ndarray, k: int, seed: int) -> dict[str, torch.Tensor] | None:
        """The network's parameters for ``X``: an adaptive embedding (Clustering-MAML) adapts
        them to ``X`` (on one seeded sample of at most ``batch_size`` examples); ``None``: the
        learner's own."""
        learner = self.learner_
        if not isinstance(learner, AdaptiveEmbedder):
            return None
        g = torch.Generator().manual_seed(seed)
        take = torch.randperm(len(x), generator=g)[: self.batch_size]
        device = next(learner.parameters()).device
        task = self._net_input(x[take.numpy()]).unsqueeze(0).to(device)
        with torch.no_grad():
            k = min(k, task.shape[1])
            params = learner.adapted_params(task, k, self.adapt_steps, False, seed)
        return {name: value.detach().cpu() for name, value in params.items()}

    def _k_rule(self) -> str:
        """The rule ``k_selection`` stands for: ``"auto"`` is the eigenvalue count where the
        checkpoint's card has a calibrated threshold, else the eigengap in a checkpoint's
        embedding, and the silhouette on a table."""
        if self.k_selection == "auto":
            if self.checkpoint is None:
                return "silhouette"
            return "eigencount" if k_calibration(self.checkpoint) else "eigengap"
        return str(self.k_selection)

    def _choose_k(self, z: torch.Tensor, seed: int, metric: str = "cosine") -> KChoice:
        """``k`` for ``n_clusters="auto"``; ``metric``: the eigengap graph's neighbourhoods
        (cosine in a learned embedding, Euclidean on the user's own table). On large data on a
        seeded sample: at most :data:`EIGENGAP_ROWS` rows for the graph, at most
        :data:`SILHOUETTE_ROWS` for the k-means runs of the silhouette rule."""
        rule = self._k_rule()
        most = SILHOUETTE_ROWS if rule == "silhouette" else EIGENGAP_ROWS
        if len(z) > most:
            g = torch.Generator().manual_seed(seed)
            z = z[torch.randperm(len(z), generator=g)[:most]]
        k_max = int(self.max_clusters)
        if rule == "eigencount":
            card = k_calibration(self.checkpoint) if self.checkpoint is not None else None
            if card is None:
                raise ConfigError(
                    "k_selection='eigencount' needs a checkpoint whose card holds a calibrated "
                    "eigenvalue threshold (scripts/calibrate_k.py); use k_selection='eigengap'"
                )
            note = f"threshold calibrated on {card['calibrated_on']}"
            return choose_k_eigencount(
                z,
                2,
                k_max,
                threshold=card["threshold"],
                n_neighbors=int(card.get("n_neighbors", 10)),
                metric=metric,
                note=note,
            )
        if rule == "eigengap":
            choice = choose_k_eigengap(z, 2, k_max, metric=metric)
            if self.k_selection == "auto":
                note = "the checkpoint's card has no calibrated eigenvalue threshold"
                choice = dataclasses.replace(choice, note=note)
            return choice
        return choose_k(z, 2, k_max, seed=seed)

    # ------------------------------------------------------------------ embedding
    def _check_input(self, X: Any, reset: bool) -> np.ndarray:
        """``X`` as a finite float array ``[n, ...]``; sets or checks ``n_features_in_``."""
        if not reset:
            check_is_fitted(self, "labels_")
        return check_input(self, X, reset, allow_nan=True)

    def _net_input(self, x: np.ndarray) -> torch.Tensor:
        """Scaled examples in the network's input shape, ``[n, *input_shape_]``."""
        source = (
            f"checkpoint {str(self.checkpoint)!r}" if self.checkpoint is not None else "the model"
        )
        dtype = next(self.learner_.parameters()).dtype
        if self.table_input_ is not None:
            return torch.from_numpy(self.table_input_.apply(x.reshape(len(x), -1))).to(dtype)
        shaped = fit_shape(self._normalized(x), self.input_shape_, source)
        scaled = (shaped.reshape(len(x), -1) - self.offset_) / self.scale_
        t = torch.from_numpy(np.ascontiguousarray(scaled)).reshape(shaped.shape)
        return t.to(dtype)

    def _normalized(self, x: np.ndarray) -> np.ndarray:
        """``x`` brought to the checkpoint's convention (``input_normalize="auto"``), else
        ``x`` itself."""
        if self.input_normalization_ is None:
            return x
        return self.input_normalization_.apply(_grey(x))

    def _embed(self, x: np.ndarray) -> torch.Tensor:
        """The clustered representation ``float64 [n, D]`` (on the CPU) of the examples ``x``
        ``[n, ...]``: the network's embedding, or the scaled features when the guard fell back
        to them.

        The embedding goes in chunks of ``batch_size`` examples, each scaled, embedded and
        written into the one output, so memory beyond ``x`` and the output is a chunk's (not a
        scaled copy of all of ``x``)."""
        if self.representation_ == FEATURES:
            assert self.scaling_ is not None
            if self.checkpoint is None or self.table_input_ is not None:
                flat = x.reshape(len(x), -1).astype(np.float64)
            else:
                flat = self._net_input(x).reshape(len(x), -1).double().numpy()
            scaled = self.scaling_.apply(flat)
            if self.feature_filler_ is not None:  # missing cells: filled as the guard's were
                scaled = self.feature_filler_.fill(scaled)
            return torch.from_numpy(np.ascontiguousarray(scaled))
        device = next(self.learner_.parameters()).device
        params = None
        if self.adapted_params_ is not None:
            params = {k: v.to(device) for k, v in self.adapted_params_.items()}
        n = len(x)
        order = None
        if n > self.batch_size and self._batch_norm():
            # batches of a seeded shuffle, so that each is a sample of the data like a task
            order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
        learner = self.learner_
        assert isinstance(learner, Embedder)  # checked when the learner was loaded
        result: torch.Tensor | None = None
        with torch.no_grad(), _bar(n, "embedding", bool(self.verbose)) as bar:
            for start in range(0, n, self.batch_size):
                if order is None:
                    idx: Any = slice(start, start + self.batch_size)
                else:
                    idx = order[start : start + self.batch_size].numpy()
                chunk = self._net_input(x[idx]).to(device).unsqueeze(0)
                z = learner.embed(chunk, params)[0].cpu()
                if result is None:
                    result = torch.empty((n, z.shape[1]), dtype=torch.float64)
                result[idx if order is None else torch.from_numpy(idx)] = z.to(torch.float64)
                bar.update(len(z))
        assert result is not None  # n >= 1
        return result  # the network in float32 or float64, what follows in float64

    def _batch_norm(self) -> bool:
        return getattr(self.learner_.net, "norm", None) == "batch"
