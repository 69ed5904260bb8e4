"""Backbones used functionally with explicit, task-batched parameter dicts.

* :mod:`~metaunsup.nets.base`: the protocol every backbone implements (:class:`FunctionalNet`);
* :mod:`~metaunsup.nets.conv4`, :mod:`~metaunsup.nets.mlp`, :mod:`~metaunsup.nets.masked_mlp`
  (tables with missing cells as NaN), :mod:`~metaunsup.nets.gated_mlp` (its columns weighed
  by task-level descriptors): the backbones, one readable task-batched forward each;
* :mod:`~metaunsup.nets.functional`: the task-batched layers they are built from;
* :mod:`~metaunsup.nets.registry`: config names → classes. ``build_net(config)`` rebuilds a
  network from its ``config()`` dict (``{"name": "conv4", ...}`` or ``{"name": "mlp", ...}``);
  unknown names or arguments raise :class:`~metaunsup.errors.ConfigError`;
  ``register_backbone(name)`` adds a backbone defined anywhere.

The CPU fast path of Conv4 lives in the private ``metaunsup.nets._cpu``.
"""

from __future__ import annotations

from metaunsup.nets.base import FunctionalNet, ParamDict
from metaunsup.nets.conv4 import Conv4
from metaunsup.nets.gated_mlp import GatedMaskedMLP
from metaunsup.nets.masked_mlp import MaskedMLP
from metaunsup.nets.mlp import MLP
from metaunsup.nets.registry import BACKBONES, build_kwargs, build_net, register_backbone

__all__ = [
    "BACKBONES",
    "MLP",
    "Conv4",
    "FunctionalNet",
    "GatedMaskedMLP",
    "MaskedMLP",
    "ParamDict",
    "build_kwargs",
    "build_net",
    "register_backbone",
]
