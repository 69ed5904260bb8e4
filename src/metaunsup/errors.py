"""The exceptions metaunsup raises.

Every error a user can cause derives from :class:`MetaUnsupError`, so a caller can catch one base
class, and the command-line interface turns any of them into one line on stderr and exit status 2.
The subclasses that describe bad values also derive from :class:`ValueError`, which is what
scikit-learn-style callers expect from invalid input.
"""

from __future__ import annotations


class MetaUnsupError(Exception):
    """Base class of every error metaunsup raises on purpose.

    ``api_hint``: a fix that only a Python caller can apply (e.g. ``"or pass
    drop_small=True"``). It ends ``str(err)``; the command line leaves it out
    (:attr:`message`) and names its own options instead.
    """

    def __init__(self, *args: object, api_hint: str | None = None) -> None:
        super().__init__(*args)
        self.api_hint = api_hint

    @property
    def message(self) -> str:
        """The message without :attr:`api_hint` (what the command line prints)."""
        return super().__str__()

    def __str__(self) -> str:
        base = super().__str__()
        return f"{base} {self.api_hint}" if self.api_hint else base


class DataError(MetaUnsupError, ValueError):
    """Missing, corrupt or invalid data: absent files, bad checksums, NaN/inf, wrong shapes."""


class ConfigError(MetaUnsupError, ValueError):
    """An invalid parameter or configuration: k out of range, unknown method, bad numbers."""


class CheckpointError(MetaUnsupError):
    """A checkpoint that cannot be used: truncated, foreign, unsafe or of another architecture."""


class OutputError(MetaUnsupError):
    """A result, label file or checkpoint that could not be written (a full disk, a folder that
    is not writable); the message says whether the previous file is unchanged."""


class LabelAccessError(MetaUnsupError):
    """Labels were read on a path that must train without them (unsupervised meta-training)."""


class TrainingDivergedError(MetaUnsupError):
    """A training loss became NaN or infinite; the message names the setting to lower."""


class DataWarning(UserWarning):
    """Data that can be used but probably not as meant (e.g. light-background images for a
    checkpoint trained on bright strokes); the command line prints it as one line."""
