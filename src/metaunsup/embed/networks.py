"""Small encoder and decoder networks for the unsupervised embedding learners.

* :class:`ConvEncoder` — blocks of [3×3 convolution, batch norm, ReLU, 2×2 max-pool] (pooling
  stops at 1 pixel), then a linear map to ``dim`` features. For 28×28 inputs and the default
  three blocks the maps go 28 → 14 → 7 → 3; for 8×8 digits 8 → 4 → 2 → 1.
* :class:`MLPEncoder` — for flat inputs (tables) or when asked: two hidden ReLU layers.
* :class:`ConvDecoder` / :class:`MLPDecoder` — the way back, for the autoencoder.

The batch norms keep running statistics, so an encoder in ``eval()`` mode maps each example on
its own (its embedding does not depend on the batch it is in); :func:`~metaunsup.embed.embed`
switches to ``eval()``. Encoders carry their architecture as :meth:`Encoder.config` so
:func:`build_encoder` (and :func:`~metaunsup.embed.load_encoder`) can rebuild them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from metaunsup.errors import ConfigError

__all__ = [
    "ConvDecoder",
    "ConvEncoder",
    "Encoder",
    "MLPDecoder",
    "MLPEncoder",
    "build_encoder",
]


def _shape(example_shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(int(s) for s in example_shape)
    if not shape or min(shape) < 1:
        raise ConfigError(f"example_shape must be positive sizes, got {example_shape!r}")
    return shape


class Encoder(nn.Module):
    """Base of the embedding networks: ``[n, *example_shape]`` → ``[n, dim]``.

    Attributes
    ----------
    example_shape:
        Shape of one input example.
    dim:
        Size of the embedding.
    losses:
        Training loss per step, filled by the ``fit_*`` function that trained it (a plain list,
        not saved with the weights).
    """

    name = "encoder"

    def __init__(self, example_shape: Sequence[int], dim: int) -> None:
        super().__init__()
        if int(dim) < 1:
            raise ConfigError(f"embedding dim must be >= 1, got {dim}")
        self.example_shape = _shape(example_shape)
        self.dim = int(dim)
        self.losses: list[float] = []

    def config(self) -> dict[str, Any]:
        """JSON-able architecture; :func:`build_encoder` rebuilds the module from it."""
        raise NotImplementedError


class ConvEncoder(Encoder):
    """Convolutional encoder for images ``[n, C, H, W]`` → ``[n, dim]``.

    Parameters
    ----------
    example_shape:
        ``(C, H, W)``.
    dim:
        Output features.
    width:
        Channels of every convolution.
    depth:
        Number of conv blocks.
    """

    name = "conv"

    def __init__(
        self, example_shape: Sequence[int], dim: int = 64, width: int = 64, depth: int = 3
    ) -> None:
        super().__init__(example_shape, dim)
        if len(self.example_shape) != 3:
            raise ConfigError(f"ConvEncoder needs images (C, H, W), got {self.example_shape}")
        if int(width) < 1 or int(depth) < 1:
            raise ConfigError(f"ConvEncoder: width and depth must be >= 1, got {width}, {depth}")
        self.width, self.depth = int(width), int(depth)
        c, h, w = self.example_shape
        layers: list[nn.Module] = []
        for _ in range(self.depth):
            layers += [nn.Conv2d(c, self.width, 3, padding=1, bias=False)]
            layers += [nn.BatchNorm2d(self.width), nn.ReLU()]
            if min(h, w) >= 2:
                layers.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            c = self.width
        self.body = nn.Sequential(*layers, nn.Flatten())
        self.head = nn.Linear(self.width * h * w, self.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[n, C, H, W]`` → ``[n, dim]``."""
        return self.head(self.body(x))

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "example_shape": list(self.example_shape),
            "dim": self.dim,
            "width": self.width,
            "depth": self.depth,
        }


