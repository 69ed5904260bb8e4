r"""Meta-GMVAE: a VAE whose prior is a Gaussian mixture fitted to each task by EM.

Lee, Lee & Hwang, "Meta-GMVAE: Mixture of Gaussian VAE for Unsupervised Meta-Learning",
ICLR 2021 (https://openreview.net/forum?id=wS0UFjsNYjn).

**Model.** An encoder ``q_φ(z|x) = N(z; μ_φ(x), diag σ²_φ(x))`` (a :class:`FunctionalNet`
backbone without head, then one linear layer to ``[μ, log σ²]``), a decoder ``p_θ(x|z)``
(Bernoulli logits for images in ``[0, 1]``, or a Gaussian with a learned per-feature variance
for tables), and, per task, a prior that is a ``K``-component diagonal Gaussian mixture
``p_ψ(z) = Σ_k π_k N(z; m_k, diag v_k)`` whose parameters ``ψ`` are fitted to that task's own
latent samples.

**Meta-training** reads only the examples of a task batch (``batch.x``; never ``batch.y``):
each task is a set of ``M`` unlabeled examples. Per task, ``S`` reparameterised samples
``z_is = μ_i + σ_i ε_is`` are drawn for every example, ``ψ`` is initialised on the ``M·S``
samples by k-means++ seeding (means at the seeds, every variance the pooled per-dimension
variance of the samples, uniform weights; the authors' code starts from ``K`` random samples)
and refined by ``em_steps`` EM iterations (Dempster, Laird & Rubin 1977;
:func:`~metaunsup.cluster.gmm_em_steps`), and the loss is the negative ELBO with that prior,
averaged over tasks, examples and samples::

    loss = −(1/(B M S)) Σ_{b,i,s} [ log p_θ(x_i|z_is) + β (log p_ψ(z_is) − log q_φ(z_is|x_i)) ]

Gradients through EM: by default (``em_grad=False``) the fitted ``ψ`` is treated as a
constant of the step, as in the authors' released code, while ``log p_ψ(z)`` is still
differentiated with respect to the samples ``z``. With ``em_grad=True`` the EM solution is a
differentiable function of the samples (the k-means++ choice of seeds stays piecewise constant).
``K`` is ``n_components`` or else the batch's ``n_way`` (a size, not a label).
``prior_variance="unit"`` fixes every component's variance to 1 during meta-training (the
authors' code does this); ``"diag"`` (default) fits it.

**Few-shot classification** (semi-supervised EM, transductive over the query): support and
query are encoded together (means ``μ``; batch normalisation sees the whole task), component
``k`` starts at the mean of support class ``k`` with the pooled per-dimension variance of all
task latents, and ``test_em_steps`` EM iterations follow in which the support's
responsibilities are fixed to its labels and the query's are soft. Logits are the query's log
responsibilities. :meth:`MetaGMVAE.adapt` stores the support; :meth:`MetaGMVAE.predict` fits
and scores, so a query point's logits depend on the other query points given with it. (The
authors' code scores Monte-Carlo samples instead of means.)

**Clustering**: :meth:`MetaGMVAE.cluster` encodes a task's points, runs k-means (k-means++,
restarts) on the latent means, and refines with EM.

**Anomaly scores** (:meth:`MetaGMVAE.score`): the task's mixture fitted to a support of ``K``
normal examples alone is one diagonal Gaussian in the latent space — mean ``m`` the support's
mean latent mean, variance the spread of the support's latent means plus their mean posterior
variance ``σ²`` plus ``reg_covar`` (so that two examples still give a usable width) — and a
query's score is the part of its negative log density ``−log N(μ_q; m, diag v)`` that depends
on the query, ``½ Σ_d (μ_q − m)²_d / v_d`` (half its squared Mahalanobis distance; the rest,
``½ Σ_d log 2π v_d``, is the same for every query of the task, so the ranking within a task,
and with it AUROC and AUPRC, is the density's). Unlike a log density it is never negative and
grows with the distance, as the distances of the other one-class scorers do, so the same
meta-calibration turns it into p-values: a null table of pseudo-normal scores, each divided by
its support's largest leave-one-out score (:class:`~metaunsup.learners.one_class.NullTableMixin`,
:mod:`metaunsup.evaluation.calibration`), measured at the end of a run on one-class tasks of the
run's own pseudo-classes (:func:`metaunsup.training.calibrate.run_calibrator`). Support and
query are encoded together, as for few-shot tasks (with a batch-norm encoder the query's
statistics take part in the encoding).

Shapes: ``x`` ``[B, M, *example_shape]``; ``μ, log σ²`` ``[B, M, D]``; samples ``z``
``[B, M, S, D]``; mixture ``means, variances`` ``[B, K, D]``, ``weights`` ``[B, K]``;
decoder outputs ``[B, M, S, P]`` with ``P = prod(example_shape)``; per-sample ELBO terms
``[B, M, S]``; few-shot logits ``[B, m, N]``.

Randomness: the noise and the k-means++ seeds come from a ``torch.Generator`` passed to
:meth:`MetaGMVAE.meta_loss`, or else from the learner's own generator, seeded with ``seed``,
whose state is the buffer ``noise_state`` (so checkpoints and resumed runs continue the same
stream). The global RNG is never used.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metaunsup._validation import check_bool, check_int, check_positive
from metaunsup.cluster.gmm import gmm_e_step, gmm_em_steps, gmm_m_step
from metaunsup.cluster.kmeans import kmeans, kmeans_plusplus
from metaunsup.errors import ConfigError, DataError
from metaunsup.learners.base import (
    AdaptedState,
    AnomalyScorer,
    ClusteringLearner,
    Embedder,
    FewShotLearner,
    MetaLearner,
)
from metaunsup.learners.one_class import NullTableMixin
from metaunsup.nets import FunctionalNet, ParamDict
from metaunsup.tasks.batch import TaskBatch

__all__ = ["ELBOTerms", "MetaGMVAE", "MixtureFit", "semi_supervised_em"]

_LOG_2PI = math.log(2.0 * math.pi)
_DECODERS = ("mlp", "deconv")
_LIKELIHOODS = ("bernoulli", "gaussian")
_PRIOR_VARIANCES = ("diag", "unit")
_DEFAULT_HIDDEN = {"mlp": (256,), "deconv": (64, 64)}
#: Bounds of the Gaussian decoder's log-variance (keeps constant features from diverging).
_X_LOG_VAR_RANGE = (-7.0, 7.0)


# ----------------------------------------------------------------------------------------------
# Task mixtures: initial variances, semi-supervised EM (the EM steps are metaunsup.cluster.gmm).


def pooled_variances(z: Tensor, k: int, reg_covar: float) -> Tensor:
    """Per-task, per-dimension variance of ``z`` ``[B, n, D]`` plus ``reg_covar``, repeated
    for ``k`` components: ``[B, k, D]``."""
    return (z.var(1, unbiased=False, keepdim=True) + reg_covar).expand(-1, k, -1)


@dataclass(frozen=True, eq=False)
class MixtureFit:
    """A semi-supervised mixture: ``means, variances [B, N, D]``, ``weights [B, N]`` and the
    query's ``log_resp [B, m, N]`` under them."""

    means: Tensor
    variances: Tensor
    weights: Tensor
    log_resp: Tensor


