r"""Diagonal-covariance Gaussian mixtures fitted by EM, batched over tasks and restarts.

The model of each task is :math:`p(x) = \sum_j \pi_j \mathcal N(x; \mu_j, \operatorname{diag}
\sigma_j^2)`, fitted by expectation-maximisation (Dempster, Laird & Rubin 1977) as scikit-learn's
``GaussianMixture(covariance_type="diag")`` does:

* E-step: log responsibilities :math:`\log r_{ij} = \log \pi_j + \log \mathcal N(x_i; \mu_j,
  \sigma_j^2) - \operatorname{logsumexp}_l(\cdot)`, computed in log space (stable for tiny
  variances);
* M-step: :math:`n_j = \sum_i r_{ij} + 10\epsilon`, :math:`\mu_j = \sum_i r_{ij} x_i / n_j`,
  :math:`\sigma_j^2 = \sum_i r_{ij} x_i^2 / n_j - \mu_j^2 + \text{reg\_covar}`,
  :math:`\pi_j = n_j / \sum_l n_l`;
* a restart stops when the mean log-likelihood per point changes by less than ``tol`` between
  two E-steps; each task keeps the restart with the highest final log-likelihood.

:func:`gmm` fits many tasks at once (no gradients; computed in ``float64`` like scikit-learn,
with both steps expanded into batched products over the restarts of a task).
:func:`gmm_e_step`, :func:`gmm_m_step` and :func:`gmm_em_steps` are the same steps written for
autograd in plain ``[B, n, k, d]`` arithmetic, for methods that differentiate through a few EM
steps; they are the EM of Meta-GMVAE (Lee, Lee & Hwang, ICLR 2021,
:mod:`metaunsup.learners.meta_gmvae`), whose options they carry: uniform weights, unit
variances, and labelled points with fixed responsibilities (semi-supervised EM).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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
from metaunsup.cluster.kmeans import (
    _assign,
    _augment,
    _chunk_size,
    _first_mark,
    _lloyd,
    _map_chunks,
    _n_local_trials,
    _plusplus,
)
from metaunsup.errors import ConfigError, DataError

__all__ = ["GMMResult", "gmm", "gmm_e_step", "gmm_em_steps", "gmm_m_step"]

_LOG_2PI = math.log(2.0 * math.pi)
_INITS = ("kmeans++", "kmeans")


@dataclass(frozen=True, eq=False)
class GMMResult:
    """The best restart of a diagonal Gaussian mixture for each task.

    Attributes
    ----------
    labels:
        ``int64 [B, n]`` most responsible component of each point.
    means, variances:
        ``[B, k, d]`` component means and diagonal variances (``reg_covar`` included).
    weights:
        ``[B, k]`` mixing proportions (sum to 1).
    log_likelihood:
        ``[B]`` mean log-likelihood per point under the returned parameters (what
        scikit-learn's ``GaussianMixture.score`` gives).
    responsibilities:
        ``[B, n, k]`` posterior probability of each component for each point.
    n_iter:
        ``int64 [B]`` EM iterations the kept restart ran.
    converged:
        ``bool [B]`` whether it stopped on ``tol`` rather than ``max_iter``.

    The task dimension ``B`` is absent when the input was one task ``[n, d]``.
    """

    labels: torch.Tensor
    means: torch.Tensor
    variances: torch.Tensor
    weights: torch.Tensor
    log_likelihood: torch.Tensor
    responsibilities: torch.Tensor
    n_iter: torch.Tensor
    converged: torch.Tensor


# ----------------------------------------------------------------------------------------------
# Batched fitting: tasks x restarts, parameters [b, R, k, d], points shared by a task's restarts.


def _m_step(
    resp: torch.Tensor, xs: torch.Tensor, reg_covar: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Parameters from responsibilities ``resp: [b, R, k, n]`` and ``xs: [b, n, 2d+1]``.

    ``xs`` holds ``[x, x², 1]`` for each point, so one batched product per task gives the
    weighted sums of ``x``, ``x²`` and the masses.
    Returns ``means [b, R, k, d]``, ``variances [b, R, k, d]``, ``weights [b, R, k]``.
    """
    b, R, k, n = resp.shape
    d = (xs.shape[2] - 1) // 2
    S = torch.bmm(resp.reshape(b, R * k, n), xs).view(b, R, k, 2 * d + 1)
    nk = S[..., 2 * d] + 10 * torch.finfo(resp.dtype).eps
    means = S[..., :d] / nk.unsqueeze(-1)
    variances = (S[..., d : 2 * d] / nk.unsqueeze(-1) - means * means).clamp_(min=0) + reg_covar
    return means, variances, nk / nk.sum(-1, keepdim=True)


def _e_step(
    xe: torch.Tensor, means: torch.Tensor, variances: torch.Tensor, weights: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log responsibilities ``[b, R, k, n]`` and per-point log-likelihoods ``[b, R, n]``.

    ``xe = [x²; x; 1]: [b, 2d+1, n]``. The Mahalanobis term is expanded as
    ``Σ x²/σ² - 2 Σ x μ/σ² + Σ μ²/σ²`` so that one batched product per task gives the weighted
    log-probabilities of all points under all components of all restarts (as scikit-learn
    computes it, in ``float64``).
    """
    b, R, k, d = means.shape
    prec = 1.0 / variances
    const = (
        (means * means * prec).sum(-1)
        + torch.log(variances).sum(-1)
        + d * _LOG_2PI
        - 2.0 * torch.log(weights)
    )
    P = torch.cat([prec, -2.0 * means * prec, const.unsqueeze(-1)], dim=-1)  # [b, R, k, 2d+1]
    wlp = torch.bmm(P.view(b, R * k, 2 * d + 1), xe).view(b, R, k, -1).mul_(-0.5)
    lse = torch.logsumexp(wlp, dim=2)  # [b, R, n]
    return wlp.sub_(lse.unsqueeze(2)), lse


def _init_resp(
    x: torch.Tensor, xsq: torch.Tensor, k: int, u: torch.Tensor, init: str
) -> torch.Tensor:
    """Hard initial responsibilities ``[b, R, k, n]``: nearest k-means++ seed, or k-means labels."""
    idx = _plusplus(x, xsq, k, u)
    centers = gather_rows(x, idx)  # [b, R, k, d]
    if init == "kmeans":
        tol = xsq.mean(1) * (1e-4 / x.shape[2])
        centers, _ = _lloyd(x, xsq, centers, tol, 300)
    _, onehot = _assign(_augment(x.transpose(1, 2)), centers)
    return _first_mark(onehot)


def _gmm_chunk(
    x: torch.Tensor,
    k: int,
    u: torch.Tensor,
    init: str,
    max_iter: int,
    tol: float,
    reg_covar: float,
) -> tuple[torch.Tensor, ...]:
    b, R = x.shape[0], u.shape[1]
    mean = x.mean(1, keepdim=True)
    xc = x - mean
    xsq = (xc * xc).sum(-1)
    one = torch.ones_like(xc[:, :, :1])
    xs = torch.cat([xc, xc * xc, one], dim=2)  # [b, n, 2d+1] for the M-step
    xe = torch.cat([xc * xc, xc, one], dim=2).transpose(1, 2)  # [b, 2d+1, n] for the E-step
    means, variances, weights = _m_step(_init_resp(xc, xsq, k, u, init), xs, reg_covar)

    out = [means.clone(), variances.clone(), weights.clone()]
    out_it = torch.zeros((b, R), dtype=torch.int64, device=x.device)
    out_conv = torch.zeros((b, R), dtype=torch.bool, device=x.device)
    ids = torch.arange(b, device=x.device)
    lb = torch.full((b, R), -math.inf, dtype=x.dtype, device=x.device)
    it = out_it.clone()
    done = out_conv.clone()
    for _ in range(max_iter):
        bw = done.shape[0]
        log_resp, lse = _e_step(xe, means, variances, weights)
        new_lb = lse.mean(-1)  # [bw, R]
        m2, v2, w2 = _m_step(log_resp.exp_(), xs, reg_covar)
        active = ~done
        a4 = active.view(bw, R, 1, 1)
        means = torch.where(a4, m2, means)
        variances = torch.where(a4, v2, variances)
        weights = torch.where(active.unsqueeze(-1), w2, weights)
        it += active
        done |= active & ((new_lb - lb).abs() < tol)
        lb = torch.where(active, new_lb, lb)
        task_done = done.all(1)
        n_left = int((~task_done).sum())
        if n_left == 0:
            break
        if n_left <= 0.5 * bw:
            fin = ids[task_done]
            out[0][fin], out[1][fin], out[2][fin] = (
                means[task_done],
                variances[task_done],
                weights[task_done],
            )
            out_it[fin], out_conv[fin] = it[task_done], done[task_done]
            keep = ~task_done
            ids, xs, xe = ids[keep], xs[keep], xe[keep]
            means, variances, weights = means[keep], variances[keep], weights[keep]
            lb, it, done = lb[keep], it[keep], done[keep]
    out[0][ids], out[1][ids], out[2][ids] = means, variances, weights
    out_it[ids], out_conv[ids] = it, done
    means, variances, weights = out

    xe = torch.cat([xc * xc, xc, one], dim=2).transpose(1, 2)
    log_resp, lse = _e_step(xe, means, variances, weights)
    ll = lse.mean(-1)  # [b, R]: log-likelihood of the final parameters
    best = ll.argmax(1)
    ar = torch.arange(b, device=x.device)
    lr = log_resp[ar, best]  # [b, k, n]
    return (
        lr.argmax(1),
        means[ar, best] + mean,
        variances[ar, best],
        weights[ar, best],
        ll[ar, best],
        lr.exp().transpose(1, 2),
        out_it[ar, best],
        out_conv[ar, best],
    )


def gmm(
    x: torch.Tensor,
    k: int,
    n_init: int = 1,
    max_iter: int = 100,
    tol: float = 1e-3,
    reg_covar: float = 1e-6,
    seed: SeedLike = 0,
    init: str = "kmeans++",
) -> GMMResult:
    """Fit a diagonal-covariance Gaussian mixture to each task by EM.

    Parameters
    ----------
    x:
        ``[B, n, d]`` points of ``B`` tasks, or ``[n, d]`` for one task.
    k:
        Number of components, ``1 <= k <= n``.
    n_init:
        Restarts per task; the one with the highest final log-likelihood is kept.
    max_iter:
        Most EM iterations per restart.
    tol:
        Stop a restart when its mean log-likelihood per point changes by less than ``tol``.
    reg_covar:
        Added to every variance (keeps components on a few or constant features proper).
    seed:
        An int or one int per task (see :func:`~metaunsup.cluster.task_seeds`).
    init:
        ``"kmeans++"``: each point responsible to its nearest k-means++ seed;
        ``"kmeans"``: to its k-means cluster (one k-means run per restart, scikit-learn's
        default). The first M-step turns these hard responsibilities into parameters.

    Returns
    -------
    GMMResult
        Computed in ``float64`` (as scikit-learn does) and returned in the dtype of ``x``.

    Reference: Dempster, Laird & Rubin, "Maximum likelihood from incomplete data via the EM
    algorithm", JRSS B 39(1), 1977.

    Example
    -------
    >>> x = torch.randn(4, 90, 2) + 5 * torch.arange(3.0).repeat_interleave(30)[None, :, None]
    >>> res = gmm(x, 3)
    >>> res.means.shape, res.responsibilities.shape
    (torch.Size([4, 3, 2]), torch.Size([4, 90, 3]))
    """
    xb, batched = check_points(x)
    B, n, d = xb.shape
    k = check_k(k, n)
    n_init = check_int("n_init", n_init, 1)
    max_iter = check_int("max_iter", max_iter, 1)
    tol = check_float("tol", tol, 0.0)
    reg_covar = check_float("reg_covar", reg_covar, 0.0)
    if init not in _INITS:
        raise ConfigError(f"init must be one of {', '.join(map(repr, _INITS))}, got {init!r}")
    seeds = resolve_seeds(seed, B)
    u = task_uniforms(seeds, (n_init, 1 + (k - 1) * _n_local_trials(k))).to(xb.device)
    x64 = xb.detach().to(torch.float64)
    chunk = min(B, 4 * _chunk_size(B, n * n_init * (k + 2 * d), xb.device))

    def run(s: int) -> tuple[torch.Tensor, ...]:
        with torch.no_grad():
            sl = slice(s, s + chunk)
            return _gmm_chunk(x64[sl], k, u[sl], init, max_iter, tol, reg_covar)

    parts = [
        torch.cat(t) for t in zip(*_map_chunks(run, range(0, B, chunk), xb.device), strict=True)
    ]
    return _result(parts, xb.dtype, batched)


def _result(parts: list[torch.Tensor], dtype: torch.dtype, batched: bool) -> GMMResult:
    """The :class:`GMMResult` of the chunks' concatenated outputs, in the input's ``dtype``
    (without the task dimension for one task)."""
    labels, means, variances, weights, ll, resp, n_iter, conv = parts
    fields = dict(
        labels=labels,
        means=means.to(dtype),
        variances=variances.to(dtype),
        weights=weights.to(dtype),
        log_likelihood=ll.to(dtype),
        responsibilities=resp.to(dtype),
        n_iter=n_iter,
        converged=conv,
    )
    if not batched:
        fields = {key: v[0] for key, v in fields.items()}
    return GMMResult(**fields)


# ----------------------------------------------------------------------------------------------
# Differentiable steps: plain [B, n, k, d] arithmetic, exact in float32 too.


def gmm_e_step(
    x: torch.Tensor, means: torch.Tensor, variances: torch.Tensor, weights: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log responsibilities and per-point log-likelihoods of a diagonal mixture, differentiably.

    ``x: [B, n, d]``, ``means, variances: [B, k, d]``, ``weights: [B, k]`` (positive, summing
    to 1). Returns ``(log_resp [B, n, k], log_prob [B, n])`` with
    ``log_prob_i = logsumexp_j(log π_j + log N(x_i; μ_j, σ_j²))``. Memory ``O(B n k d)``.
    """
    diff = x.unsqueeze(2) - means.unsqueeze(1)  # [B, n, k, d]
    maha = (diff * diff / variances.unsqueeze(1)).sum(-1)  # [B, n, k]
    d = x.shape[-1]
    log_norm = torch.log(variances).sum(-1) + d * _LOG_2PI  # [B, k]
    wlp = torch.log(weights).unsqueeze(1) - 0.5 * (maha + log_norm.unsqueeze(1))
    log_prob = torch.logsumexp(wlp, dim=-1)
    return wlp - log_prob.unsqueeze(-1), log_prob


def gmm_m_step(
    x: torch.Tensor,
    resp: torch.Tensor,
    reg_covar: float = 1e-6,
    *,
    uniform_weights: bool = False,
    unit_variance: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mixture parameters from points ``x`` ``[B, n, d]`` and responsibilities ``[B, n, k]``.

    ``n_j = Σ_i r_ij + 10ε``, ``μ_j = Σ_i r_ij x_i / n_j``, ``σ_j² = Σ_i r_ij (x_i − μ_j)² / n_j
    + reg_covar`` (the weighted mean of squared deviations: no cancellation, so it is safe in
    ``float32``) and ``π_j = n_j / Σ_l n_l``. ``unit_variance`` fixes every variance to 1 and
    ``uniform_weights`` every weight to ``1/k`` (e.g. the prior of Meta-GMVAE, Lee et al.,
    ICLR 2021). Returns ``means [B, k, d]``, ``variances [B, k, d]``, ``weights [B, k]``;
    differentiable in ``x`` and ``resp``.
    """
    nk = resp.sum(1) + 10 * torch.finfo(x.dtype).eps  # [B, k]
    means = torch.bmm(resp.transpose(1, 2), x) / nk.unsqueeze(-1)
    if unit_variance:
        variances = torch.ones_like(means)
    else:
        diff = x.unsqueeze(2) - means.unsqueeze(1)  # [B, n, k, d]
        variances = (resp.unsqueeze(-1) * diff * diff).sum(1) / nk.unsqueeze(-1) + reg_covar
    if uniform_weights:
        weights = torch.full_like(nk, 1.0 / nk.shape[1])
    else:
        weights = nk / nk.sum(-1, keepdim=True)
    return means, variances, weights


def gmm_em_steps(
    x: torch.Tensor,
    means: torch.Tensor,
    variances: torch.Tensor,
    weights: torch.Tensor,
    n_steps: int = 1,
    reg_covar: float = 1e-6,
    point_weights: torch.Tensor | None = None,
    *,
    labelled: tuple[torch.Tensor, torch.Tensor] | None = None,
    uniform_weights: bool = False,
    unit_variance: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n_steps`` EM iterations of a diagonal Gaussian mixture, differentiable end to end.

    ``x: [B, n, d]``; initial ``means, variances: [B, k, d]`` and ``weights: [B, k]``. Each
    iteration is :func:`gmm_e_step` on ``x`` then :func:`gmm_m_step` (with ``reg_covar``,
    ``uniform_weights``, ``unit_variance``). Options:

    * ``point_weights: [B, n]`` scale each point's responsibilities in the M-step (``0`` masks
      a point out);
    * ``labelled = (x_l [B, n_l, d], resp_l [B, n_l, k])``: points whose responsibilities are
      fixed (e.g. one-hot labels) join every M-step (semi-supervised EM).

    Returns the final ``(means, variances, weights)``; :func:`gmm_e_step` gives their
    responsibilities. Gradients flow to ``x``, the labelled points and the initial parameters.
    """
    n_steps = check_int("n_steps", n_steps, 0)
    reg_covar = check_float("reg_covar", reg_covar, 0.0)
    if x.dim() != 3 or means.dim() != 3 or variances.shape != means.shape:
        raise DataError(
            "gmm_em_steps expects x [B, n, d], means and variances [B, k, d], weights [B, k]"
        )
    if weights.shape != means.shape[:2] or means.shape[0] != x.shape[0]:
        raise DataError("weights must be [B, k] and the parameters must match the tasks of x")
    if labelled is not None and (
        labelled[0].shape[::2] != x.shape[::2]
        or labelled[1].shape != (*labelled[0].shape[:2], means.shape[1])
    ):
        raise DataError("labelled must be (x_l [B, n_l, d], resp_l [B, n_l, k]) matching x")
    for _ in range(n_steps):
        log_resp, _ = gmm_e_step(x, means, variances, weights)
        points, resp = x, log_resp.exp()
        if point_weights is not None:
            resp = resp * point_weights.unsqueeze(-1)
        if labelled is not None:
            points = torch.cat([labelled[0], x], 1)
            resp = torch.cat([labelled[1], resp], 1)
        means, variances, weights = gmm_m_step(
            points, resp, reg_covar, uniform_weights=uniform_weights, unit_variance=unit_variance
        )
    return means, variances, weights
