"""Contrastive embeddings, SimCLR-style (Chen, Kornblith, Norouzi & Hinton, "A simple framework
for contrastive learning of visual representations", ICML 2020).

Each step takes a mini-batch of ``N`` unlabeled examples, makes two random augmentations of
each (:class:`~metaunsup.data.augment.Augment`), encodes all ``2N`` views, maps them through a small
projection head and minimises the NT-Xent loss: each view must pick out its partner among the
other ``2N - 1`` views by cosine similarity at temperature ``tau``. The projection head is
thrown away afterwards; the encoder's features are the embedding (as in the paper).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from metaunsup._validation import check_int
from metaunsup.data.augment import Augment
from metaunsup.data.unlabeled import as_unlabeled
from metaunsup.embed._common import (
    BatchStream,
    Source,
    batch_of,
    check_fit_args,
    resolve_device,
    seeded_init,
    train_loop,
)
from metaunsup.embed.networks import ConvEncoder, Encoder, MLPEncoder, choose_arch
from metaunsup.errors import ConfigError

__all__ = ["fit_contrastive", "nt_xent_loss"]


def nt_xent_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """Normalised temperature-scaled cross-entropy of two batches of paired views.

    ``z1``, ``z2``: ``[N, p]`` projections, row ``i`` of each from the same example. With
    ``z`` the ``2N`` L2-normalised rows and ``s_ij = z_i·z_j / temperature``, the loss is the
    mean over all ``2N`` views of ``-log(exp(s_i,partner) / sum_{j != i} exp(s_ij))``.
    It is ``log(2N - 1)`` when all views are alike and falls as partners get closer than
    strangers.
    """
    if z1.shape != z2.shape or z1.dim() != 2 or z1.shape[0] < 2:
        raise ConfigError(
            f"nt_xent_loss needs two [N, p] batches, N >= 2; got {z1.shape}, {z2.shape}"
        )
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = (z @ z.T) / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, partner)


def fit_contrastive(
    source: Source,
    *,
    dim: int = 64,
    proj_dim: int = 64,
    temperature: float = 0.5,
    augment: Augment | None = None,
    steps: int = 2000,
    batch_size: int = 256,
    lr: float = 1e-3,
    seed: int = 0,
    arch: str = "auto",
    width: int = 64,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> Encoder:
    """Train an encoder by SimCLR's contrastive objective on unlabeled examples.

    Parameters
    ----------
    source:
        An :class:`~metaunsup.data.unlabeled.UnlabeledView` (or a dataset or tensor, viewed as
        one: labels are never read).
    dim:
        Embedding size (the encoder's output; the head maps it to ``proj_dim``).
    proj_dim:
        Size of the projection the loss compares (head: ``dim → dim → proj_dim``, ReLU between).
    temperature:
        ``tau`` of the NT-Xent loss (SimCLR used 0.1–1; 0.5 is its CIFAR-10 default).
    augment:
        How views are made; default ``Augment.for_shape(example_shape, strong=True)``. Each view
        is a fresh draw for every example.
    steps, batch_size, lr:
        Adam steps, examples per step (``2 * batch_size`` views) and learning rate. SimCLR
        used LARS and batches of thousands; Adam is the usual choice at this small scale.
    seed:
        Seeds the weights, the batches and the augmentations; same seed, same encoder.
    arch, width:
        ``"conv"`` for images / ``"mlp"`` / ``"auto"``; conv channels (MLP hidden ``4*width``).
    device:
        Where to train (default CPU); the augmentations run there too.
    progress:
        Show a progress bar.

    Returns
    -------
    Encoder
        The trained encoder (``eval()`` mode, ``encoder.losses`` per step), without the head.

    Example
    -------
    >>> enc = fit_contrastive(UnlabeledView(omniglot_bg), steps=3000, seed=0)
    >>> z = embed(enc, omniglot_bg.x)  # [19280, 64]
    """
    view = as_unlabeled(source)
    steps, batch_size, lr, seed = check_fit_args(steps, batch_size, lr, seed)
    dim = check_int("dim", dim, 1)
    proj_dim = check_int("proj_dim", proj_dim, 1)
    width = check_int("width", width, 1)
    temperature = float(temperature)
    if not temperature > 0:
        raise ConfigError(f"temperature must be positive, got {temperature}")
    if len(view) < 2:
        raise ConfigError("contrastive learning needs at least 2 examples")
    aug = Augment.for_shape(view.example_shape, strong=True) if augment is None else augment
    if not isinstance(aug, Augment):
        raise ConfigError(f"augment must be an Augment, got {type(aug).__name__}")
    if aug.is_identity:
        raise ConfigError("contrastive learning needs a non-identity augmentation")
    dev = resolve_device(device)
    kind = choose_arch(view.example_shape, arch)
    with seeded_init(seed):
        if kind == "conv":
            encoder: Encoder = ConvEncoder(view.example_shape, dim, width=width, depth=3)
        else:
            encoder = MLPEncoder(view.example_shape, dim, hidden=4 * width)
        head = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, proj_dim))
    encoder.to(dev).train()
    head.to(dev).train()
    generator = torch.Generator().manual_seed(seed)
    stream = BatchStream(len(view), batch_size, generator)

    def step_loss(_step: int) -> torch.Tensor:
        x = batch_of(view, stream.next(), dev)
        views = aug(torch.stack([x, x]), generator)  # [2, b, ...]: two independent draws
        z = head(encoder(views.flatten(0, 1)))
        z1, z2 = z.chunk(2)
        return nt_xent_loss(z1, z2, temperature)

    losses = train_loop(
        f"contrastive[{view.name}/{view.split}]",
        list(encoder.parameters()) + list(head.parameters()),
        step_loss,
        steps,
        lr,
        progress,
    )
    encoder.eval()
    encoder.losses = losses
    return encoder
