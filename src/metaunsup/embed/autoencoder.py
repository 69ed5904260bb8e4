"""Autoencoder embeddings (Hinton & Salakhutdinov, "Reducing the dimensionality of data with
neural networks", Science 2006).

An encoder maps each example to ``dim`` features and a decoder maps them back; both are trained
to reconstruct the input, and the encoder's features are then the embedding (for example the
space CACTUs clusters to make tasks). Images whose sides are multiples of 4 (28×28, ...) get a
convolutional encoder and decoder; small or flat inputs (8×8 digits, tables) a fully connected
pair.

Loss: binary cross-entropy on the decoder's logits for intensities in ``[0, 1]`` (images), or
mean squared error; ``loss="auto"`` picks BCE when every value lies in ``[0, 1]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from metaunsup._validation import check_int
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
from metaunsup.embed.networks import (
    ConvDecoder,
    ConvEncoder,
    Encoder,
    MLPDecoder,
    MLPEncoder,
    choose_arch,
)
from metaunsup.errors import ConfigError

__all__ = ["AutoEncoder", "fit_autoencoder", "reconstruction_loss"]


class AutoEncoder(nn.Module):
    """An encoder and a decoder: ``[n, *shape]`` → ``[n, dim]`` → logits ``[n, *shape]``."""

    def __init__(self, encoder: Encoder, decoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    @classmethod
    def build(
        cls, example_shape: tuple[int, ...], dim: int = 64, arch: str = "auto", width: int = 64
    ) -> AutoEncoder:
        """A fresh autoencoder for examples of ``example_shape`` (``arch``: auto/conv/mlp).

        ``width`` is the conv channels, or the hidden units of the MLP (times 4).
        """
        kind = choose_arch(example_shape, arch, for_decoder=True)
        if kind == "conv":
            return cls(
                ConvEncoder(example_shape, dim, width=width, depth=3),
                ConvDecoder(example_shape, dim, width=width),
            )
        return cls(
            MLPEncoder(example_shape, dim, hidden=4 * width),
            MLPDecoder(example_shape, dim, hidden=4 * width),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction logits of ``x``."""
        return self.decoder(self.encoder(x))


def reconstruction_loss(logits: torch.Tensor, x: torch.Tensor, loss: str) -> torch.Tensor:
    """Mean per-example reconstruction loss: ``"bce"`` (logits, targets in ``[0, 1]``) or
    ``"mse"`` (the decoder output is the reconstruction itself). Summed over an example's
    values, averaged over examples."""
    if loss == "bce":
        per = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
    elif loss == "mse":
        per = (logits - x).pow(2)
    else:
        raise ConfigError(f"loss must be 'bce', 'mse' or 'auto', got {loss!r}")
    return per.flatten(1).sum(1).mean()


def fit_autoencoder(
    source: Source,
    *,
    dim: int = 64,
    steps: int = 2000,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    loss: str = "auto",
    arch: str = "auto",
    width: int = 64,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> Encoder:
    """Train an autoencoder on unlabeled examples and return its encoder.

    Parameters
    ----------
    source:
        An :class:`~metaunsup.data.unlabeled.UnlabeledView` (or a dataset or tensor, which is
        viewed as one: labels are never read). Examples ``[n, *example_shape]``.
    dim:
        Embedding size.
    steps, batch_size, lr:
        Adam steps, examples per step (at most ``n``; each epoch a new shuffle) and
        learning rate.
    seed:
        Seeds the initial weights and the order of the examples; the same seed gives the same
        encoder (on the same machine and thread count).
    loss:
        ``"bce"``, ``"mse"`` or ``"auto"`` (BCE when all values lie in ``[0, 1]``).
    arch:
        ``"conv"``, ``"mlp"`` or ``"auto"`` (conv for images with sides divisible by 4).
    width:
        Channels of the conv layers (hidden units of the MLP are ``4 * width``).
    device:
        Where to train (default CPU). The returned encoder stays there.
    progress:
        Show a progress bar.

    Returns
    -------
    Encoder
        The trained encoder, in ``eval()`` mode, with ``encoder.losses`` the loss of each step.
        Get features with :func:`~metaunsup.embed.embed`.

    Example
    -------
    >>> enc = fit_autoencoder(UnlabeledView(mnist_train), dim=64, steps=2000, seed=0)
    >>> z = embed(enc, mnist_train.x)  # [60000, 64]
    """
    view = as_unlabeled(source)
    steps, batch_size, lr, seed = check_fit_args(steps, batch_size, lr, seed)
    dim = check_int("dim", dim, 1)
    width = check_int("width", width, 1)
    if loss == "auto":
        x = view.x
        in_range = x.dtype == torch.uint8 or bool(((x >= 0) & (x <= 1)).all())
        loss = "bce" if in_range else "mse"
    elif loss not in ("bce", "mse"):
        raise ConfigError(f"loss must be 'bce', 'mse' or 'auto', got {loss!r}")
    dev = resolve_device(device)
    with seeded_init(seed):
        model = AutoEncoder.build(view.example_shape, dim=dim, arch=arch, width=width)
    model.to(dev).train()
    generator = torch.Generator().manual_seed(seed)
    stream = BatchStream(len(view), batch_size, generator)

    def step_loss(_step: int) -> torch.Tensor:
        x = batch_of(view, stream.next(), dev)
        return reconstruction_loss(model(x), x, loss)

    losses = train_loop(
        f"autoencoder[{view.name}/{view.split}]",
        list(model.parameters()),
        step_loss,
        steps,
        lr,
        progress,
    )
    encoder = model.encoder.eval()
    encoder.losses = losses
    return encoder
