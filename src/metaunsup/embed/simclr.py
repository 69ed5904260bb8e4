"""SimCLR: contrastive pre-training of a backbone on unlabeled examples (the one home of it).

Chen, Kornblith, Norouzi & Hinton, "A simple framework for contrastive learning of visual
representations", ICML 2020. Each step takes a mini-batch of ``b`` unlabeled examples, makes two
random augmentations of each (:class:`~metaunsup.data.augment.Augment`), encodes all ``2b``
views, maps them through a small projection head and minimises the NT-Xent loss: each view must
pick out its partner among the other ``2b - 1`` views by cosine similarity at temperature
``tau``. The projection head is thrown away afterwards; the backbone's features are the
embedding.

Why it is here: unsupervised meta-learning needs a first embedding of the unlabeled data from
which tasks are made (CACTUs clusters it). Training that embedding *in the meta-learner's own
backbone* gives two things at once: the pseudo-labels come from an augmentation-invariant
representation, and meta-training then starts from those weights instead of random ones.

This module holds the pieces — :func:`nt_xent_loss`, the objective :class:`ContrastiveObjective`
(backbone + projection head) and the task source :class:`ContrastiveViews` (seeded mini-batches
of augmented pairs) — that :func:`metaunsup.training.pretraining.pretrain_contrastive` runs
through the one Trainer (so pre-training is checkpointed and resumable like meta-training).

The backbone runs through its task-batched ``functional_features`` (the path meta-training and
clustering use), with both views of a mini-batch as one task: batch-norm statistics are those of
the ``2b`` views.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from metaunsup._validation import check_int, check_positive, check_seed
from metaunsup.data.augment import Augment
from metaunsup.data.unlabeled import UnlabeledView, as_unlabeled
from metaunsup.errors import ConfigError
from metaunsup.nets import FunctionalNet
from metaunsup.tasks.samplers import gather_float

__all__ = ["BatchStream", "ContrastiveObjective", "ContrastiveViews", "nt_xent_loss"]


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


class BatchStream:
    """Indices of mini-batches: a seeded shuffle of ``0..n-1`` cut into batches, reshuffled
    each epoch (no example twice in a batch, every example once per epoch)."""

    def __init__(self, n: int, generator: torch.Generator) -> None:
        self.n, self.generator = n, generator
        self._perm = torch.empty(0, dtype=torch.int64)
        self._pos = 0

    def next(self, batch_size: int) -> torch.Tensor:
        """``int64 [min(batch_size, n)]``."""
        size = min(batch_size, self.n)
        if self._pos + size > self._perm.numel():
            self._perm = torch.randperm(self.n, generator=self.generator)
            self._pos = 0
        out = self._perm[self._pos : self._pos + size]
        self._pos += size
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"perm": self._perm.clone(), "pos": self._pos}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._perm, self._pos = state["perm"].to(torch.int64), int(state["pos"])


class ContrastiveViews:
    """Task source of SimCLR: ``sample(b)`` → two augmented views of ``b`` examples,
    ``float32 [2, b, *example_shape]`` (row ``i`` of each view from the same example).

    Mini-batches and augmentations come from one ``torch.Generator`` seeded with ``seed``;
    :meth:`state_dict` / :meth:`load_state_dict` save and restore it with the Trainer's
    checkpoints, so a resumed pre-training draws the batches an unbroken one would have.
    Labels are never read (the examples come through an
    :class:`~metaunsup.data.unlabeled.UnlabeledView`).
    """

    def __init__(
        self, source: UnlabeledView | torch.Tensor, augment: Augment | None, seed: int
    ) -> None:
        self.view = as_unlabeled(source)
        if len(self.view) < 2:
            raise ConfigError("contrastive pre-training needs at least 2 examples")
        shape = self.view.example_shape
        self.augment = Augment.for_shape(shape, strong=True) if augment is None else augment
        if self.augment.is_identity:
            raise ConfigError("contrastive pre-training needs a non-identity augmentation")
        self.seed = check_seed("seed", seed)
        self.generator = torch.Generator().manual_seed(self.seed)
        self.stream = BatchStream(len(self.view), self.generator)

    def sample(self, batch_size: int) -> torch.Tensor:
        x = gather_float(self.view.x, self.stream.next(batch_size))
        return self.augment(torch.stack([x, x]), self.generator)  # two independent draws

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), **self.stream.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"].to(torch.uint8))
        self.stream.load_state_dict({"perm": state["perm"], "pos": state["pos"]})


class ContrastiveObjective(nn.Module):
    """A backbone and its SimCLR projection head (``D → D → proj_dim``, thrown away after
    pre-training); :meth:`loss` is the Trainer's objective.

    ``net``'s classification head, if it has one, is neither used nor changed. The projection
    head's initial weights are drawn from ``seed`` without touching the global RNG.
    """

    def __init__(
        self, net: FunctionalNet, proj_dim: int = 64, temperature: float = 0.5, seed: int = 0
    ) -> None:
        super().__init__()
        self.net = net
        self.temperature = check_positive("temperature", temperature)
        proj_dim = check_int("proj_dim", proj_dim, 1)
        d = net.feature_dim
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(check_seed("seed", seed))
            self.head = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, proj_dim))

    def loss(self, views: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """NT-Xent of ``views`` ``[2, b, *example_shape]``; no extra metrics."""
        z = self.net.functional_features(self.net.params(), views.flatten(0, 1).unsqueeze(0))[0]
        z1, z2 = self.head(z).chunk(2)
        return nt_xent_loss(z1, z2, self.temperature), {}
