"""The exceptions metaunsup raises.

Every error a user can cause derives from :class:`MetaUnsupError`, so a caller can catch one base
class, and the command-line interface turns any of them into one line on stderr and exit status 2.
The subclasses that describe bad values also derive from :class:`ValueError`, which is what
scikit-learn-style callers expect from invalid input.
"""

from __future__ import annotations


class MetaUnsupError(Exception):
    """Base class of every error metaunsup raises on purpose."""


class DataError(MetaUnsupError, ValueError):
    """Missing, corrupt or invalid data: absent files, bad checksums, NaN/inf, wrong shapes."""


class ConfigError(MetaUnsupError, ValueError):
    """An invalid parameter or configuration: k out of range, unknown method, bad numbers."""


class CheckpointError(MetaUnsupError):
    """A checkpoint that cannot be used: truncated, foreign, unsafe or of another architecture."""


class LabelAccessError(MetaUnsupError):
    """Labels were read on a path that must train without them (unsupervised meta-training)."""


class TrainingDivergedError(MetaUnsupError):
    """A training loss became NaN or infinite; the message names the setting to lower."""
