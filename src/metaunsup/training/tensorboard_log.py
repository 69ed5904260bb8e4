"""Optional TensorBoard logging of a training run (``metaunsup train --tensorboard DIR``).

The JSONL log of :class:`~metaunsup.training.trainer.Trainer` is the record of a run; this
writes the same numbers as TensorBoard scalars, for people who watch their runs there.
Training records (``{"step", "loss", "lr", ...}``) become ``train/<name>``, validation records
(``{"step", "val": {...}}``) ``val/<name>``. It needs the ``tensorboard`` package
(``pip install "metaunsup[tensorboard]"``), imported only when asked for.
"""

from __future__ import annotations

import numbers
from pathlib import Path
from typing import Any

from metaunsup.errors import ConfigError

__all__ = ["TensorBoardLog"]


class TensorBoardLog:
    """Writes training and validation records of a run as TensorBoard scalars.

    ``first_step``: the last step already done when the run starts (``0``) or resumes (the
    checkpoint's step); TensorBoard drops the events an interrupted run wrote after it, so a
    resumed run's curves have no doubled steps.
    """

    def __init__(self, log_dir: str | Path, first_step: int = 0) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:  # the package is optional
            raise ConfigError(
                "TensorBoard logging needs the tensorboard package: "
                'pip install "metaunsup[tensorboard]" (or pip install tensorboard)'
            ) from err
        self.log_dir = Path(log_dir)
        self._writer = SummaryWriter(
            str(self.log_dir), purge_step=first_step + 1 if first_step > 0 else None
        )

    def write(self, record: dict[str, Any]) -> None:
        """Add the numbers of one JSONL record (other fields, e.g. ``best``, are left out)."""
        step = int(record["step"])
        if isinstance(record.get("val"), dict):
            values, prefix = record["val"], "val"
        else:
            values, prefix = record, "train"
        for name, value in values.items():
            if name == "step" or isinstance(value, bool) or not isinstance(value, numbers.Real):
                continue
            self._writer.add_scalar(f"{prefix}/{name}", float(value), step)

    def close(self) -> None:
        """Flush the events to disk and close the file."""
        self._writer.close()