def semi_supervised_em(
    support_z: Tensor,
    support_y: Tensor,
    query_z: Tensor,
    n_way: int,
    n_steps: int,
    reg_covar: float = 1e-3,
    uniform_weights: bool = False,
) -> MixtureFit:
    """Fit an ``n_way``-component diagonal mixture to labelled support and unlabelled query.

    ``support_z`` ``[B, n, D]`` with labels ``support_y`` ``int64 [B, n]`` in ``0..N−1``,
    ``query_z`` ``[B, m, D]``. Component ``k`` starts at the mean of support class ``k``, with
    the pooled per-dimension variance of support and query and uniform weights; then ``n_steps``
    EM iterations (:func:`~metaunsup.cluster.gmm_em_steps`) with the support's responsibilities
    fixed to one-hot labels and the query's soft. With ``n_steps = 0`` this is a Gaussian
    classifier around the class means.
    """
    onehot = F.one_hot(support_y, n_way).to(support_z.dtype)  # [B, n, N]
    counts = onehot.sum(1).clamp_min(1.0)  # [B, N]
    means = torch.bmm(onehot.transpose(1, 2), support_z) / counts.unsqueeze(-1)
    variances = pooled_variances(torch.cat([support_z, query_z], 1), n_way, reg_covar)
    weights = torch.full_like(counts, 1.0 / n_way)
    means, variances, weights = gmm_em_steps(
        query_z,
        means,
        variances,
        weights,
        n_steps,
        reg_covar,
        labelled=(support_z, onehot),
        uniform_weights=uniform_weights,
    )
    log_resp, _ = gmm_e_step(query_z, means, variances, weights)
    return MixtureFit(means=means, variances=variances, weights=weights, log_resp=log_resp)


