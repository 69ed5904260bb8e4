"""Atomic file writes: a result or checkpoint file is either complete or absent, never partial."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from metaunsup.errors import ConfigError


def check_output_path(path: str | os.PathLike) -> Path:
    """``path`` as a :class:`Path` whose folder exists; :class:`ConfigError` otherwise."""
    out = Path(path).expanduser()
    if out.is_dir():
        raise ConfigError(f"output path {str(out)!r} is a folder; give a file name")
    if not out.parent.is_dir():
        raise ConfigError(
            f"cannot write {str(out)!r}: folder {str(out.parent)!r} does not exist; create it first"
        )
    return out


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path``, fsync it, then rename it into place."""
    out = check_output_path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return out


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: object) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")