class MLPEncoder(Encoder):
    """Fully connected encoder: examples of any shape, flattened, → ``[n, dim]``."""

    name = "mlp"

    def __init__(self, example_shape: Sequence[int], dim: int = 64, hidden: int = 256) -> None:
        super().__init__(example_shape, dim)
        if int(hidden) < 1:
            raise ConfigError(f"MLPEncoder: hidden must be >= 1, got {hidden}")
        self.hidden = int(hidden)
        d_in = math.prod(self.example_shape)
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(d_in, self.hidden),
            nn.ReLU(),
            nn.Linear(self.hidden, self.hidden),
            nn.ReLU(),
            nn.Linear(self.hidden, self.dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[n, *example_shape]`` → ``[n, dim]``."""
        return self.net(x)

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "example_shape": list(self.example_shape),
            "dim": self.dim,
            "hidden": self.hidden,
        }


class ConvDecoder(nn.Module):
    """``[n, dim]`` → logits ``[n, C, H, W]`` by two stride-2 transposed convolutions.

    Needs ``H`` and ``W`` divisible by 4 (28×28, 32×32, 84×84, ...).
    """

    def __init__(self, example_shape: Sequence[int], dim: int, width: int = 64) -> None:
        super().__init__()
        c, h, w = _shape(example_shape)
        if h % 4 or w % 4:
            raise ConfigError(f"ConvDecoder needs H and W divisible by 4, got {(h, w)}")
        self.start = (width, h // 4, w // 4)
        self.fc = nn.Sequential(nn.Linear(dim, width * (h // 4) * (w // 4)), nn.ReLU())
        self.up = nn.Sequential(
            nn.ConvTranspose2d(width, width, 4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.ConvTranspose2d(width, c, 4, stride=2, padding=1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.up(self.fc(z).view(-1, *self.start))


class MLPDecoder(nn.Module):
    """``[n, dim]`` → logits ``[n, *example_shape]`` (two hidden ReLU layers)."""

    def __init__(self, example_shape: Sequence[int], dim: int, hidden: int = 256) -> None:
        super().__init__()
        self.example_shape = _shape(example_shape)
        self.net = nn.Sequential(
            nn.Linear(dim, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, math.prod(self.example_shape)),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(-1, *self.example_shape)


ENCODERS: dict[str, type[Encoder]] = {"conv": ConvEncoder, "mlp": MLPEncoder}


def build_encoder(config: Mapping[str, Any]) -> Encoder:
    """A fresh encoder from :meth:`Encoder.config` (random weights, global RNG of torch)."""
    if not isinstance(config, Mapping) or config.get("name") not in ENCODERS:
        raise ConfigError(
            f"an encoder config needs 'name' in {sorted(ENCODERS)}, got {dict(config)!r}"
            if isinstance(config, Mapping)
            else f"an encoder config must be a dict, got {config!r}"
        )
    kwargs = {k: v for k, v in config.items() if k != "name"}
    try:
        return ENCODERS[config["name"]](**kwargs)
    except TypeError as err:
        raise ConfigError(f"encoder {config['name']!r}: {err}") from None


def choose_arch(example_shape: Sequence[int], arch: str, for_decoder: bool = False) -> str:
    """``"conv"`` or ``"mlp"`` for ``arch="auto"``: conv for images (whose sides are multiples
    of 4 and at least 16 when a conv decoder is needed), the MLP otherwise."""
    shape = _shape(example_shape)
    if arch not in ("auto", "conv", "mlp"):
        raise ConfigError(f"arch must be 'auto', 'conv' or 'mlp', got {arch!r}")
    is_image = len(shape) == 3
    decodable = is_image and shape[1] % 4 == 0 and shape[2] % 4 == 0 and min(shape[1:]) >= 16
    if arch == "auto":
        return "conv" if (decodable if for_decoder else is_image) else "mlp"
    if arch == "conv" and not (decodable if for_decoder else is_image):
        need = "images with sides divisible by 4, >= 16" if for_decoder else "images (C, H, W)"
        raise ConfigError(f"arch='conv' needs {need}, got example shape {shape}")
    return arch
