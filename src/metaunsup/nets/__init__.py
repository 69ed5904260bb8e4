"""Backbones used functionally with explicit, task-batched parameter dicts.

``build_net(config)`` rebuilds a network from its ``config()`` dict (``{"name": "conv4", ...}``
or ``{"name": "mlp", ...}``); unknown names or arguments raise
:class:`~metaunsup.errors.ConfigError`.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from metaunsup.errors import ConfigError
from metaunsup.nets.base import FunctionalNet, ParamDict
from metaunsup.nets.conv4 import Conv4
from metaunsup.nets.mlp import MLP

NETS: dict[str, type[FunctionalNet]] = {"conv4": Conv4, "mlp": MLP}


def build_kwargs(cls: type, config: Mapping[str, Any], what: str) -> dict[str, Any]:
    """``config`` without ``"name"``, checked against the parameters of ``cls.__init__``."""
    kwargs = {k: v for k, v in config.items() if k != "name"}
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise ConfigError(
            f"{what} {config.get('name')!r}: unknown option(s) {', '.join(unknown)}; "
            f"accepted: {', '.join(sorted(accepted))}"
        )
    return kwargs


def build_net(config: Mapping[str, Any]) -> FunctionalNet:
    """A backbone from its ``config()`` dict (fresh, randomly initialised parameters)."""
    if not isinstance(config, Mapping) or "name" not in config:
        raise ConfigError(f"a network config must be a dict with a 'name', got {config!r}")
    name = config["name"]
    if name not in NETS:
        raise ConfigError(f"unknown network {name!r}; choose one of: {', '.join(NETS)}")
    cls = NETS[name]
    try:
        return cls(**build_kwargs(cls, config, "network"))
    except TypeError as err:  # e.g. a string where a number belongs
        raise ConfigError(f"network {name!r}: {err}") from err


__all__ = ["MLP", "NETS", "Conv4", "FunctionalNet", "ParamDict", "build_kwargs", "build_net"]
