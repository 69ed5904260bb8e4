"""Meta-GMVAE: config, the unsupervised ELBO (labels never read), test-time EM, clustering."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Bernoulli, Normal

from metaunsup.checkpoint import read_checkpoint, save_checkpoint
from metaunsup.errors import ConfigError, DataError, LabelAccessError
from metaunsup.learners import LEARNERS, MetaGMVAE, build_learner
from metaunsup.learners.meta_gmvae import semi_supervised_em
from metaunsup.metrics import clustering_accuracy
from metaunsup.nets import MLP, Conv4
from metaunsup.tasks.batch import TaskBatch
from tests.helpers.learners import fewshot_labels, random_batch

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def mlp_learner(**kw) -> MetaGMVAE:
    torch.manual_seed(0)
    net = MLP(64, n_way=None, hidden=(8,))
    return MetaGMVAE(net, latent_dim=3, decoder_hidden=[8], n_samples=2, **kw)


def conv_learner(**kw) -> MetaGMVAE:
    torch.manual_seed(0)
    net = Conv4(1, None, hidden=4, image_size=8, norm="batch", groups=2, depth=2)
    return MetaGMVAE(net, latent_dim=3, decoder="deconv", decoder_hidden=[4, 4], **kw)


def batch(seed: int = 0, dtype: torch.dtype = torch.float32) -> TaskBatch:
    """2 tasks of 3 ways, 2 shots, 2 queries of 1×8×8 images in [0, 1]."""
    return random_batch(2, 3, 2, 2, dtype=dtype, seed=seed)


def gen(seed: int = 7) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


CENTRES = torch.tensor([[10.0, 10.0], [10.0, 40.0], [40.0, 10.0]], dtype=torch.float64)


def blobs(n_tasks: int, per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``float64 [B, 3*per_class, 2]`` points around (10, 10), (10, 40), (40, 10), noise 1."""
    y = torch.arange(3).repeat_interleave(per_class).expand(n_tasks, -1)
    x = CENTRES[y] + torch.randn(n_tasks, y.shape[1], 2, generator=gen(seed), dtype=torch.float64)
    return x, y.contiguous()


def identity_learner(**kw) -> MetaGMVAE:
    """A float64 learner whose latent mean is the (positive) 2-d input itself."""
    net = MLP(2, n_way=None, hidden=(2,))
    learner = MetaGMVAE(net, latent_dim=2, likelihood="gaussian", **kw).double()
    eye = torch.eye(2, dtype=torch.float64)
    with torch.no_grad():
        net.layers[0].linear.weight.copy_(eye)
        net.layers[0].linear.bias.zero_()
        learner.to_latent.weight.zero_()
        learner.to_latent.weight[:2].copy_(eye)
        learner.to_latent.bias.zero_()
    return learner


# ------------------------------------------------------------------ configuration


@pytest.mark.parametrize("make", [mlp_learner, conv_learner])
def test_config_round_trip_and_weights_reproduce_the_loss(make, tmp_path):
    learner = make(likelihood="gaussian", n_components=2, em_grad=True, seed=3)
    config = learner.config()
    assert LEARNERS["meta_gmvae"] is MetaGMVAE and config["name"] == "meta_gmvae"
    rebuilt = build_learner(json.loads(json.dumps(config)))
    assert type(rebuilt) is MetaGMVAE and rebuilt.config() == config
    learner.meta_loss(batch())  # advances the learner's own noise stream
    path = save_checkpoint(tmp_path / "m.safetensors", learner.state_dict(), {})
    rebuilt.load_state_dict(read_checkpoint(path)[0])
    b = batch(1)
    assert rebuilt.meta_loss(b)[1] == learner.meta_loss(b)[1]


def test_bad_configurations_raise_config_errors():
    with pytest.raises(ConfigError, match="without head"):
        MetaGMVAE(MLP(64, n_way=3, hidden=(8,)))
    with pytest.raises(ConfigError, match="deconv"):
        MetaGMVAE(MLP(64, n_way=None, hidden=(8,)), decoder="deconv")
    with pytest.raises(ConfigError, match="likelihood"):
        mlp_learner(likelihood="poisson")
    with pytest.raises(ConfigError, match="n_samples"):
        MetaGMVAE(MLP(4, None, (4,)), n_samples=0)
    with pytest.raises(ConfigError, match="unknown option"):
        build_learner({**mlp_learner().config(), "temperature": 2.0})
    with pytest.raises(ConfigError, match="components"):
        mlp_learner(n_components=100).meta_loss(batch())
    with pytest.raises(DataError, match="expected examples"):
        mlp_learner().meta_loss(random_batch(2, 3, 2, 2, example_shape=(5,)))


# ------------------------------------------------------------------ meta-training objective


