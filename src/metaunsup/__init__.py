"""metaunsup: meta-unsupervised learning.

Learn from many related tasks how to cluster, embed or score a *new* small unlabeled task.
Importing the package is light: heavy modules (plotting, training) load where they are used.
"""

from __future__ import annotations

from metaunsup.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    DataWarning,
    LabelAccessError,
    MetaUnsupError,
    OutputError,
    TrainingDivergedError,
)

__version__ = "0.1.0"


def __getattr__(name: str):
    """``metaunsup.MetaKMeans`` and ``metaunsup.MetaOutlierDetector`` without importing torch
    and scikit-learn at ``import metaunsup``."""
    if name == "MetaKMeans":
        from metaunsup.estimators.kmeans import MetaKMeans

        return MetaKMeans
    if name == "MetaOutlierDetector":
        from metaunsup.estimators.outlier import MetaOutlierDetector

        return MetaOutlierDetector
    raise AttributeError(f"module 'metaunsup' has no attribute {name!r}")


__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "DataWarning",
    "LabelAccessError",
    "MetaKMeans",
    "MetaOutlierDetector",
    "MetaUnsupError",
    "OutputError",
    "TrainingDivergedError",
    "__version__",
]
