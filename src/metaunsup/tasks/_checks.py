"""Validation of the numbers task samplers and splits take."""

from __future__ import annotations

import operator
from typing import Any

from metaunsup.errors import ConfigError


def check_int(name: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    """``value`` as an ``int`` in ``[minimum, maximum]``.

    Accepts anything with ``__index__`` (``int``, NumPy and 0-d torch integers); raises
    :class:`ConfigError` for bools, floats (even ``2.0``) and strings.
    """
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    try:
        out = operator.index(value)
    except TypeError:
        raise ConfigError(
            f"{name} must be an integer, got {value!r} ({type(value).__name__})"
        ) from None
    if out < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {out}")
    if maximum is not None and out > maximum:
        raise ConfigError(f"{name} must be <= {maximum}, got {out}")
    return out


#: Largest seed a ``torch.Generator`` accepts.
MAX_SEED = 2**64 - 1
