"""File helpers shared by the dataset loaders: checksums, missing-file messages, downloads.

Private to :mod:`metaunsup.data`. Checksums are cached in-process per ``(path, size, mtime)`` so
that loading a dataset twice hashes its files once; a file that changes on disk gets a new key.
Downloads are written to a temporary file next to the destination and renamed into place only
once complete and checked, so an interrupted download never leaves a half file behind.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from metaunsup.data.base import DATA_ENV
from metaunsup.errors import DataError
from metaunsup.fileio import new_file_mode

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20
_DOWNLOAD_TIMEOUT_S = 60.0

_sha256_cache: dict[tuple[str, int, int], str] = {}


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of the file at ``path``, cached per ``(resolved path, size, mtime_ns)``."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    digest = _sha256_cache.get(key)
    if digest is None:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(_CHUNK), b""):
                h.update(block)
        digest = h.hexdigest()
        _sha256_cache[key] = digest
    return digest


def check_sha256(path: Path, expected: str) -> None:
    """Raise :class:`DataError` unless the file at ``path`` has SHA-256 ``expected``."""
    actual = sha256_file(path)
    if actual != expected:
        raise DataError(
            f"{path}: checksum mismatch (sha256 {actual[:16]}…, expected {expected[:16]}…); "
            "the file is corrupt or not the canonical one — delete it and download it again"
        )


def missing_error(dataset: str, folder: Path, expected: Sequence[str]) -> DataError:
    """The :class:`DataError` for absent dataset files: what, where, and how to get them."""
    files = ", ".join(expected)
    return DataError(
        f"{dataset} files not found in {folder} (expected {files}). "
        f"Get them with `metaunsup datasets --download {dataset}`, or point ${DATA_ENV} "
        f"(or --data-dir) at the folder that holds {dataset}/"
    )


def fetch(
    urls: Sequence[str],
    dest: Path,
    sha256: str | None = None,
    validate: Callable[[Path], None] | None = None,
) -> None:
    """Download ``dest`` from the first of ``urls`` that works, atomically.

    Each URL is tried in turn; the bytes go to a temporary file in ``dest``'s folder, are checked
    against ``sha256`` (when given) and by ``validate`` (when given; it raises
    :class:`DataError` on a bad file), then renamed onto ``dest``. Raises :class:`DataError`
    naming every URL tried when none gives a good file.
    """
    failures: list[str] = []
    created = [d for d in (dest.parent, *dest.parent.parents) if not d.exists()]
    try:
        done = _fetch_first(urls, dest, sha256, validate, failures)
    except BaseException:
        _remove_empty(created)
        raise
    if not done:
        _remove_empty(created)  # a failed download leaves no empty folder behind
        raise DataError(f"could not download {dest.name}; tried " + "; ".join(failures))


def _remove_empty(folders: Sequence[Path]) -> None:
    """Remove those of ``folders`` (deepest first) that are empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def _fetch_first(
    urls: Sequence[str],
    dest: Path,
    sha256: str | None,
    validate: Callable[[Path], None] | None,
    failures: list[str],
) -> bool:
    """Try ``urls`` in turn until one gives a good ``dest`` (``True``); each failure is added to
    ``failures``."""
    for url in urls:
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(
                prefix=f".{dest.name}.", suffix=".part", dir=dest.parent
            )
        except OSError as exc:
            raise DataError(f"cannot write into {dest.parent} ({exc})") from exc
        tmp = Path(tmp_name)
        try:
            logger.info("downloading %s -> %s", url, dest)
            h = hashlib.sha256()
            with (
                os.fdopen(fd, "wb") as out,
                urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as response,
            ):
                while block := response.read(_CHUNK):
                    h.update(block)
                    out.write(block)
            if sha256 is not None and h.hexdigest() != sha256:
                raise DataError(f"checksum mismatch (sha256 {h.hexdigest()[:16]}…)")
            if validate is not None:
                validate(tmp)
            os.chmod(tmp, new_file_mode())  # mkstemp makes it private; the umask decides
            os.replace(tmp, dest)
            logger.info("saved %s", dest)
            return True
        except (OSError, urllib.error.URLError, DataError) as exc:
            logger.info("download of %s failed: %s", url, exc)  # all are named in the error
            failures.append(f"{url}: {exc}")
        finally:
            if tmp.exists():
                tmp.unlink()
    return False
