"""Atomic file writes: a result or checkpoint file is either complete or absent, never partial.

Every output of metaunsup (labels, results JSON, figures, checkpoints, caches) is written by
:func:`atomic_write_bytes`: the bytes go to a hidden temporary file beside the target, are
flushed to disk, get the permissions an ordinary new file would get (``0666`` less the user's
umask: ``0644`` under umask ``022``), and are renamed onto the target in one step. A full disk
or a killed process therefore leaves either the previous file or the new one, never a mix; a
failed write removes its temporary file and raises :class:`~metaunsup.errors.OutputError`
naming the target (not the temporary file) and saying that the previous file is unchanged.
A process killed with ``SIGKILL`` cannot remove its temporary file: a hidden
``.<name>.*.tmp`` may stay beside the untouched target.

:func:`check_output_path` is the check every command runs on its output paths *before* any
work: the folder exists and is writable, the path is not a folder, and it is not one of the
command's inputs (writing the labels over the data they came from is refused).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from metaunsup.errors import ConfigError, OutputError

__all__ = [
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "check_output_folder",
    "check_output_path",
    "new_file_mode",
    "same_file",
]

_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG)
_DENIED = (errno.EACCES, errno.EPERM, errno.EROFS)


def new_file_mode() -> int:
    """The mode a new file gets: ``0o666`` less the process's umask (read, never changed)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # no other way to read it: set it and put it back at once
    os.umask(mask)
    return 0o666 & ~mask


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether ``a`` and ``b`` name the same existing file or folder (links included)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def check_output_path(
    path: str | os.PathLike,
    *,
    inputs: Iterable[str | os.PathLike | None] = (),
    option: str = "output",
) -> Path:
    """``path`` as a :class:`Path` that can be written; :class:`ConfigError` otherwise.

    Refused: a folder, a path in a missing or read-only folder, and a path that is one of
    ``inputs`` (the files or folders the command reads; ``None`` entries are skipped).
    ``option`` names the path in messages (e.g. ``"--out"``).
    """
    out = Path(path).expanduser()
    for source in inputs:
        if source is not None and out.exists() and same_file(out, source):
            raise ConfigError(
                f"{option} {str(out)!r} is an input of this command; writing there would "
                "replace it: give another path"
            )
    if out.is_dir():
        raise ConfigError(f"{option} {str(out)!r} is a folder; give a file name")
    if not out.parent.is_dir():
        raise ConfigError(
            f"cannot write {str(out)!r}: folder {str(out.parent)!r} does not exist; create it first"
        )
    if not os.access(out.parent, os.W_OK | os.X_OK):
        raise ConfigError(
            f"cannot write {str(out)!r}: folder {str(out.parent)!r} is not writable; choose "
            "another folder or change its permissions"
        )
    return out


def check_output_folder(path: str | os.PathLike, option: str = "--out") -> Path:
    """``path`` as a :class:`Path` of a folder that is, or can be created, writable (its
    nearest existing ancestor is a writable folder); :class:`ConfigError` otherwise."""
    out = Path(path).expanduser()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{option} {str(out)!r} is a file; give a folder")
    existing = next(p for p in (out, *out.parents) if p.exists() or p == p.parent)
    if not existing.is_dir():
        raise ConfigError(f"{option} {str(out)!r}: {str(existing)!r} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(
            f"{option} {str(out)!r}: folder {str(existing)!r} is not writable; choose another "
            "folder or change its permissions"
        )
    return out


def _write_error(out: Path, err: OSError, existed: bool) -> OutputError:
    if err.errno in _FULL:
        fix = "free some space or write elsewhere"
    elif err.errno in _DENIED:
        fix = "choose a writable folder"
    else:
        fix = "check the folder"
    kept = "the previous file is unchanged" if existed else "nothing was written"
    return OutputError(f"cannot write {str(out)!r} ({err.strerror or err}); {kept}: {fix}")


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_fd(fd: int, data: bytes) -> None:
    """Write ``data`` to the open file ``fd``, flush it to disk and close it (the step a full
    disk or a kill interrupts; the fault-injection tests replace it)."""
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path``, fsync it, then rename it into place.

    The file gets :func:`new_file_mode`. Raises :class:`OutputError` when the bytes cannot be
    written (the target is then as it was) and :class:`ConfigError` for a path that
    :func:`check_output_path` refuses.
    """
    out = check_output_path(path)
    existed = out.exists()
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    except OSError as err:
        raise _write_error(out, err, existed) from None
    try:
        _write_fd(fd, data)
        os.chmod(tmp, new_file_mode())
        os.replace(tmp, out)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(err, OSError):
            raise _write_error(out, err, existed) from None
        raise
    _fsync_folder(out.parent)
    return out


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: object) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")