@pytest.mark.parametrize(
    "make,kw",
    [
        (mlp_learner, {}),
        (mlp_learner, {"em_grad": True, "likelihood": "gaussian"}),
        (mlp_learner, {"prior_variance": "unit", "uniform_weights": True, "beta": 0.5}),
        (conv_learner, {"n_samples": 2}),
    ],
)
def test_meta_loss_is_finite_and_reaches_encoder_and_decoder(make, kw):
    learner = make(**kw)
    loss, metrics = learner.meta_loss(batch())
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert set(metrics) == {"loss", "recon", "kl"}
    assert metrics["loss"] == pytest.approx(metrics["recon"] + learner.beta * metrics["kl"])
    loss.backward()
    for name, p in learner.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    for part in (learner.net, learner.to_latent, learner.decoder):
        assert sum(float(p.grad.abs().sum()) for p in part.parameters()) > 0


def test_gradients_through_em_change_the_gradient_not_the_loss():
    b = batch(dtype=torch.float64)
    grads, losses = [], []
    for em_grad in (False, True):
        learner = mlp_learner(em_grad=em_grad).double()
        loss, _ = learner.meta_loss(b, generator=gen())
        loss.backward()
        losses.append(float(loss.detach()))
        grads.append(learner.to_latent.weight.grad.clone())
    assert losses[0] == pytest.approx(losses[1], rel=1e-12)
    assert not torch.allclose(grads[0], grads[1])


def test_noise_is_deterministic_per_seed_and_never_from_the_global_rng():
    b = batch()
    a, c = mlp_learner(), mlp_learner()
    torch.manual_seed(123)
    first = a.meta_loss(b)[1]["loss"]
    torch.manual_seed(456)  # the global RNG must not matter
    assert c.meta_loss(b)[1]["loss"] == first
    assert a.meta_loss(b)[1]["loss"] != first  # the learner's own stream advanced
    assert mlp_learner(seed=1).meta_loss(b)[1]["loss"] != first
    explicit = [mlp_learner().meta_loss(b, generator=gen(5))[1]["loss"] for _ in range(2)]
    assert explicit[0] == explicit[1]
    state = torch.get_rng_state()
    mlp_learner().meta_loss(b)
    assert torch.equal(torch.get_rng_state(), state)


class _NoLabels:
    """A task batch whose labels raise on access (duck-typed like TaskBatch)."""

    def __init__(self, b: TaskBatch) -> None:
        self.x, self.n_way, self.k_shot, self.n_query = b.x, b.n_way, b.k_shot, b.n_query

    def __getattr__(self, name: str):
        raise LabelAccessError(f"meta_loss read {name}")


def test_meta_loss_never_reads_labels():
    b = batch()
    reference = mlp_learner().meta_loss(b, generator=gen())[1]["loss"]
    garbage = TaskBatch(
        x=b.x,
        y=torch.randint(-50, 50, b.y.shape, generator=gen(1)),
        classes=-b.classes,
        indices=b.indices.flip(1),
        n_way=b.n_way,
        k_shot=b.k_shot,
        n_query=b.n_query,
    )
    assert mlp_learner().meta_loss(garbage, generator=gen())[1]["loss"] == reference
    guarded = _NoLabels(b)
    assert mlp_learner().meta_loss(guarded, generator=gen())[1]["loss"] == reference


@pytest.mark.parametrize("beta", [1.0, 0.3])
def test_one_component_elbo_is_the_gaussian_prior_vae_elbo_by_hand(beta):
    learner = mlp_learner(n_components=1, em_steps=2, beta=beta).double()
    b = batch(dtype=torch.float64)
    loss, _ = learner.meta_loss(b, generator=gen(11))

    x = b.x.flatten(2)  # [B, M, 64]
    B, M, _ = x.shape
    S, D = learner.n_samples, learner.latent_dim
    layer = learner.net.layers[0].linear
    h = F.relu(x @ layer.weight.T + layer.bias)
    mu, log_var = (h @ learner.to_latent.weight.T + learner.to_latent.bias).split(D, -1)
    std = torch.exp(0.5 * log_var).unsqueeze(2)
    eps = torch.randn(B, M, S, D, generator=gen(11), dtype=torch.float64)
    z = mu.unsqueeze(2) + std * eps
    log_q = Normal(mu.unsqueeze(2), std).log_prob(z).sum(-1)
    flat = z.reshape(B, 1, M * S, D)
    centre = flat.mean(2, keepdim=True)
    var = flat.var(2, unbiased=False, keepdim=True) + learner.reg_covar
    log_prior = Normal(centre, var.sqrt()).log_prob(z).sum(-1)
    log_px = (
        Bernoulli(logits=learner.decoder(z), validate_args=False).log_prob(x.unsqueeze(2)).sum(-1)
    )
    expected = -(log_px + beta * (log_prior - log_q)).mean()
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-10)


