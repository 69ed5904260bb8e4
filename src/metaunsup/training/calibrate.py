"""The last step of a run whose learner is calibrated (the null table of pseudo-normal scores,
:mod:`metaunsup.evaluation.calibration`): the one-class kinds' runs, and the runs of an anomaly
scorer with a null table that meta-trains on tasks of another kind (Meta-GMVAE on few-shot
pseudo-tasks), calibrated on one-class tasks of the same training data
(:func:`run_calibrator`).

After the Trainer has written ``best.safetensors`` and ``last.safetensors``, the run's
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
from metaunsup.evaluation.anomaly import calibrate_on_training_data
from metaunsup.evaluation.kinds import task_kind
from metaunsup.learners import AnomalyScorer, MetaLearner
from metaunsup.learners.one_class import NULL_STAT_CODES, NullTableMixin
from metaunsup.training.trainer import BEST, LAST

__all__ = ["CALIBRATION_SEED_OFFSET", "Calibrator", "calibrate_run", "run_calibrator"]

log = logging.getLogger(__name__)

#: Offset of the calibration tasks' seed from the run's (distinct from training and validation).
CALIBRATION_SEED_OFFSET = 2_000_003


#: A calibration step: ``calibrate(learner, training task source, seed)`` sets its buffers.
Calibrator = Callable[[MetaLearner, Any, int], None]


def run_calibrator(kind: str, learner: MetaLearner) -> Calibrator | None:
    """The calibration step of a run of task kind ``kind`` with ``learner``: the kind's own
    (one-class kinds), else, for an anomaly scorer that carries a null table, its measurement
    on one-class tasks of the training data
    (:func:`~metaunsup.evaluation.anomaly.calibrate_on_training_data`); ``None``: nothing to
    calibrate."""
    own = task_kind(kind).calibrate
    if own is not None:
        return own
    if isinstance(learner, NullTableMixin) and isinstance(learner, AnomalyScorer):
        return calibrate_on_training_data
    return None


def _weights(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The model's tensors without its calibration buffers (``null_*``)."""
    return {k: v for k, v in tensors.items() if k.startswith("model.") and ".null_" not in k}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _calibrated(tensors: dict[str, torch.Tensor]) -> bool:
    """Whether the checkpoint holds a null table measured with this version's statistic (one
    saved before ``null_stat`` existed is stale: see :mod:`metaunsup.evaluation.calibration`)."""
    scores = tensors.get("model.null_scores")
    stat = tensors.get("model.null_stat")
    current = NULL_STAT_CODES.index("max")
    measured = scores is not None and bool(torch.isfinite(scores).all(1).any())
    return measured and stat is not None and int(stat) == current


def calibrate_run(
    calibrate: Calibrator,
    learner: MetaLearner,
    source: Any,
    out_dir: Path,
    seed: int,
) -> None:
    """Calibrate the run's last and best weights and rewrite the checkpoints that need it (none
    or a stale calibration; a checkpoint with the weights of an already calibrated one gets its
    buffers)."""
    start = time.perf_counter()
    done: list[tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]] = []  # (weights, state)
    paths = [out_dir / name for name in (LAST, BEST) if (out_dir / name).is_file()]
    loaded = {path: read_checkpoint(path) for path in paths}
    for tensors, _ in loaded.values():
        if _calibrated(tensors):
            model = {k: v for k, v in tensors.items() if k.startswith("model.")}
            done.append((_weights(tensors), model))
    for path, (tensors, meta) in loaded.items():
        if _calibrated(tensors):
            continue
        weights = _weights(tensors)
        state: dict[str, torch.Tensor] | None = next(
            (st for w, st in done if _same(w, weights)), None
        )
        if state is None:
            load_model_state(learner, tensors, str(path))
            learner.eval()
            calibrate(learner, source, seed + CALIBRATION_SEED_OFFSET)
            state = {f"model.{k}": v for k, v in learner.state_dict().items()}
            done.append((weights, state))
        tensors.update(state)
        save_checkpoint(path, tensors, meta)
    log.info("calibrated %s in %.1f s", out_dir, time.perf_counter() - start)
