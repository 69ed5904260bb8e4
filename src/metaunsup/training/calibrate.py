"""The last step of a run whose task kind calibrates its learner (one-class kinds: the null
table of pseudo-normal scores, :mod:`metaunsup.evaluation.calibration`).

After the Trainer has written ``best.safetensors`` and ``last.safetensors``, the kind's
``calibrate(learner, source, seed)`` runs on the weights of each (once when they are the same
weights) and the checkpoints are rewritten with the learner's new buffers; nothing else in them
changes, so a resumed or extended run still continues exactly.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from metaunsup.checkpoint import load_model_state, read_checkpoint, save_checkpoint
from metaunsup.learners import MetaLearner
from metaunsup.training.trainer import BEST, LAST

__all__ = ["CALIBRATION_SEED_OFFSET", "calibrate_run"]

log = logging.getLogger(__name__)

#: Offset of the calibration tasks' seed from the run's (distinct from training and validation).
CALIBRATION_SEED_OFFSET = 2_000_003


def _same_model(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    keys = {k for k in a if k.startswith("model.")}
    return keys == {k for k in b if k.startswith("model.")} and all(
        torch.equal(a[k], b[k]) for k in keys
    )


def calibrate_run(
    calibrate: Callable[[MetaLearner, Any, int], None],
    learner: MetaLearner,
    source: Any,
    out_dir: Path,
    seed: int,
) -> None:
    """Calibrate the run's last and best weights and rewrite both checkpoints."""
    start = time.perf_counter()
    done: dict[str, torch.Tensor] | None = None
    previous: dict[str, torch.Tensor] | None = None
    for name in (LAST, BEST):
        path = out_dir / name
        if not path.is_file():
            continue
        tensors, meta = read_checkpoint(path)
        if previous is not None and done is not None and _same_model(tensors, previous):
            state = done
        else:
            previous = dict(tensors)
            load_model_state(learner, tensors, str(path))
            learner.eval()
            calibrate(learner, source, seed + CALIBRATION_SEED_OFFSET)
            state = {f"model.{k}": v for k, v in learner.state_dict().items()}
            done = state
        tensors.update(state)
        save_checkpoint(path, tensors, meta)
    log.info("calibrated %s in %.1f s", out_dir, time.perf_counter() - start)
