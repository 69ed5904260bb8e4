"""The one home of parameter checks: integers, numbers, flags, choices and seeds.

Every check takes ``(name, value, ...)`` in that order and either returns the value as the plain
Python type or raises :class:`~metaunsup.errors.ConfigError` (a ``ValueError``, as
scikit-learn's conventions expect) with a message that names the parameter and what it accepts.
Booleans are never accepted as numbers (``True`` is an ``int`` in Python, never a count here).
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Iterable
from typing import Any

from metaunsup.errors import ConfigError

__all__ = [
    "MAX_SEED",
    "check_bool",
    "check_choice",
    "check_float",
    "check_int",
    "check_positive",
    "check_seed",
]

#: Largest seed a ``torch.Generator`` accepts.
MAX_SEED = 2**64 - 1


def _bound_text(value: float, low: float | None, high: float | None, strict_low: bool) -> str:
    """The bound ``value`` breaks, as ``">= 1"``, ``"> 0.0"`` or ``"<= 10"``."""
    if low is not None and (value < low or (strict_low and value == low)):
        return f"{'>' if strict_low else '>='} {low}"
    return f"<= {high}"


def check_int(name: str, value: Any, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an ``int`` in ``[low, high]`` (either bound may be ``None``: open).

    Accepts anything with ``__index__`` (``int``, NumPy and 0-d torch integers); rejects bools,
    floats (even ``2.0``) and strings.
    """
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    try:
        out = operator.index(value)
    except TypeError:
        raise ConfigError(
            f"{name} must be an integer, got {value!r} ({type(value).__name__})"
        ) from None
    if (low is not None and out < low) or (high is not None and out > high):
        raise ConfigError(f"{name} must be {_bound_text(out, low, high, False)}, got {out}")
    return out


def check_float(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    strict_low: bool = False,
) -> float:
    """``value`` as a finite ``float`` in ``[low, high]`` (``(low, high]`` with ``strict_low``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    out = float(value)
    too_low = low is not None and (out < low or (strict_low and out == low))
    if not math.isfinite(out):
        raise ConfigError(f"{name} must be a finite number, got {out}")
    if too_low or (high is not None and out > high):
        raise ConfigError(f"{name} must be {_bound_text(out, low, high, strict_low)}, got {out}")
    return out


def check_positive(name: str, value: Any) -> float:
    """``value`` as a finite ``float > 0``."""
    return check_float(name, value, 0.0, strict_low=True)


def check_bool(name: str, value: Any) -> bool:
    """``value`` itself when it is ``True`` or ``False``."""
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    return value


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    """``value`` when it is one of ``choices``."""
    options = tuple(choices)
    if value not in options:
        raise ConfigError(f"{name} must be one of {', '.join(map(repr, options))}, got {value!r}")
    return value


def check_seed(name: str, value: Any) -> int:
    """A seed a ``torch.Generator`` accepts: an integer in ``[0, 2**64 - 1]``."""
    return check_int(name, value, 0, MAX_SEED)
