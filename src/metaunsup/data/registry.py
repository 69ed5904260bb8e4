"""Name → loader registry: ``load(name, split, root)``, ``download``, ``verify``, ``names``.

Each dataset lives in its own module exposing a :class:`DatasetSpec`; this module only
dispatches, so adding a dataset is one new module and one line in ``_SPECS`` (modules are
imported when their dataset is first used). Code outside the package adds its own with
:func:`register_dataset`.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from metaunsup.data.base import Dataset, resolve_root
from metaunsup.errors import ConfigError


@dataclass(frozen=True)
class DatasetSpec:
    """What the registry needs to know about one dataset.

    ``load(split, root)`` returns the split in memory; ``verify(root)`` returns a list of
    human-readable lines (one per file: found / missing / checksum) and raises nothing;
    ``download(root)`` fetches the canonical files (``None`` when nothing is to download).
    ``root`` is the already-resolved data folder (``<root>/<name>/...`` holds the files) except
    for ``arrays``, whose ``root`` is the user's file or folder.
    """

    name: str
    description: str
    splits: tuple[str, ...]
    load: Callable[[str, Path], Dataset]
    verify: Callable[[Path], list[str]]
    download: Callable[[Path], None] | None = None
    needs_files: bool = True


_SPECS = {
    "digits": "metaunsup.data.digits",
    "mnist": "metaunsup.data.mnist",
    "omniglot": "metaunsup.data.omniglot",
    "arrays": "metaunsup.data.arrays",
}


#: Datasets registered at run time (:func:`register_dataset`), by name.
_REGISTERED: dict[str, DatasetSpec] = {}


def register_dataset(dataset: DatasetSpec) -> DatasetSpec:
    """Add a dataset defined outside the package under ``dataset.name`` (taken once)."""
    if not isinstance(dataset, DatasetSpec):
        raise ConfigError(f"register_dataset needs a DatasetSpec, got {dataset!r}")
    if dataset.name in _SPECS or _REGISTERED.get(dataset.name, dataset) is not dataset:
        raise ConfigError(f"a dataset named {dataset.name!r} is registered already")
    _REGISTERED[dataset.name] = dataset
    return dataset


def names() -> list[str]:
    """The registered dataset names."""
    return [*_SPECS, *_REGISTERED]


def spec(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` of ``name``; :class:`ConfigError` for an unknown name."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name not in _SPECS:
        raise ConfigError(f"unknown dataset {name!r}; choose one of: {', '.join(names())}")
    return importlib.import_module(_SPECS[name]).SPEC


def load(name: str, split: str, root: str | os.PathLike | None = None) -> Dataset:
    """Load split ``split`` of dataset ``name`` into memory.

    ``root`` is the folder holding the dataset folders (default: ``$METAUNSUP_DATA``, else a
    per-user cache folder). For ``arrays`` it is the user's ``.npy``/``.csv`` file or image folder.
    Raises :class:`~metaunsup.errors.DataError` when files are missing or corrupt (naming the
    expected files and the command that downloads them), :class:`ConfigError` for an unknown
    name or split.
    """
    s = spec(name)
    if split not in s.splits:
        raise ConfigError(
            f"dataset {name!r} has no split {split!r}; choose one of: {', '.join(s.splits)}"
        )
    if name == "arrays":
        if root is None:
            raise ConfigError(
                "dataset 'arrays' needs the path of a .npy/.csv file or image folder (--data-dir "
                "on the command line, root= in Python)"
            )
        return s.load(split, Path(root).expanduser())
    return s.load(split, resolve_root(root))


def download(name: str, root: str | os.PathLike | None = None) -> Path:
    """Fetch the canonical files of ``name`` into ``<root>/<name>/`` and verify their checksums."""
    fetch = spec(name).download if name in names() else None
    if fetch is None:
        these = [n for n in names() if spec(n).download is not None]
        what = "has nothing to download" if name in names() else "is not a dataset"
        raise ConfigError(f"{name!r} {what}; datasets that can be downloaded: {', '.join(these)}")
    base = resolve_root(root)
    fetch(base)
    return base / name


def verify(name: str, root: str | os.PathLike | None = None) -> list[str]:
    """Human-readable status lines for the files of ``name`` found under the data root."""
    s = spec(name)
    return s.verify(resolve_root(root))
