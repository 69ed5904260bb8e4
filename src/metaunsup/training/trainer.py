"""The Trainer: the one outer loop of metaunsup.

Meta-training of every learner, SimCLR pre-training of a backbone and the estimator's
self-training on the user's data all run here. The Trainer knows nothing about any algorithm:
each step it draws a batch from a task source, asks an *objective* for ``(loss, metrics)``, and
steps the optimiser. Around that it validates on fixed meta-validation tasks (keeping the best
checkpoint), writes one JSON line per step, shows a progress bar, stops with one policy when the
loss diverges (:class:`~metaunsup.errors.TrainingDivergedError`, naming the setting to lower),
and checkpoints atomically so that ``resume`` continues at the exact step: an interrupted run
and an uninterrupted one with the same seed end with the same weights.

Distributed runs (:mod:`metaunsup.training.distributed`) hook in at three places: the
weights are made equal at the start, the gradients (and metrics) are summed over processes
after every backward pass, and only rank 0 validates, logs and writes checkpoints. The loop
itself is the same.

Task sources are duck-typed: ``sample(n) -> batch`` (anything with ``.to(device)``) plus
``state_dict()`` / ``load_state_dict()`` (tensors and JSON scalars) so that their randomness is
saved and restored with the checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn

from metaunsup.checkpoint import load_model_state, read_checkpoint, save_checkpoint
from metaunsup.errors import CheckpointError, ConfigError, TrainingDivergedError
from metaunsup.training.config import TrainConfig

if TYPE_CHECKING:
    from metaunsup.training.distributed import Distributed
    from metaunsup.training.tensorboard_log import TensorBoardLog

log = logging.getLogger(__name__)

LAST = "last.safetensors"
BEST = "best.safetensors"
LOG = "train_log.jsonl"

#: ``objective(batch) -> (scalar loss, metrics)``, differentiable w.r.t. the model's parameters.
Objective = Callable[[Any], tuple[torch.Tensor, dict[str, float]]]


class TaskSource(Protocol):
    """Where training batches come from."""

    def sample(self, n_tasks: int) -> Any: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class TrainResult:
    """What a finished run reports (``losses``: every step's loss run in this process)."""

    steps: int
    seconds: float
    best_step: int
    best_metric: float
    last_metrics: dict[str, float]
    out_dir: Path | None
    losses: list[float] = field(default_factory=list)


class Trainer:
    """Runs an outer training loop.

    Parameters
    ----------
    model:
        The module whose trainable parameters the optimiser steps (a meta-learner, or a
        pre-training objective holding a backbone and its projection head).
    objective:
        ``objective(batch) -> (loss, metrics)``, e.g. ``learner.meta_loss``.
    source:
        Task source (see :class:`TaskSource`); ``settings.meta_batch`` is what each step asks
        it for.
    settings:
        Steps, batch size, optimiser and cadence (a :class:`~metaunsup.training.config.TrainConfig`;
        its ``seed``, ``device`` and ``threads`` are applied by the caller).
    out_dir:
        Folder for ``last.safetensors``, ``best.safetensors`` and ``train_log.jsonl``;
        ``None`` trains in memory (no log, no checkpoints, no resume).
    identity:
        JSON that every checkpoint stores and that a resume must find unchanged (e.g.
        ``{"learner": learner.config()}``: resuming with another model is refused).
    describe:
        More JSON stored in every checkpoint but not compared (e.g. the run's configuration).
    validate:
        Optional ``validate(model) -> dict`` of metrics on fixed meta-validation tasks; its
        ``settings.val_metric`` (higher is better) picks the best checkpoint.
    progress:
        Show a progress bar (with ETA and the running metrics) when stderr is a terminal.
    tensorboard:
        Optional folder for TensorBoard event files of the same records as the JSONL log
        (:class:`~metaunsup.training.tensorboard_log.TensorBoardLog`; needs the
        ``tensorboard`` package).
    name:
        What is trained, for the progress bar, the log and error messages.
    remedy:
        What a user should change when the loss diverges, e.g. ``"lower train.lr or set
        train.grad_clip"``.
    distributed:
        This process's place in a distributed run
        (:class:`~metaunsup.training.distributed.Distributed`), whose ``source`` is already
        sharded; ``None``: one process.
    """

    def __init__(
        self,
        model: nn.Module,
        objective: Objective,
        source: TaskSource,
        settings: TrainConfig,
        out_dir: str | Path | None = None,
        *,
        identity: dict[str, Any] | None = None,
        describe: dict[str, Any] | None = None,
        validate: Callable[[Any], dict[str, float]] | None = None,
        device: str | torch.device = "cpu",
        progress: bool = True,
        tensorboard: str | Path | None = None,
        name: str = "meta-train",
        remedy: str = "lower train.lr or set train.grad_clip",
        distributed: Distributed | None = None,
    ) -> None:
        self.model = model.to(device)
        self.objective = objective
        self.source = source
        self.settings = settings
        self.out_dir = None if out_dir is None else Path(out_dir)
        self.identity = dict(identity or {})
        self.describe = dict(describe or {})
        self.validate = validate
        self.device = torch.device(device)
        self.progress = progress
        self.tensorboard = tensorboard
        self.name = name
        self.remedy = remedy
        self._tb: TensorBoardLog | None = None
        self.distributed = distributed
        #: Whether this process writes the log and checkpoints (rank 0 of a distributed run).
        self.writes = self.out_dir is not None and (distributed is None or distributed.writer)
        self.optimizer = self._make_optimizer()
        self.step = 0
        self.best_metric = -math.inf
        self.best_step = 0
        self.seconds = 0.0
        self.losses: list[float] = []
        #: The moving average of the weights (``settings.ema``), ``None`` without one.
        self.ema: dict[str, torch.Tensor] | None = None
        if settings.ema > 0:
            self.ema = {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    # ------------------------------------------------------------------ set-up
    def _make_optimizer(self) -> torch.optim.Optimizer:
        params = [p for p in self.model.parameters() if p.requires_grad]
        if self.settings.optimizer == "adam":
            return torch.optim.Adam(params, lr=self.settings.lr)
        if self.settings.optimizer == "sgd":
            return torch.optim.SGD(params, lr=self.settings.lr)
        raise ConfigError(f"unknown optimizer {self.settings.optimizer!r}")

    def _lr_at(self, step: int) -> float:
        s = self.settings
        if s.lr_decay_steps <= 0:
            return s.lr
        return s.lr * s.lr_decay ** (step // s.lr_decay_steps)

    # ------------------------------------------------------------------ loop
    def fit(self, resume: bool = False) -> TrainResult:
        """Train until ``settings.steps``; with ``resume`` continue from ``out_dir/last``."""
        log_file = self._open_log(resume)
        metrics: dict[str, float] = {}
        if self.distributed is not None:
            self.distributed.prepare(self.model)
        if self.tensorboard is not None and self.writes:
            from metaunsup.training.tensorboard_log import TensorBoardLog

            self._tb = TensorBoardLog(self.tensorboard, first_step=self.step)
        bar = self._bar()
        try:
            while self.step < self.settings.steps:
                t0 = time.perf_counter()
                metrics = self._train_step()
                self.step += 1
                self.seconds += time.perf_counter() - t0
                self._after_step(metrics, log_file)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix({k: f"{v:.3f}" for k, v in metrics.items()}, refresh=False)
        finally:
            if log_file is not None:
                log_file.close()
            if self._tb is not None:
                self._tb.close()
                self._tb = None
            if bar is not None:
                bar.close()
        if self.ema is not None:  # the model as trained is the average
            self.model.load_state_dict(self.ema)
        if self.validate is None and self.writes:
            assert self.out_dir is not None
            self.save(self.out_dir / BEST, training=False)
        if self.validate is None:
            self.best_step = self.step
        if self.distributed is not None:
            self.distributed.finish()
        return TrainResult(
            steps=self.step,
            seconds=self.seconds,
            best_step=self.best_step,
            best_metric=self.best_metric,
            last_metrics=metrics,
            out_dir=self.out_dir,
            losses=self.losses,
        )

    def _open_log(self, resume: bool):
        """The JSONL log, opened for appending (``None`` in memory); resumes if asked."""
        if self.out_dir is None:
            if resume:
                raise ConfigError("resume needs an output folder")
            return None
        if self.writes:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        if resume:
            self._resume()
        if not self.writes:
            return None
        if not resume:
            (self.out_dir / LOG).write_text("")
        return (self.out_dir / LOG).open("a", encoding="utf-8")

    def _after_step(self, metrics: dict[str, float], log_file) -> None:
        """Log, validate and checkpoint at their cadences after step ``self.step``."""
        s, last = self.settings, self.step == self.settings.steps
        if self.step % s.log_every == 0 or last:
            record = {"step": self.step, "lr": self._lr_at(self.step - 1), **metrics}
            record["seconds"] = round(self.seconds, 4)
            self._record(record, log_file)
        every = max(1, s.steps // 10)
        if self.step % every == 0 or last:
            recent = self.losses[-every:]
            if recent:
                log.info("%s step %d/%d: loss %.5f", self.name, self.step, s.steps,
                         sum(recent) / len(recent))  # fmt: skip
        if not self.writes and self.out_dir is not None:
            return  # another rank validates and checkpoints
        if self.validate is not None and (self.step % s.val_every == 0 or last):
            self._validate(log_file)
        if self.out_dir is not None and (self.step % s.checkpoint_every == 0 or last):
            self.save(self.out_dir / LAST, training=True)

    def _train_step(self) -> dict[str, float]:
        self.model.train()
        for group in self.optimizer.param_groups:
            group["lr"] = self._lr_at(self.step)
        batch = self.source.sample(self.settings.meta_batch).to(self.device)
        loss, metrics = self.objective(batch)
        if self.distributed is None:
            self._check_finite(float(loss.detach()))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        value = float(loss.detach())
        metrics = {k: float(v) for k, v in metrics.items()}
        if self.distributed is not None:  # every process learns the same sums, or none
            share = self.distributed.share(self.settings.meta_batch)
            value, metrics = self.distributed.reduce(self.model, value, metrics, share)
            self._check_finite(value)
        if self.settings.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.settings.grad_clip)
        self.optimizer.step()
        self._update_ema()
        self.losses.append(value)
        return {"loss": value, **metrics}

    def _update_ema(self) -> None:
        """``ema ← d·ema + (1 − d)·weights`` for floating tensors (parameters, batch-norm
        statistics); counters are copied."""
        if self.ema is None:
            return
        decay = float(self.settings.ema)
        with torch.no_grad():
            for key, value in self.model.state_dict().items():
                if value.is_floating_point():
                    self.ema[key].mul_(decay).add_(value.detach(), alpha=1.0 - decay)
                else:
                    self.ema[key].copy_(value)

    @contextlib.contextmanager
    def _averaged(self) -> Iterator[None]:
        """The model holds the averaged weights inside the block (as it is without ``ema``),
        its raw weights again after."""
        if self.ema is None:
            yield
            return
        raw = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.model.load_state_dict(self.ema)
        try:
            yield
        finally:
            self.model.load_state_dict(raw)

    def _check_finite(self, value: float) -> None:
        if not math.isfinite(value):
            raise TrainingDivergedError(
                f"{self.name}: the loss became {value} at step {self.step + 1}; {self.remedy}"
            )

    def _record(self, record: dict[str, Any], log_file) -> None:
        """Append ``record`` to the JSONL log (and to TensorBoard when asked for)."""
        if log_file is not None:
            log_file.write(json.dumps(record) + "\n")
            log_file.flush()
        if self._tb is not None:
            self._tb.write(record)

    def _validate(self, log_file) -> None:
        assert self.validate is not None
        self.model.eval()
        with self._averaged():
            scores = self.validate(self.model)
        metric = float(scores[self.settings.val_metric])
        improved = metric > self.best_metric
        if improved:
            self.best_metric, self.best_step = metric, self.step
            if self.out_dir is not None:
                self.save(self.out_dir / BEST, training=False)
        self._record({"step": self.step, "val": scores, "best": improved}, log_file)
        log.info(
            "step %d: validation %s (best %.4f at %d)",
            self.step,
            scores,
            self.best_metric,
            self.best_step,
        )

    def _bar(self):
        if not self.progress or not sys.stderr.isatty() or not self._is_writer():
            return None
        from tqdm.auto import tqdm

        return tqdm(
            total=self.settings.steps,
            initial=self.step,
            desc=self.name,
            unit="step",
            dynamic_ncols=True,
        )

    def _is_writer(self) -> bool:
        return self.distributed is None or self.distributed.writer

    # ------------------------------------------------------------------ checkpoints
    def save(self, path: Path, training: bool) -> Path:
        """Write the model (and, with ``training``, everything needed to resume): the
        averaged weights as the model of a model checkpoint, the raw ones (with the average
        beside them) in a training checkpoint."""
        weights = self.model.state_dict() if training or self.ema is None else self.ema
        tensors = {f"model.{k}": v for k, v in weights.items()}
        if training and self.ema is not None:
            tensors.update({f"ema.{k}": v for k, v in self.ema.items()})
        meta: dict[str, Any] = {
            "kind": "training" if training else "model",
            **self.identity,
            **self.describe,
            "step": self.step,
            "seconds": self.seconds,
            "best_step": self.best_step,
            "best_metric": None if math.isinf(self.best_metric) else self.best_metric,
        }
        if training:
            opt_tensors, opt_meta = _optimizer_state(self.optimizer)
            tensors.update(opt_tensors)
            source_state = self.source.state_dict()
            for key, value in source_state.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"source.{key}"] = value
            meta["source"] = {
                k: v for k, v in source_state.items() if not isinstance(v, torch.Tensor)
            }
            tensors["rng.torch"] = torch.get_rng_state()
            meta["optimizer"] = opt_meta
        return save_checkpoint(path, tensors, meta)

    def _resume(self) -> None:
        assert self.out_dir is not None
        path = self.out_dir / LAST
        tensors, meta = read_training_state(path, self.identity)
        load_model_state(self.model, tensors, str(path))
        if self.ema is not None:
            saved = {k[len("ema.") :]: v for k, v in tensors.items() if k.startswith("ema.")}
            if saved.keys() != self.ema.keys():
                raise CheckpointError(f"{str(path)!r} holds no moving average of the weights")
            self.ema = {k: v.clone() for k, v in saved.items()}
        _load_optimizer_state(self.optimizer, tensors, meta["optimizer"], str(path))
        source_state = dict(meta.get("source", {}))
        source_state.update(
            {k[len("source.") :]: v for k, v in tensors.items() if k.startswith("source.")}
        )
        self.source.load_state_dict(source_state)
        torch.set_rng_state(tensors["rng.torch"])
        self.step = int(meta["step"])
        self.seconds = float(meta.get("seconds", 0.0))
        self.best_step = int(meta.get("best_step", 0))
        best = meta.get("best_metric")
        self.best_metric = -math.inf if best is None else float(best)
        if self.writes:
            _truncate_log(self.out_dir / LOG, self.step)
        log.info("resumed from %s at step %d", path, self.step)


def read_training_state(
    path: Path, identity: dict[str, Any]
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(tensors, meta)`` of the training checkpoint ``path`` that a Trainer of ``identity``
    can resume from; :class:`CheckpointError` when it is missing, corrupt, not a training state
    or of another identity. A run checks this before any work (see
    :func:`metaunsup.training.build.train_run`), the Trainer again when it resumes."""
    if not path.is_file():
        raise CheckpointError(f"cannot resume: {str(path)!r} not found (start without --resume)")
    tensors, meta = read_checkpoint(path)
    if meta.get("kind") != "training":
        raise CheckpointError(f"{str(path)!r} holds no training state to resume from")
    if any(meta.get(key) != value for key, value in identity.items()):
        raise CheckpointError(
            f"{str(path)!r} was written by another {' and '.join(identity)} "
            "configuration; use a new --out folder or the config it was trained with"
        )
    return tensors, meta


def _optimizer_state(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    state = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{key}"] = value
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _load_optimizer_state(
    opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict, name: str
) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, field = key.split(".", 2)
            state.setdefault(int(idx), {})[field] = value
    for idx, values in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(values)
    try:
        opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    except (ValueError, KeyError) as err:
        raise CheckpointError(f"optimizer state in {name!r} does not fit: {err}") from None


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines written after ``step`` (they will be redone after a resume)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                kept.append(line)
        except json.JSONDecodeError:
            break
    path.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")