# ----------------------------------------------------------------------------------------------
# Decoders: latent [N, D] -> flattened example [N, P] (logits or Gaussian means).


def _mlp_decoder(latent_dim: int, hidden: Sequence[int], out_features: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = latent_dim
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)


class _DeconvDecoder(nn.Module):
    """Linear map to ``[c_0, ⌈H/2^L⌉, ⌈W/2^L⌉]``, ``L = len(channels)`` transposed
    convolutions (kernel 4, stride 2: each doubles the size), a 3×3 convolution to ``C``
    channels, cropped to ``H×W``; output flattened to ``[N, C*H*W]``."""

    def __init__(self, latent_dim: int, shape: tuple[int, int, int], channels: Sequence[int]):
        super().__init__()
        self.shape = shape
        scale = 2 ** len(channels)
        self.start = (channels[0], -(-shape[1] // scale), -(-shape[2] // scale))
        self.fc = nn.Linear(latent_dim, math.prod(self.start))
        ups: list[nn.Module] = []
        cin = channels[0]
        for c in channels:
            ups += [nn.ConvTranspose2d(cin, c, 4, stride=2, padding=1), nn.ReLU()]
            cin = c
        self.ups = nn.Sequential(*ups)
        self.out = nn.Conv2d(cin, shape[0], 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        h = F.relu(self.fc(z)).view(-1, *self.start)
        h = self.out(self.ups(h))[:, :, : self.shape[1], : self.shape[2]]
        return h.flatten(1)


# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ELBOTerms:
    """Per-sample terms of the Meta-GMVAE ELBO of ``B`` tasks of ``M`` examples, ``S`` samples.

    Attributes
    ----------
    mean, log_var:
        ``[B, M, D]`` parameters of ``q(z|x)``.
    z:
        ``[B, M, S, D]`` reparameterised samples.
    log_px:
        ``[B, M, S]`` ``log p(x|z)`` (summed over the ``P`` features).
    log_prior:
        ``[B, M, S]`` ``log p_ψ(z)`` under the task's fitted mixture.
    log_q:
        ``[B, M, S]`` ``log q(z|x)``.
    """

    mean: Tensor
    log_var: Tensor
    z: Tensor
    log_px: Tensor
    log_prior: Tensor
    log_q: Tensor


class MetaGMVAE(
    NullTableMixin, MetaLearner, FewShotLearner, ClusteringLearner, Embedder, AnomalyScorer
):
    """Meta-GMVAE (Lee, Lee & Hwang, ICLR 2021); see the module docstring for the math.

    Parameters
    ----------
    net:
        Encoder backbone without head (``n_way=None``): :class:`~metaunsup.nets.Conv4` or
        :class:`~metaunsup.nets.MLP`; its input shape fixes the decoder's output.
    latent_dim:
        ``D``, the size of ``z``.
    decoder:
        ``"mlp"`` (any input) or ``"deconv"`` (images, with a Conv4 encoder).
    decoder_hidden:
        Hidden widths of the MLP decoder (default ``[256]``), or channels of the transposed
        convolutions of the deconv decoder, one per doubling (default ``[64, 64]``).
    likelihood:
        ``"bernoulli"`` (examples in ``[0, 1]``, logits decoded) or ``"gaussian"``.
    n_samples:
        ``S``, samples of ``z`` per example during meta-training (the authors' code uses 10).
    em_steps, test_em_steps:
        EM iterations of the meta-training prior, and of the semi-supervised test-time fit.
    n_components:
        ``K`` of the meta-training prior; ``None``: the batch's ``n_way``.
    beta:
        Weight of ``log p_ψ(z) − log q(z|x)`` in the ELBO (1: the ELBO itself).
    reg_covar:
        Added to every fitted variance.
    em_grad:
        Differentiate through the meta-training EM (default: the fitted prior is a constant).
    uniform_weights:
        Keep mixing weights at ``1/K`` instead of fitting them.
    prior_variance:
        ``"diag"`` (fitted) or ``"unit"`` component variances of the meta-training prior.
    seed:
        Seed of the learner's own noise generator.
    """

    name: ClassVar[str] = "meta_gmvae"
    fixed_way: ClassVar[bool] = False
    #: Checkpoints saved before Meta-GMVAE carried a null table load without one (not ready:
    #: conformal p-values only, as they were measured).
    optional_state: tuple[str, ...] = (
        "null_k", "null_scores", "null_spread", "null_prior", "null_stat",
    )  # fmt: skip
    #: The backbone is an encoder: run configs build it without a classification head.
    headless: ClassVar[bool] = True

    def __init__(
        self,
        net: FunctionalNet,
        latent_dim: int = 64,
        decoder: str = "mlp",
        decoder_hidden: Sequence[int] | None = None,
        likelihood: str = "bernoulli",
        n_samples: int = 10,
        em_steps: int = 5,
        test_em_steps: int = 5,
        n_components: int | None = None,
        beta: float = 1.0,
        reg_covar: float = 1e-3,
        em_grad: bool = False,
        uniform_weights: bool = False,
        prior_variance: str = "diag",
        seed: int = 0,
    ) -> None:
        super().__init__(net)
        if net.n_way is not None:
            raise ConfigError("meta_gmvae: build the encoder backbone without head (n_way=None)")
        for what, value, choices in (
            ("decoder", decoder, _DECODERS),
            ("likelihood", likelihood, _LIKELIHOODS),
            ("prior_variance", prior_variance, _PRIOR_VARIANCES),
        ):
            if value not in choices:
                raise ConfigError(f"meta_gmvae: {what} must be one of {choices}, got {value!r}")
        self.latent_dim = check_int("latent_dim", latent_dim, 1)
        self.n_samples = check_int("n_samples", n_samples, 1)
        self.em_steps = check_int("em_steps", em_steps, 0)
        self.test_em_steps = check_int("test_em_steps", test_em_steps, 0)
        if n_components is not None:
            check_int("n_components", n_components, 1)
        self.n_components = n_components
        self.beta = check_positive("beta", beta)
        self.reg_covar = check_positive("reg_covar", reg_covar)
        self.em_grad = check_bool("em_grad", em_grad)
        self.uniform_weights = check_bool("uniform_weights", uniform_weights)
        self.seed = check_int("seed", seed, 0)
        self.decoder_kind, self.likelihood = decoder, likelihood
        self.prior_variance = prior_variance
        hidden = _DEFAULT_HIDDEN[decoder] if decoder_hidden is None else decoder_hidden
        self.decoder_hidden = [check_int("decoder_hidden", h, 1) for h in hidden]
        self.example_shape = tuple(net.example_shape)
        self.to_latent = nn.Linear(net.feature_dim, 2 * self.latent_dim)
        self.decoder = self._build_decoder()
        if likelihood == "gaussian":
            self.x_log_var = nn.Parameter(torch.zeros(math.prod(self.example_shape)))
        state = torch.Generator().manual_seed(self.seed).get_state()
        self.noise_state: Tensor
        self.register_buffer("noise_state", state)
        self.init_null_table()

    def _build_decoder(self) -> nn.Module:
        out = math.prod(self.example_shape)
        if self.decoder_kind == "mlp":
            return _mlp_decoder(self.latent_dim, self.decoder_hidden, out)
        if len(self.example_shape) != 3 or not self.decoder_hidden:
            raise ConfigError("meta_gmvae: decoder='deconv' needs a conv4 encoder of images")
        return _DeconvDecoder(self.latent_dim, self.example_shape, self.decoder_hidden)

    def hparams(self) -> dict[str, Any]:
        return {
            "latent_dim": self.latent_dim,
            "decoder": self.decoder_kind,
            "decoder_hidden": list(self.decoder_hidden),
            "likelihood": self.likelihood,
            "n_samples": self.n_samples,
            "em_steps": self.em_steps,
            "test_em_steps": self.test_em_steps,
            "n_components": self.n_components,
            "beta": self.beta,
            "reg_covar": self.reg_covar,
            "em_grad": self.em_grad,
            "uniform_weights": self.uniform_weights,
            "prior_variance": self.prior_variance,
            "seed": self.seed,
        }

    # ------------------------------------------------------------------ encoder / decoder
    def encoder_params(self, differentiable: bool = True) -> ParamDict:
        """Backbone parameters plus ``to_latent.weight``/``to_latent.bias`` (detached copies
        unless ``differentiable``)."""
        params = self.meta_params(differentiable)
        for key, value in self.to_latent.named_parameters(prefix="to_latent"):
            params[key] = value if differentiable else value.detach()
        return params

    def encode(self, params: ParamDict, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(μ, log σ²)``, each ``[B, n, D]``, of ``x`` ``[B, n, *example_shape]``."""
        h = self.net.functional_features(params, x)
        out = F.linear(h, params["to_latent.weight"], params["to_latent.bias"])
        mean, log_var = out.chunk(2, dim=-1)
        return mean, log_var

    def decode(self, z: Tensor) -> Tensor:
        """Decoder outputs ``[..., P]`` (Bernoulli logits or Gaussian means) of ``z``
        ``[..., D]``."""
        out = self.decoder(z.reshape(-1, self.latent_dim))
        return out.view(*z.shape[:-1], out.shape[-1])

    def log_likelihood(self, x: Tensor, out: Tensor) -> Tensor:
        """``log p(x|z)`` ``[B, M, S]`` of ``x`` ``[B, M, *example_shape]`` given decoder
        outputs ``out`` ``[B, M, S, P]``, summed over the ``P`` features."""
        target = x.flatten(2).unsqueeze(2).expand_as(out)
        if self.likelihood == "bernoulli":
            return -F.binary_cross_entropy_with_logits(out, target, reduction="none").sum(-1)
        log_var = self.x_log_var.clamp(*_X_LOG_VAR_RANGE)
        sq = (target - out).pow(2) * torch.exp(-log_var)
        return -0.5 * (sq + log_var + _LOG_2PI).sum(-1)

    # ------------------------------------------------------------------ meta-training
    def meta_loss(
        self, batch: TaskBatch, generator: torch.Generator | None = None
    ) -> tuple[Tensor, dict[str, float]]:
        """Negative ELBO per example of the unlabeled tasks ``batch.x`` (labels never read).

        ``K`` = ``n_components`` or ``batch.n_way``. Noise from ``generator`` when given, else
        from the learner's own generator (whose state then advances). Metrics: ``loss``,
        ``recon`` (``−E log p(x|z)``) and ``kl`` (``E[log q(z|x) − log p_ψ(z)]``), per example.
        """
        k = self.n_components if self.n_components is not None else batch.n_way
        g = self._own_generator() if generator is None else generator
        terms = self.elbo_terms(batch.x, k, g)
        if generator is None:
            self.noise_state.copy_(g.get_state())
        recon = -terms.log_px.mean()
        kl = (terms.log_q - terms.log_prior).mean()
        loss = recon + self.beta * kl
        metrics = {"loss": float(loss.detach()), "recon": float(recon.detach())}
        return loss, {**metrics, "kl": float(kl.detach())}

    def elbo_terms(self, x: Tensor, k: int, generator: torch.Generator) -> ELBOTerms:
        """The per-sample ELBO terms of the tasks ``x`` ``[B, M, *example_shape]`` with a
        ``k``-component prior per task; noise and k-means++ seeds drawn from ``generator``
        (first the noise: ``[B, M, S, D]`` standard normals in the dtype of the encoder's
        output, on the generator's device; then one k-means++ seed per task)."""
        self._check_examples(x)
        B, M = x.shape[:2]
        S, D = self.n_samples, self.latent_dim
        if not 1 <= k <= M * S:
            raise ConfigError(f"meta_gmvae: {k} mixture components for {M * S} latent samples")
        mean, log_var = self.encode(self.encoder_params(True), x)
        shape = (B, M, S, D)
        eps = torch.randn(shape, generator=generator, device=generator.device, dtype=mean.dtype)
        eps = eps.to(mean.device)
        z = mean.unsqueeze(2) + torch.exp(0.5 * log_var).unsqueeze(2) * eps
        log_q = -0.5 * (eps * eps + log_var.unsqueeze(2) + _LOG_2PI).sum(-1)
        flat = z.reshape(B, M * S, D)
        means, variances, weights = self.fit_prior(flat, k, generator)
        log_prior = gmm_e_step(flat, means, variances, weights)[1].view(B, M, S)
        log_px = self.log_likelihood(x, self.decode(z))
        return ELBOTerms(mean, log_var, z, log_px, log_prior, log_q)

    def fit_prior(
        self, z: Tensor, k: int, generator: torch.Generator
    ) -> tuple[Tensor, Tensor, Tensor]:
        """The task mixtures of the samples ``z`` ``[B, n, D]``: k-means++ seeds (drawn with
        ``generator``) as means, pooled variances, uniform weights, then ``em_steps`` EM
        iterations. Returns ``means, variances [B, k, D]``, ``weights [B, k]``, detached
        unless ``em_grad``."""
        data = z if self.em_grad else z.detach()
        B, _, D = data.shape
        seeds = torch.randint(0, 2**62, (B,), generator=generator, device=generator.device)
        _, idx = kmeans_plusplus(data.detach(), k, seed=seeds.tolist())
        means = torch.gather(data, 1, idx.unsqueeze(-1).expand(-1, -1, D))
        unit = self.prior_variance == "unit"
        variances = torch.ones_like(means) if unit else pooled_variances(data, k, self.reg_covar)
        weights = torch.full((B, k), 1.0 / k, dtype=data.dtype, device=data.device)
        return gmm_em_steps(
            data,
            means,
            variances,
            weights,
            self.em_steps,
            self.reg_covar,
            uniform_weights=self.uniform_weights,
            unit_variance=unit,
        )

    # ------------------------------------------------------------------ few-shot
    def adapt(
        self,
        support_x: Tensor,
        support_y: Tensor,
        steps: int | None = None,
        *,
        differentiable: bool = False,
        n_way: int | None = None,
    ) -> AdaptedState:
        """Keep the support for :meth:`predict` (the EM needs the query too).

        ``steps`` (default ``test_em_steps``) is the number of semi-supervised EM iterations.
        ``extras``: ``support_x`` ``[B, n, ...]``, ``support_y`` ``[B, n]``, ``em_steps``
        (0-d ``int64``).
        """
        B = self.check_support(support_x, support_y)
        if n_way is None:
            n_way = int(support_y.max()) + 1
        steps = self.test_em_steps if steps is None else check_int("steps", steps, 0)
        extras = {
            "support_x": support_x,
            "support_y": support_y,
            "em_steps": torch.tensor(steps, dtype=torch.int64),
        }
        return AdaptedState(
            params=self.encoder_params(differentiable), n_tasks=B, n_way=n_way, extras=extras
        )

    def predict(self, state: AdaptedState, x: Tensor) -> Tensor:
        """Log responsibilities ``[B, m, N]`` of the query ``x`` ``[B, m, ...]`` under the
        semi-supervised mixture fitted to the support and this query (see
        :func:`semi_supervised_em`). Support and query are encoded together."""
        support_x, support_y = state.extras["support_x"], state.extras["support_y"]
        n = support_x.shape[1]
        mean, _ = self.encode(state.params, torch.cat([support_x, x.to(support_x.dtype)], 1))
        fit = semi_supervised_em(
            mean[:, :n],
            support_y,
            mean[:, n:],
            state.n_way,
            int(state.extras["em_steps"]),
            self.reg_covar,
            self.uniform_weights,
        )
        return fit.log_resp

    def fewshot_logits(self, batch: TaskBatch, steps: int | None = None) -> Tensor:
        """Query log-responsibilities ``[B, m, n_way]`` of the semi-supervised mixture fitted
        to the support and the query (``steps``: EM iterations; ``None``: ``test_em_steps``)."""
        return self.query_logits(batch, steps)

    def embed(self, x: Tensor, params: ParamDict | None = None) -> Tensor:
        """Latent means ``[B, n, latent_dim]`` of ``x`` ``[B, n, *example_shape]`` (the
        encoder's parameters: ``params``, default the meta-parameters, detached)."""
        mean, _ = self.encode(self.encoder_params(False) if params is None else params, x)
        return mean

    # ------------------------------------------------------------------ clustering
    def cluster(
        self, x: Tensor, k: int, *, seed: int = 0, steps: int | None = None, n_init: int = 10
    ) -> Tensor:
        """Cluster each task of ``x`` ``[B, n, *example_shape]`` into ``k`` groups:
        ``int64 [B, n]`` labels.

        The latent means ``[B, n, D]`` are clustered by k-means (k-means++ seeding, ``n_init``
        restarts, ``seed``); a diagonal mixture started from those clusters is refined by
        ``steps`` (default ``test_em_steps``) EM iterations, and each point takes its most
        responsible component. No gradients.
        """
        self._check_examples(x)
        em_steps = self.test_em_steps if steps is None else check_int("steps", steps, 0)
        with torch.no_grad():
            z = self.embed(x)
            labels = kmeans(z, k, n_init=n_init, seed=seed).labels
            resp = F.one_hot(labels, k).to(z.dtype)
            params = gmm_m_step(z, resp, self.reg_covar, uniform_weights=self.uniform_weights)
            params = gmm_em_steps(
                z, *params, em_steps, self.reg_covar, uniform_weights=self.uniform_weights
            )
            log_resp, _ = gmm_e_step(z, *params)
        return log_resp.argmax(-1)

    # ------------------------------------------------------------------ anomaly scores
    def score(self, support: Tensor, query: Tensor) -> Tensor:
        """Half the squared Mahalanobis distances ``[B, q]`` of the query's latent means to the
        Gaussian fitted to the normal ``support`` ``[B, K, ...]``: its negative log density
        less the part shared by every query of the task (higher = more anomalous; see the
        module docstring). No gradients."""
        self._check_examples(support)
        self._check_examples(query)
        if support.shape[0] != query.shape[0]:
            raise DataError(f"support {tuple(support.shape)} and query {tuple(query.shape)} "
                            "must hold the same tasks")  # fmt: skip
        k = support.shape[1]
        with torch.no_grad():
            x = torch.cat([support, query.to(support.dtype)], 1)
            mean, log_var = self.encode(self.encoder_params(False), x)
            ms, mq = mean[:, :k], mean[:, k:]
            centre = ms.mean(1, keepdim=True)
            spread = ms.var(1, unbiased=False, keepdim=True)
            var = spread + log_var[:, :k].exp().mean(1, keepdim=True) + self.reg_covar
            return 0.5 * ((mq - centre).pow(2) / var).sum(-1)

    # ------------------------------------------------------------------ helpers
    def _own_generator(self) -> torch.Generator:
        g = torch.Generator()
        g.set_state(self.noise_state.cpu())
        return g

    def _check_examples(self, x: Tensor) -> None:
        if x.dim() < 3 or math.prod(x.shape[2:]) != math.prod(self.example_shape):
            raise DataError(
                f"meta_gmvae: expected examples [B, n, *{self.example_shape}], got {tuple(x.shape)}"
            )
