"""Contrastive pre-training of a meta-learner's own backbone, before meta-training.

Unsupervised meta-learning needs a first embedding of the unlabeled data from which tasks are
made (CACTUs clusters it). Training that embedding *in the meta-learner's backbone* gives two
things at once: the pseudo-labels come from a strong, augmentation-invariant representation
(SimCLR, Chen et al. 2020: each image must pick out its own augmented copy among the batch),
and meta-training then starts from those weights instead of from random ones.

The backbone is trained through its task-batched ``functional_features`` (the same path
meta-training and clustering use), with both views of a mini-batch as one task: batch-norm
statistics are those of the ``2b`` views. A two-layer projection head (``D → D → proj_dim``)
is trained beside it and thrown away, as in the paper.

Measured on digits (train half, 898 images, Conv4 with 32 channels, 500 steps of 256 images,
about 30 s on one core): k-means with ``k = 10`` on the L2-normalised features scores 0.93
clustering accuracy on the train half and on the unseen test half, against 0.78 on pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from metaunsup._validation import check_int
from metaunsup.data.augment import Augment
from metaunsup.data.unlabeled import UnlabeledView, as_unlabeled
from metaunsup.embed._common import BatchStream, batch_of, check_fit_args, train_loop
from metaunsup.embed.contrastive import nt_xent_loss
from metaunsup.errors import ConfigError
from metaunsup.nets import FunctionalNet

__all__ = ["net_embeddings", "pretrain_contrastive"]


def pretrain_contrastive(
    net: FunctionalNet,
    source: UnlabeledView | torch.Tensor,
    *,
    steps: int = 500,
    batch_size: int = 256,
    temperature: float = 0.5,
    proj_dim: int = 64,
    augment: Augment | None = None,
    lr: float = 1e-3,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> list[float]:
    """Train ``net``'s body in place by SimCLR's NT-Xent loss; returns the loss of every step.

    Parameters
    ----------
    net:
        The backbone (its head, if any, is not used or changed).
    source:
        Unlabeled examples ``[n, *example_shape]`` (labels are never read).
    steps, batch_size, lr:
        Adam steps, examples per step (``2 * batch_size`` views) and learning rate.
    temperature, proj_dim:
        NT-Xent temperature, and the output size of the projection head.
    augment:
        How views are drawn (default ``Augment.for_shape(example_shape, strong=True)``).
    seed:
        Seeds the head's initial weights, the batches and the augmentations.
    """
    view = as_unlabeled(source)
    steps, batch_size, lr, seed = check_fit_args(steps, batch_size, lr, seed)
    proj_dim = check_int("proj_dim", proj_dim, 1)
    if not float(temperature) > 0:
        raise ConfigError(f"temperature must be positive, got {temperature}")
    if len(view) < 2:
        raise ConfigError("contrastive pre-training needs at least 2 examples")
    aug = Augment.for_shape(view.example_shape, strong=True) if augment is None else augment
    if aug.is_identity:
        raise ConfigError("contrastive pre-training needs a non-identity augmentation")
    dev = torch.device(device)
    d = net.feature_dim
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, proj_dim)).to(dev)
    body = [p for name, p in net.named_parameters() if name not in net.head_names]
    generator = torch.Generator().manual_seed(seed)
    stream = BatchStream(len(view), batch_size, generator)
    net.train()

    def step_loss(_step: int) -> torch.Tensor:
        x = batch_of(view, stream.next(), dev)
        views = aug(torch.stack([x, x]), generator)  # [2, b, ...]: two independent draws
        z = net.functional_features(net.params(), views.flatten(0, 1).unsqueeze(0))[0]
        z1, z2 = head(z).chunk(2)
        return nt_xent_loss(z1, z2, float(temperature))

    return train_loop(
        f"contrastive pre-training[{view.name}/{view.split}]",
        body + list(head.parameters()),
        step_loss,
        steps,
        lr,
        progress,
    )


@torch.no_grad()
def net_embeddings(
    net: FunctionalNet,
    x: torch.Tensor,
    *,
    chunk: int = 512,
    normalize: bool = True,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """``float32 [n, D]`` body features of ``x`` ``[n, *example_shape]`` (floats, as
    :func:`~metaunsup.data.to_float` gives them), on the CPU.

    Examples go through ``chunk`` at a time, each chunk as one task (batch-norm statistics are
    the chunk's). ``normalize`` scales every row to unit length (cosine geometry, the one the
    contrastive loss shapes).
    """
    chunk = check_int("chunk", chunk, 2)
    params = net.params()
    out = []
    for s in range(0, x.shape[0], chunk):
        part = x[s : s + chunk].to(device=device, dtype=torch.float32)
        if part.shape[0] < 2 and s > 0:  # a lone last example: normalise it with its neighbours
            part = x[s - 1 : s + 1].to(device=device, dtype=torch.float32)
            out.append(net.functional_features(params, part.unsqueeze(0))[0, 1:].cpu())
            continue
        out.append(net.functional_features(params, part.unsqueeze(0))[0].cpu())
    z = torch.cat(out).float()
    return F.normalize(z, dim=1) if normalize else z
