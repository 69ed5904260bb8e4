"""The backbone registry: the one place that maps config names to backbone classes.

A backbone's ``config()`` dict names it (``{"name": "conv4", ...}``); :func:`build_net` looks
the name up in :data:`BACKBONES` and calls the class with the other entries, checked against
its ``__init__`` (:func:`build_kwargs`). Learner configs hold a backbone config under
``"net"``, so checkpoints and the command line rebuild networks through here too.

A backbone defined anywhere, inside the package or not, is registered with one line::

    @register_backbone("toy")
    class Toy(FunctionalNet): ...

Unknown names, unknown options and bad values raise :class:`~metaunsup.errors.ConfigError`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from metaunsup.errors import ConfigError
from metaunsup.nets.base import FunctionalNet
from metaunsup.nets.conv4 import Conv4
from metaunsup.nets.gated_mlp import GatedMaskedMLP
from metaunsup.nets.masked_mlp import MaskedMLP
from metaunsup.nets.mlp import MLP

Net = TypeVar("Net", bound=type[FunctionalNet])

#: Backbone classes by config name.
BACKBONES: dict[str, type[FunctionalNet]] = {}


def register_backbone(name: str) -> Callable[[Net], Net]:
    """A decorator that registers a :class:`FunctionalNet` subclass under ``name``.

    The class's ``config()`` must return ``{"name": name, ...}`` with its other entries
    accepted by its ``__init__``, so that :func:`build_net` rebuilds it. Registering the same
    class again is a no-op; another class under a taken name raises ``ConfigError``.
    """
    if not isinstance(name, str) or not name:
        raise ConfigError(f"a backbone name must be a non-empty string, got {name!r}")

    def register(cls: Net) -> Net:
        if not (isinstance(cls, type) and issubclass(cls, FunctionalNet)):
            raise ConfigError(f"backbone {name!r}: {cls!r} is not a FunctionalNet subclass")
        if BACKBONES.get(name, cls) is not cls:
            raise ConfigError(f"backbone name {name!r} is taken by {BACKBONES[name].__name__}")
        BACKBONES[name] = cls
        return cls

    return register


def build_kwargs(cls: type, config: Mapping[str, Any], what: str) -> dict[str, Any]:
    """``config`` without ``"name"``, checked against the parameters of ``cls.__init__``.

    ``what`` names the kind of object in the error (``"network"``, ``"learner"``).
    """
    kwargs = {k: v for k, v in config.items() if k != "name"}
    accepted = set(inspect.signature(cls).parameters)
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
    if name not in BACKBONES:
        raise ConfigError(f"unknown network {name!r}; choose one of: {', '.join(BACKBONES)}")
    cls = BACKBONES[name]
    try:
        return cls(**build_kwargs(cls, config, "network"))
    except TypeError as err:  # e.g. a string where a number belongs
        raise ConfigError(f"network {name!r}: {err}") from err


register_backbone("conv4")(Conv4)
register_backbone("mlp")(MLP)
register_backbone("masked-mlp")(MaskedMLP)
register_backbone("gated-masked-mlp")(GatedMaskedMLP)
