"""Batched k-means, soft k-means and Gaussian mixtures: correctness against scikit-learn and
against the direct formulas."""

from __future__ import annotations

import itertools
import math
import time
import warnings

import numpy as np
import pytest
import torch

from metaunsup.cluster import (
    balanced_soft_kmeans,
    gmm,
    gmm_e_step,
    gmm_em_steps,
    gmm_m_step,
    kmeans,
    kmeans_plusplus,
    soft_kmeans,
    task_seeds,
)
from metaunsup.cluster.soft_kmeans import (
    clustering_objective,
    log_softmax_clusters,
    relative_sqdist,
    softmax_clusters,
)
from metaunsup.errors import ConfigError, DataError, MetaUnsupError
from metaunsup.metrics import clustering_accuracy


def blobs(
    B: int, n_per: int, k: int, d: int, spread: float = 20.0, seed: int = 0, dtype=torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """``B`` tasks of ``k`` Gaussian blobs in a random order: ``x [B, n, d]``, ``y [B, n]``."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(B, k, d, generator=g, dtype=torch.float64) * spread
    y = torch.arange(k).repeat_interleave(n_per).expand(B, -1)
    perm = torch.argsort(torch.rand(B, k * n_per, generator=g), dim=1)
    y = torch.gather(y, 1, perm)
    x = torch.gather(centers, 1, y.unsqueeze(-1).expand(-1, -1, d))
    x = x + torch.randn(B, k * n_per, d, generator=g, dtype=torch.float64)
    return x.to(dtype), y


# ------------------------------------------------------------------------------------ k-means


def test_kmeans_recovers_separated_blobs() -> None:
    x, y = blobs(16, 30, 4, 5)
    res = kmeans(x, 4, n_init=5, seed=3)
    assert res.labels.shape == (16, 120) and res.labels.dtype == torch.int64
    assert res.centers.shape == (16, 4, 5) and res.centers.dtype == torch.float32
    assert res.inertia.shape == (16,) and res.n_iter.shape == (16,)
    np.testing.assert_array_equal(clustering_accuracy(y, res.labels), np.ones(16))


def test_kmeans_is_deterministic_and_seed_dependent() -> None:
    x = torch.rand(6, 50, 3)
    a, b = kmeans(x, 5, seed=7), kmeans(x, 5, seed=7)
    for field in ("labels", "centers", "inertia", "n_iter"):
        assert torch.equal(getattr(a, field), getattr(b, field))
    # another seed draws other k-means++ seeds
    assert not torch.equal(kmeans_plusplus(x, 5, seed=8)[1], kmeans_plusplus(x, 5, seed=7)[1])


def test_batched_equals_each_task_alone() -> None:
    """Task ``b`` of a batch run with ``seed=s`` is the task alone with ``task_seeds(s, B)[b]``."""
    x = torch.rand(12, 40, 4)
    res = kmeans(x, 6, n_init=4, seed=11)
    seeds = task_seeds(11, 12)
    assert seeds[0] == 11 and len(set(seeds)) == 12
    for b in range(12):
        alone = kmeans(x[b], 6, n_init=4, seed=seeds[b])
        assert alone.labels.shape == (40,) and alone.centers.shape == (6, 4)
        assert torch.equal(alone.labels, res.labels[b])
        torch.testing.assert_close(alone.centers, res.centers[b])
        torch.testing.assert_close(alone.inertia, res.inertia[b])
        assert int(alone.n_iter) == int(res.n_iter[b])
    # a prefix of the batch gets the same results; one int seed is the first task's seed
    head = kmeans(x[:5], 6, n_init=4, seed=11)
    assert torch.equal(head.labels, res.labels[:5])
    # explicit per-task seeds reproduce the batch
    assert torch.equal(kmeans(x, 6, n_init=4, seed=seeds).labels, res.labels)


def test_kmeans_results_do_not_depend_on_threads() -> None:
    x = torch.rand(40, 60, 8)  # several chunks
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = kmeans(x, 7, n_init=3)
        torch.set_num_threads(2)
        two = kmeans(x, 7, n_init=3)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one.labels, two.labels) and torch.equal(one.centers, two.centers)


def test_inertia_and_labels_match_the_centres() -> None:
    x = torch.randn(10, 80, 6) * torch.rand(10, 1, 6) * 4
    res = kmeans(x, 5)
    assigned = torch.gather(res.centers, 1, res.labels.unsqueeze(-1).expand(-1, -1, 6))
    inertia = ((x.double() - assigned.double()) ** 2).sum((1, 2))
    torch.testing.assert_close(res.inertia.double(), inertia, rtol=1e-5, atol=1e-5)
    dist = torch.cdist(x.double(), res.centers.double())
    assert torch.equal(dist.argmin(-1), res.labels)
    assert torch.all(res.n_iter >= 1)


def test_kmeans_float64_and_integer_inputs() -> None:
    x, y = blobs(3, 20, 3, 2, dtype=torch.float64)
    res = kmeans(x, 3, n_init=3)
    assert res.centers.dtype == torch.float64 and res.inertia.dtype == torch.float64
    np.testing.assert_array_equal(clustering_accuracy(y, res.labels), np.ones(3))
    xi = torch.tensor([[0, 0], [0, 1], [10, 10], [10, 11]])
    ri = kmeans(xi, 2, n_init=2)
    assert ri.centers.dtype == torch.float32
    assert ri.labels[0] == ri.labels[1] != ri.labels[2] == ri.labels[3]
    assert kmeans(x.numpy(), 3).labels.shape == (3, 60)  # numpy arrays are accepted


def test_kmeans_limits_k1_kn_and_duplicates() -> None:
    x = torch.randn(3, 20, 2)
    one = kmeans(x, 1)
    assert torch.all(one.labels == 0)
    torch.testing.assert_close(one.centers[:, 0], x.mean(1))
    full = kmeans(x, 20)
    torch.testing.assert_close(full.inertia, torch.zeros(3), atol=1e-5, rtol=0)
    assert all(len(set(row.tolist())) == 20 for row in full.labels)
    # fewer distinct points than clusters: no crash, exact fit
    dup = torch.zeros(2, 10, 3)
    dup[:, 5:] = 1.0
    res = kmeans(dup, 4)
    torch.testing.assert_close(res.inertia, torch.zeros(2))
    same = kmeans(torch.ones(10, 2), 3)
    assert float(same.inertia) == 0.0 and torch.all(same.labels == 0)


def test_lloyd_matches_sklearn_from_the_same_start() -> None:
    """Same initial centres: same labels, centres and iteration count as scikit-learn's Lloyd,
    including clusters that start empty (re-seeded from the farthest points) and tol=0."""
    from sklearn.cluster import KMeans

    g = torch.Generator().manual_seed(1)
    B, n, d, k = 60, 60, 3, 5
    x = torch.randn(B, n, d, generator=g, dtype=torch.float64) * 2
    x = x + torch.randint(0, 4, (B, n, 1), generator=g).double() * 2
    c0 = x[:, :k].clone()
    c0[:, -1] = 100.0  # empty from the start
    c0[: B // 2, -2] = -100.0  # two empty clusters in half of the tasks
    for tol in (1e-4, 0.0):
        res = kmeans(x, k, init=c0, n_init=1, tol=tol)
        for i in range(B):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                km = KMeans(k, init=c0[i].numpy(), n_init=1, tol=tol).fit(x[i].numpy())
            np.testing.assert_array_equal(res.labels[i].numpy(), km.labels_)
            np.testing.assert_allclose(res.centers[i].numpy(), km.cluster_centers_, atol=1e-10)
            assert int(res.n_iter[i]) == km.n_iter_
            assert float(res.inertia[i]) == pytest.approx(km.inertia_, rel=1e-10)


def _digits_tasks(n_tasks: int):
    from metaunsup.data import load, to_float
    from metaunsup.tasks import ClusteringTaskSampler

    batch = ClusteringTaskSampler(load("digits", "test"), n_way=10, k_shot=20, seed=0).sample(
        n_tasks
    )
    x = to_float(batch.x).reshape(n_tasks, batch.x.shape[1], -1)
    return x, batch.y


@pytest.mark.slow
def test_kmeans_agrees_with_sklearn_on_1000_digits_tasks() -> None:
    """Must-show: 1000 digits tasks of 10 classes × 20, KMeans(n_init=10, k-means++) and ours
    agree within 0.005 in mean accuracy and 0.5% in mean inertia."""
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    x, y = _digits_tasks(1000)
    assert x.shape == (1000, 200, 64)
    t0 = time.perf_counter()
    ours = kmeans(x, 10, n_init=10, max_iter=300, tol=1e-4, seed=0)
    t_ours = time.perf_counter() - t0
    xn = x.double().numpy()
    labels, inertia = [], []
    t0 = time.perf_counter()
    # one thread: scikit-learn cannot split 200 points, and idle OpenMP threads only spin
    with threadpool_limits(limits=1):
        for i in range(len(xn)):
            km = KMeans(10, init="k-means++", n_init=10, max_iter=300, tol=1e-4, random_state=i)
            km.fit(xn[i])
            labels.append(km.labels_)
            inertia.append(km.inertia_)
    t_sk = time.perf_counter() - t0
    acc_ours = clustering_accuracy(y, ours.labels).mean()
    acc_sk = clustering_accuracy(y, np.stack(labels)).mean()
    inertia_ours = float(ours.inertia.double().mean())
    inertia_sk = float(np.mean(inertia))
    msg = (
        f"accuracy ours {acc_ours:.4f} sklearn {acc_sk:.4f}; inertia ours {inertia_ours:.3f} "
        f"sklearn {inertia_sk:.3f}; time ours {t_ours:.2f}s sklearn {t_sk:.2f}s"
    )
    print(msg)
    assert abs(acc_ours - acc_sk) <= 0.005, msg
    assert abs(inertia_ours - inertia_sk) <= 0.005 * inertia_sk, msg


def test_kmeans_plusplus_picks_distinct_data_points() -> None:
    x = torch.randn(5, 30, 3)
    centers, idx = kmeans_plusplus(x, 6, seed=2)
    assert centers.shape == (5, 6, 3) and idx.shape == (5, 6)
    assert torch.equal(centers, torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, 3)))
    assert all(len(set(row.tolist())) == 6 for row in idx)
    _, i1 = kmeans_plusplus(x[0], 6, seed=2)
    assert torch.equal(i1, idx[0])
    # the greedy seeding spreads out: on blobs every blob gets a seed
    xb, yb = blobs(8, 25, 5, 4)
    _, ib = kmeans_plusplus(xb, 5)
    assert all(len(set(yb[b, ib[b]].tolist())) == 5 for b in range(8))


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"k": 0}, ConfigError),
        ({"k": 41}, ConfigError),
        ({"k": 2.0}, ConfigError),
        ({"k": True}, ConfigError),
        ({"k": 3, "n_init": 0}, ConfigError),
        ({"k": 3, "n_init": 1.5}, ConfigError),
        ({"k": 3, "max_iter": 0}, ConfigError),
        ({"k": 3, "tol": -1.0}, ConfigError),
        ({"k": 3, "tol": float("nan")}, ConfigError),
        ({"k": 3, "seed": -1}, ConfigError),
        ({"k": 3, "seed": [1, 2]}, ConfigError),
        ({"k": 3, "seed": "0"}, ConfigError),
        ({"k": 3, "init": "random"}, ConfigError),
        ({"k": 3, "init": torch.zeros(4, 3, 2)}, ConfigError),  # n_init must be 1
        ({"k": 3, "init": torch.zeros(4, 2, 2), "n_init": 1}, DataError),
        ({"k": 3, "init": torch.full((4, 3, 2), float("nan")), "n_init": 1}, DataError),
    ],
)
def test_kmeans_rejects_bad_parameters(kwargs: dict, error: type) -> None:
    x = torch.randn(4, 40, 2)
    with pytest.raises(error):
        kmeans(x, **kwargs)


def test_kmeans_rejects_bad_data() -> None:
    with pytest.raises(DataError, match="NaN or infinite"):
        kmeans(torch.tensor([[0.0, 1.0], [float("nan"), 0.0], [1.0, 1.0]]), 2)
    with pytest.raises(DataError, match="NaN or infinite"):
        kmeans(torch.tensor([[[0.0], [float("inf")]]]), 1)
    with pytest.raises(DataError, match="shape"):
        kmeans(torch.zeros(5), 2)
    with pytest.raises(DataError, match="shape"):
        kmeans(torch.zeros(2, 3, 4, 5), 2)
    with pytest.raises(DataError, match="empty"):
        kmeans(torch.zeros(2, 0, 3), 1)
    with pytest.raises(DataError):
        kmeans([[0.0, 1.0]], 1)
    with pytest.raises(MetaUnsupError):  # one base class for all of them
        kmeans(torch.zeros(3, 2), 4)


# --------------------------------------------------------------------------------- soft k-means


def test_soft_kmeans_gradcheck_float64() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 7, 2, generator=g, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(2, 3, 2, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.rand(2, 7, generator=g, dtype=torch.float64, requires_grad=True)

    def f(x, c0, w):
        res = soft_kmeans(x, c0, temperature=0.7, n_iter=3, weights=w)
        return res.responsibilities, res.centers

    assert torch.autograd.gradcheck(f, (x, c0, w))


def test_soft_kmeans_low_temperature_tends_to_hard_assignment() -> None:
    x, _ = blobs(4, 20, 3, 2, spread=2.0, dtype=torch.float64)
    hard = kmeans(x, 3, seed=1)
    d2 = torch.cdist(x, hard.centers) ** 2
    top2 = d2.topk(2, dim=-1, largest=False).values
    margin = float((top2[..., 1] - top2[..., 0]).min())  # smallest gap to a second centre
    onehot = torch.nn.functional.one_hot(hard.labels, 3).double()
    gaps = []
    for temperature in (10.0, 1.0, 0.1, margin / 40):
        res = soft_kmeans(x, hard.centers, temperature=temperature, n_iter=0)
        gaps.append(float((res.responsibilities - onehot).abs().max()))
    assert gaps == sorted(gaps, reverse=True) and gaps[0] > gaps[-1]
    assert gaps[-1] < 2 * math.exp(-40) * 3
    # a few updates at a low temperature are Lloyd steps: the k-means optimum stays put
    res = soft_kmeans(x, hard.centers, temperature=margin / 40, n_iter=5)
    torch.testing.assert_close(res.centers, hard.centers)
    assert torch.equal(res.labels, hard.labels)


def test_soft_kmeans_weights_mask_points_and_shapes() -> None:
    x = torch.randn(3, 12, 2)
    c0 = x[:, :2].clone()
    w = torch.ones(3, 12)
    w[:, 8:] = 0.0
    masked = soft_kmeans(x, c0, n_iter=4, weights=w)
    subset = soft_kmeans(x[:, :8], c0, n_iter=4)
    torch.testing.assert_close(masked.centers, subset.centers, rtol=1e-5, atol=1e-5)
    assert masked.responsibilities.shape == (3, 12, 2)
    torch.testing.assert_close(masked.responsibilities.sum(-1), torch.ones(3, 12))
    single = soft_kmeans(x[0], c0[0], n_iter=2)
    assert single.responsibilities.shape == (12, 2) and single.centers.shape == (2, 2)
    # k as an int: k-means++ seeds gathered from x, gradients still reach x
    xg = x.clone().requires_grad_()
    res = soft_kmeans(xg, 2, n_iter=2, seed=0)
    res.centers.sum().backward()
    assert xg.grad is not None and torch.isfinite(xg.grad).all()
    # the responsibilities are softmax(-||x - c||² / T) of the final centres
    c = res.centers.detach()
    direct = torch.softmax(-(x.unsqueeze(2) - c.unsqueeze(1)).pow(2).sum(-1) / 1.0, dim=-1)
    torch.testing.assert_close(direct, res.responsibilities.detach())


def test_soft_kmeans_rejects_bad_input() -> None:
    x = torch.randn(2, 10, 3)
    with pytest.raises(ConfigError):
        soft_kmeans(x, 2, temperature=0.0)
    with pytest.raises(ConfigError):
        soft_kmeans(x, 2, n_iter=-1)
    with pytest.raises(DataError):
        soft_kmeans(x, torch.zeros(2, 2, 4))
    with pytest.raises(DataError):
        soft_kmeans(x, 2, weights=torch.ones(2, 9))
    with pytest.raises(DataError):
        soft_kmeans(x, 2, weights=-torch.ones(2, 10))


def test_distance_and_softmax_kernels_equal_the_direct_formulas_with_gradients():
    g = torch.Generator().manual_seed(0)
    # points far from the origin relative to their spread: the expansion must not cancel
    z = (50.0 + torch.randn(3, 40, 6, generator=g, dtype=torch.float64)).requires_grad_()
    c = torch.cat([z[:, :4].detach(), 50.0 + torch.randn(3, 3, 6, generator=g).double()], 1)
    c.requires_grad_()
    scale = torch.rand(3, generator=g, dtype=torch.float64) + 0.5
    ours = relative_sqdist(z, c, scale)
    direct = (z.unsqueeze(2) - c.unsqueeze(1)).pow(2).sum(-1) / scale.view(-1, 1, 1)
    torch.testing.assert_close(ours, direct, rtol=1e-10, atol=1e-10)
    assert (ours >= 0).all()
    w = torch.randn(ours.shape, generator=g, dtype=torch.float64)
    grads = [torch.autograd.grad((d * w).sum(), (z, c)) for d in (ours, direct)]
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-8)
    # float32 at the same offset: accurate to the spread of the task, not to |z|^2
    z32, c32 = z.detach().float(), c.detach().float()
    err = (relative_sqdist(z32, c32, scale.float()).double() - direct.detach()).abs().max()
    assert err < 1e-3
    logits = torch.randn(4, 7, 10, generator=g, dtype=torch.float64, requires_grad=True)
    probe = torch.randn(4, 7, 10, generator=g, dtype=torch.float64)
    for mine, ref in ((softmax_clusters, torch.softmax), (log_softmax_clusters, torch.log_softmax)):
        a, b = mine(logits), ref(logits, dim=-1)
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(
            torch.autograd.grad((a * probe).sum(), logits)[0],
            torch.autograd.grad((b * probe).sum(), logits)[0],
        )


def test_balanced_soft_kmeans_without_balance_is_soft_kmeans_in_variance_units():
    g = torch.Generator().manual_seed(2)
    z = torch.randn(1, 30, 3, generator=g, dtype=torch.float64)
    ours = balanced_soft_kmeans(z, 4, temperature=0.2, balance=0.0, shrink=1.0, n_iter=6, seed=3)
    init, _ = kmeans_plusplus(z, 4, seed=3)
    scale = float((z - z.mean(1, keepdim=True)).pow(2).sum(-1).mean())
    ref = soft_kmeans(z, init, temperature=0.2 * scale, n_iter=6)
    torch.testing.assert_close(ours.responsibilities, ref.responsibilities)
    torch.testing.assert_close(ours.centers, ref.centers)
    # and both are the textbook iterations, written out
    c = init[0]
    for _ in range(6):
        r = torch.softmax(-torch.cdist(z[0], c).pow(2) / (0.2 * scale), dim=-1)
        c = (r.T @ z[0] + 1e-8 * c) / (r.sum(0) + 1e-8).unsqueeze(-1)
    torch.testing.assert_close(ours.centers[0], c)
    torch.testing.assert_close(
        ours.responsibilities[0], torch.softmax(-torch.cdist(z[0], c).pow(2) / (0.2 * scale), -1)
    )


def test_the_clustering_objective_decreases_over_iterations():
    g = torch.Generator().manual_seed(4)
    z = torch.randn(3, 40, 2, generator=g, dtype=torch.float64)
    z[:, :20] += 3.0
    values = [
        clustering_objective(z, balanced_soft_kmeans(z, 3, temperature=0.1, n_iter=t), 0.0)
        for t in range(6)
    ]
    for before, after in itertools.pairwise(values):
        assert bool((after <= before + 1e-12).all()), (before, after)


# ------------------------------------------------------------------------------------------ GMM


@pytest.mark.parametrize("init", ["kmeans++", "kmeans"])
def test_gmm_matches_sklearn_log_likelihood(init: str) -> None:
    from sklearn.mixture import GaussianMixture

    g = torch.Generator().manual_seed(0)
    B, n, d, k = 12, 150, 4, 3
    x, y = blobs(B, n // k, k, d, spread=6.0)
    x = x * torch.rand(B, 1, d, generator=g).add(0.3)  # unequal scales per feature
    res = gmm(x, k, n_init=2, init=init)
    assert res.means.shape == (B, k, d) and res.variances.shape == (B, k, d)
    assert res.weights.shape == (B, k) and res.responsibilities.shape == (B, n, k)
    torch.testing.assert_close(res.weights.sum(-1), torch.ones(B))
    torch.testing.assert_close(res.responsibilities.sum(-1), torch.ones(B, n))
    assert torch.all(res.variances > 0) and torch.all(res.converged)
    np.testing.assert_array_equal(clustering_accuracy(y, res.labels), np.ones(B))
    sk_init = "k-means++" if init == "kmeans++" else "kmeans"
    for i in range(B):
        xi = x[i].double().numpy()
        gm = GaussianMixture(k, covariance_type="diag", init_params=sk_init, random_state=i)
        gm.fit(xi)
        assert float(res.log_likelihood[i]) == pytest.approx(gm.score(xi), abs=1e-4)


def test_gmm_unbatched_float64_and_errors() -> None:
    x, _ = blobs(1, 30, 2, 3, dtype=torch.float64)
    res = gmm(x[0], 2, seed=4)
    assert res.means.shape == (2, 3) and res.means.dtype == torch.float64
    assert res.labels.shape == (60,) and res.log_likelihood.dim() == 0
    with pytest.raises(ConfigError):
        gmm(x, 2, init="random")
    with pytest.raises(ConfigError):
        gmm(x, 0)
    with pytest.raises(ConfigError):
        gmm(x, 2, reg_covar=-1.0)


def test_gmm_m_step_options_and_labelled_points_in_em() -> None:
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 20, 3, generator=g, dtype=torch.float64)
    resp = torch.softmax(torch.randn(2, 20, 4, generator=g, dtype=torch.float64), -1)
    means, variances, weights = gmm_m_step(x, resp, 0.01)
    nk = resp.sum(1)
    torch.testing.assert_close(means, resp.transpose(1, 2) @ x / nk.unsqueeze(-1))
    dev = (x.unsqueeze(2) - means.unsqueeze(1)).pow(2)  # [B, n, k, d]
    want = (resp.unsqueeze(-1) * dev).sum(1) / nk.unsqueeze(-1) + 0.01
    torch.testing.assert_close(variances, want)
    torch.testing.assert_close(weights, nk / 20)
    m2, v2, w2 = gmm_m_step(x, resp, 0.01, uniform_weights=True, unit_variance=True)
    assert torch.equal(m2, means) and torch.equal(v2, torch.ones_like(v2))
    assert torch.equal(w2, torch.full_like(w2, 0.25))
    # labelled points with their own E-step responsibilities: one step of EM on all points
    xl, xu = x[:, :8], x[:, 8:]
    rl = gmm_e_step(xl, means, variances, weights)[0].exp()
    semi = gmm_em_steps(xu, means, variances, weights, 1, 0.01, labelled=(xl, rl))
    full = gmm_em_steps(x, means, variances, weights, 1, 0.01)
    for a, b in zip(semi, full, strict=True):
        torch.testing.assert_close(a, b)
    # only labelled points in the M-step (the others weighted 0): the class means
    y = torch.arange(8).remainder(4).expand(2, -1)
    onehot = torch.nn.functional.one_hot(y, 4).double()
    mask = torch.zeros(2, 12, dtype=torch.float64)
    m3, _, w3 = gmm_em_steps(xu, means, variances, weights, 2, 0.01, mask, labelled=(xl, onehot))
    class_means = torch.stack([xl[:, y[0] == j].mean(1) for j in range(4)], 1)
    torch.testing.assert_close(m3, class_means)
    torch.testing.assert_close(w3, torch.full_like(w3, 0.25))
    with pytest.raises(DataError):
        gmm_em_steps(xu, means, variances, weights, labelled=(xl, onehot[:, :, :3]))


def test_gmm_em_steps_are_differentiable_and_monotone() -> None:
    x, _ = blobs(2, 15, 2, 2, spread=4.0, dtype=torch.float64)
    fit = gmm(x, 2)
    means, variances, weights = fit.means, fit.variances, fit.weights
    # the fitted parameters are (nearly) a fixed point of EM
    m2, v2, w2 = gmm_em_steps(x, means, variances, weights, n_steps=3)
    r2 = gmm_e_step(x, m2, v2, w2)[0].exp()
    torch.testing.assert_close(m2, means, atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(r2.sum(-1), torch.ones(2, 30, dtype=torch.float64))
    # EM never lowers the likelihood
    m = x[:, :2].clone()
    v = torch.ones_like(m)
    w = torch.full((2, 2), 0.5, dtype=torch.float64)
    lls = []
    for _ in range(5):
        lls.append(gmm_e_step(x, m, v, w)[1].mean(-1))
        m, v, w = gmm_em_steps(x, m, v, w, n_steps=1)
    lls = torch.stack(lls)
    assert torch.all(lls[1:] >= lls[:-1] - 1e-9)
    # the E-step agrees with the batched fit
    log_resp, log_prob = gmm_e_step(x, means, variances, weights)
    torch.testing.assert_close(log_prob.mean(-1), fit.log_likelihood)
    torch.testing.assert_close(log_resp.exp(), fit.responsibilities)

    xs = x[:, :6].clone().requires_grad_()
    m0 = x[:, :2].clone().requires_grad_()
    v0 = torch.ones(2, 2, 2, dtype=torch.float64, requires_grad=True)
    w0 = torch.full((2, 2), 0.5, dtype=torch.float64, requires_grad=True)

    def f(xs, m0, v0, w0):
        m, v, w = gmm_em_steps(xs, m0, v0, w0, n_steps=2)
        return m, v, w, gmm_e_step(xs, m, v, w)[0].exp()

    assert torch.autograd.gradcheck(f, (xs, m0, v0, w0))
