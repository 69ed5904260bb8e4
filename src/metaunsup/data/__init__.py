"""Datasets, in memory: ``load(name, split, root=None) -> Dataset``.

Registered: ``digits`` (bundled with scikit-learn, no download), ``mnist`` (IDX gzip files),
``omniglot`` (standard zip layout, extracted folders or npz) and ``arrays`` (a user's
``.npy``/``.csv``/image folder).
"""

from __future__ import annotations

from metaunsup.data.base import DATA_ENV, Dataset, resolve_root, to_float
from metaunsup.data.registry import (
    DatasetSpec,
    download,
    load,
    names,
    register_dataset,
    spec,
    verify,
)
from metaunsup.data.unlabeled import UnlabeledView, as_unlabeled

__all__ = [
    "DATA_ENV",
    "Dataset",
    "DatasetSpec",
    "UnlabeledView",
    "as_unlabeled",
    "download",
    "load",
    "names",
    "register_dataset",
    "resolve_root",
    "spec",
    "to_float",
    "verify",
]