def test_a_few_adam_steps_reduce_the_loss_on_an_unlabeled_mixture():
    """Unlabeled 6-d tasks drawn from 3 blobs; held-out loss with fixed noise must drop."""
    g = gen(0)
    centres = 3.0 * torch.randn(3, 6, generator=g)

    def tasks(n_tasks: int) -> TaskBatch:
        which = torch.randint(0, 3, (n_tasks, 30), generator=g)
        x = centres[which] + 0.3 * torch.randn(n_tasks, 30, 6, generator=g)
        return TaskBatch(x, which, which[:, :3], which, n_way=3, k_shot=10)

    torch.manual_seed(0)
    learner = MetaGMVAE(
        MLP(6, None, (16,)), latent_dim=2, decoder_hidden=[16], likelihood="gaussian", n_samples=2
    )
    held_out = tasks(4)
    before = learner.meta_loss(held_out, generator=gen(1))[1]["loss"]
    opt = torch.optim.Adam(learner.parameters(), lr=0.02)
    for _ in range(25):
        loss, _ = learner.meta_loss(tasks(4))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = learner.meta_loss(held_out, generator=gen(1))[1]["loss"]
    assert after < before - 0.3 * abs(before)


# ------------------------------------------------------------------ few-shot and clustering


def test_semi_supervised_em_at_zero_steps_is_the_gaussian_classifier_by_hand():
    g = gen(3)
    zs = torch.randn(2, 6, 4, generator=g, dtype=torch.float64)
    zq = torch.randn(2, 5, 4, generator=g, dtype=torch.float64)
    ys = torch.tensor([0, 0, 1, 1, 2, 2]).expand(2, -1)
    fit = semi_supervised_em(zs, ys, zq, 3, 0, reg_covar=0.01)
    means = zs.view(2, 3, 2, 4).mean(2)
    var = torch.cat([zs, zq], 1).var(1, unbiased=False, keepdim=True) + 0.01
    logits = Normal(means.unsqueeze(1), var.sqrt().unsqueeze(1)).log_prob(zq.unsqueeze(2)).sum(-1)
    torch.testing.assert_close(fit.log_resp, logits.log_softmax(-1))


@pytest.mark.parametrize("steps", [0, 1, 10])
def test_semi_supervised_em_classifies_separated_clusters_perfectly(steps):
    z, y = blobs(3, 6, seed=0)  # per class: 1 support shot, 5 queries
    support = torch.arange(0, 18, 6)
    query = torch.tensor([i for i in range(18) if i % 6])
    fit = semi_supervised_em(z[:, support], y[:, support], z[:, query], 3, steps)
    assert torch.equal(fit.log_resp.argmax(-1), y[:, query])
    torch.testing.assert_close(fit.log_resp.logsumexp(-1), torch.zeros(3, 15, dtype=z.dtype))
    assert fit.means.shape == (3, 3, 2) and fit.weights.shape == (3, 3)


def test_fewshot_logits_through_an_identity_encoder_are_perfect():
    n_way, k_shot, n_query = 3, 2, 4
    y = fewshot_labels(2, n_way, k_shot, n_query)
    x = CENTRES[y] + torch.randn(*y.shape, 2, generator=gen(2), dtype=torch.float64)
    b = TaskBatch(x, y, torch.arange(3).expand(2, -1), y, n_way, k_shot, n_query)
    learner = identity_learner()
    logits = learner.fewshot_logits(b, steps=3)
    assert logits.shape == (2, n_way * n_query, n_way) and not logits.requires_grad
    assert torch.equal(logits.argmax(-1), b.query_y)
    state = learner.adapt(b.support_x, b.support_y, differentiable=True, n_way=n_way)
    out = learner.predict(state, b.query_x)
    F.cross_entropy(out.flatten(0, 1), b.query_y.flatten()).backward()
    assert learner.to_latent.weight.grad is not None


def test_cluster_recovers_well_separated_blobs():
    x, y = blobs(4, 10, seed=4)
    perm = torch.randperm(30, generator=gen(0))
    x, y = x[:, perm], y[:, perm]
    labels = identity_learner().cluster(x, 3, steps=5, seed=0)
    assert labels.shape == (4, 30) and labels.dtype == torch.int64
    assert (clustering_accuracy(y.numpy(), labels.numpy()) == 1.0).all()


def test_cluster_runs_on_images_and_reports_k_groups_at_most():
    labels = conv_learner().cluster(batch().x, 3, steps=2)
    assert labels.shape == (2, 12) and int(labels.max()) < 3 and int(labels.min()) >= 0
    assert math.isfinite(float(conv_learner().fewshot_logits(batch()).sum()))
