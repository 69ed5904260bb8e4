"""Distributed meta-training on ``torch.distributed``: one run, many processes, one result.

``metaunsup train CONFIG --nproc N`` starts ``N`` processes on this machine (:func:`launch`);
``torchrun --nnodes M --nproc-per-node N -m metaunsup train CONFIG`` starts them on ``M``
machines. Either way every process reads its place from the environment torchrun defines
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) and
:func:`from_environment` joins the process group (``gloo`` on CPU, ``nccl`` on CUDA, one GPU
per local rank).

How a meta-step is shared (:class:`Distributed`):

* **Tasks.** Every process holds the same seeded task stream and draws the *global* meta-batch
  from it, then keeps its own contiguous block of rows (:class:`ShardedSource`): the union of
  the blocks is exactly the batch one process would draw, and the streams stay in step, so a
  checkpoint of rank 0's stream is every rank's.
* **Gradients.** Each process back-propagates the mean loss of its ``B_r`` tasks; its
  gradients, scaled by ``B_r / B``, and its metrics are summed over processes in *one*
  ``all_reduce`` per meta-step. A loss that is a mean over tasks (every built-in meta-loss
  with a fixed number of queries per task) then gets exactly the one-process meta-gradient,
  up to the order of the floating-point sums. Every process steps the same optimiser on the
  same gradient, so the weights stay equal without being sent.
* **Rank 0** validates, logs and writes the atomic checkpoints; the others only read them
  (``--resume``: the run folder must be reachable from every machine).
* **Failures.** Collectives time out after ``timeout`` seconds, and a process whose peer died
  stops with :class:`DistributedError` (one line: which rank, what to do) instead of hanging;
  :func:`launch` stops the other processes as soon as one fails.

Exact equality with the one-process run needs a meta-loss that draws no randomness of its own
during meta-training (Meta-GMVAE's sampling noise, for example, comes from one stream per
process and differs).
"""

from __future__ import annotations

import datetime
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from metaunsup.errors import ConfigError, MetaUnsupError

__all__ = [
    "DEFAULT_TIMEOUT",
    "Distributed",
    "DistributedError",
    "ShardedSource",
    "from_environment",
    "launch",
    "set_threads",
    "shard_rows",
]

log = logging.getLogger(__name__)

#: Seconds a collective waits for the other processes before the run stops (rank 0's
#: validation and checkpoints happen between two collectives, so this bounds them too).
DEFAULT_TIMEOUT = 1800.0


class DistributedError(MetaUnsupError):
    """A distributed run could not go on: a process died, a collective timed out, or the
    process group could not be formed."""


def shard_rows(n: int, rank: int, world_size: int) -> slice:
    """The contiguous block of rows ``0..n-1`` that ``rank`` of ``world_size`` takes: sizes
    differ by at most one, lower ranks take the larger blocks."""
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (rank < extra))


class ShardedSource:
    """A task source of which this process keeps its block of every global batch.

    ``sample(n)`` draws the next ``n`` tasks from ``source`` (every process draws the same
    ones: their streams are seeded alike) and returns rows :func:`shard_rows` of them; the
    stream's state is therefore the same on every process.
    """

    def __init__(self, source: Any, rank: int, world_size: int) -> None:
        self.source, self.rank, self.world_size = source, rank, world_size

    def sample(self, n_tasks: int) -> Any:
        return self.source.sample(n_tasks)[shard_rows(n_tasks, self.rank, self.world_size)]

    def state_dict(self) -> dict[str, Any]:
        return self.source.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.source.load_state_dict(state)


@dataclass
class Distributed:
    """This process's place in a distributed run and the collectives the Trainer needs.

    The Trainer calls :meth:`prepare` once, :meth:`reduce` after every backward pass and
    :meth:`finish` at the end, and lets only the :attr:`writer` validate, log and save.
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    timeout: float = DEFAULT_TIMEOUT
    _slow_group: Any = None
    #: Set when a collective failed: the group is then left as it is (see :meth:`close`).
    broken: bool = False

    @property
    def writer(self) -> bool:
        """Whether this process validates, logs and writes checkpoints (rank 0)."""
        return self.rank == 0

    def shard(self, source: Any, meta_batch: int) -> ShardedSource:
        """``source`` as this process's share of each meta-batch of ``meta_batch`` tasks."""
        if meta_batch < self.world_size:
            raise ConfigError(
                f"train.meta_batch = {meta_batch} cannot be shared by {self.world_size} "
                f"processes; use at least {self.world_size} tasks per meta-step or fewer processes"
            )
        return ShardedSource(source, self.rank, self.world_size)

    def share(self, meta_batch: int) -> float:
        """This process's fraction of a meta-batch of ``meta_batch`` tasks."""
        rows = shard_rows(meta_batch, self.rank, self.world_size)
        return (rows.stop - rows.start) / meta_batch

    def prepare(self, model: nn.Module) -> None:
        """Start every process from rank 0's weights (they are equal when seeded alike; this
        makes it so whatever happened before)."""
        with self._guard("broadcasting the initial weights"):
            for tensor in model.state_dict().values():
                torch.distributed.broadcast(tensor.data, src=0)

    def reduce(
        self, model: nn.Module, loss: float, metrics: dict[str, float], share: float
    ) -> tuple[float, dict[str, float]]:
        """Sum ``share`` × (gradients, loss, metrics) over the processes, in one ``all_reduce``.

        ``share`` is this process's fraction of the meta-batch's tasks. Gradients are replaced
        in place by the sums; a parameter whose gradient is ``None`` on every process keeps
        ``None`` (so an optimiser skips it, as in one process). Returns the summed loss and
        metrics (the same on every process).
        """
        params = [p for p in model.parameters() if p.requires_grad]
        keys = sorted(metrics)
        dtype = next((p.grad.dtype for p in params if p.grad is not None), torch.float32)
        pieces = [
            (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).to(dtype) * share
            for p in params
        ]
        values = [loss * share, *(float(metrics[k]) * share for k in keys)]
        present = [float(p.grad is not None) for p in params]
        flat = torch.cat([*pieces, torch.tensor(values + present, dtype=dtype, device=self.device)])
        with self._guard("summing the meta-gradients"):
            torch.distributed.all_reduce(flat)
        start = 0
        for p in params:
            n = p.numel()
            p.grad = flat[start : start + n].view_as(p).to(p.dtype).clone()
            start += n
        tail = flat[start:].tolist()
        total, summed, counts = tail[0], tail[1 : 1 + len(keys)], tail[1 + len(keys) :]
        for p, count in zip(params, counts, strict=True):
            if count == 0:
                p.grad = None
        return total, dict(zip(keys, summed, strict=True))

    def wait_for_writer(self, what: str) -> None:
        """Wait (without the collectives' timeout) until rank 0 has done ``what``: a barrier
        on a ``gloo`` group of its own whose timeout is a day, for one-off work such as
        pre-training that may take longer than a meta-step's collective should."""
        if self._slow_group is None:
            self._slow_group = torch.distributed.new_group(
                backend="gloo", timeout=datetime.timedelta(days=1)
            )
        with self._guard(f"waiting for rank 0 ({what})"):
            torch.distributed.barrier(group=self._slow_group)

    def finish(self) -> None:
        """Wait for every process (rank 0's last checkpoint is then written)."""
        with self._guard("finishing"):
            torch.distributed.barrier()

    def _guard(self, what: str) -> _CollectiveGuard:
        return _CollectiveGuard(self, what)

    def close(self) -> None:
        """Leave the process group; after a failed collective it is not torn down (gloo can
        abort a process that closes connections a vanished peer left half-open)."""
        if torch.distributed.is_initialized() and not self.broken:
            torch.distributed.destroy_process_group()


class _CollectiveGuard:
    """Turns a failed or timed-out collective into one :class:`DistributedError` line."""

    def __init__(self, dist: Distributed, what: str) -> None:
        self.dist, self.what = dist, what

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type | None, err: BaseException | None, tb: Any) -> None:
        if err is None or not isinstance(err, RuntimeError | OSError):
            return
        d = self.dist
        d.broken = True
        raise DistributedError(
            f"rank {d.rank} of {d.world_size}: {self.what} failed, another process stopped or "
            f"did not answer within {d.timeout:g} s ({_first_line(err)}); the last checkpoint "
            "is kept: continue with --resume"
        ) from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else type(err).__name__


def from_environment(device: str, timeout: float = DEFAULT_TIMEOUT) -> Distributed | None:
    """Join the process group described by torchrun's environment variables; ``None`` when
    this is a single-process run (no ``WORLD_SIZE``, or 1).

    ``device`` is the run's ``train.device``: ``"cpu"`` uses ``gloo``; ``"cuda"`` uses
    ``nccl`` with GPU ``LOCAL_RANK`` of this machine.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return None
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    dev = torch.device(device)
    if dev.type == "cuda":
        if torch.cuda.device_count() <= local_rank:
            raise ConfigError(
                f"local rank {local_rank} needs GPU {local_rank}, but this machine has "
                f"{torch.cuda.device_count()}; start at most that many processes per machine"
            )
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
        backend = "nccl"
    else:
        backend = "gloo"
    dist = Distributed(rank, world_size, local_rank, dev, timeout)
    with dist._guard(f"joining the process group ({backend})"):
        torch.distributed.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout))
    log.info("rank %d of %d on %s (%s)", rank, world_size, dev, backend)
    return dist


def set_threads(threads: int, dist: Distributed | None) -> None:
    """Apply ``train.threads``; ``0`` (the default) gives each of the processes on this
    machine an equal share of its cores in a distributed run, and the idle CPUs
    (:func:`~metaunsup.training.threads.default_threads`) otherwise."""
    from metaunsup.training.threads import apply_threads

    if not threads and dist is not None:
        per_machine = int(os.environ.get("LOCAL_WORLD_SIZE", str(dist.world_size)))
        threads = max(1, (os.cpu_count() or 1) // max(1, per_machine))
    apply_threads(threads or None)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(nproc: int, args: Sequence[str], poll: float = 0.2) -> None:
    """Run ``python -m metaunsup ARGS`` as ``nproc`` processes of one run on this machine.

    Sets torchrun's variables for each (rank ``i`` of ``nproc``, a free local port), waits for
    all, and as soon as one fails stops the others and raises :class:`DistributedError`
    naming it. Rank 0 prints; the others' standard output is discarded (their errors still
    reach standard error).
    """
    port = _free_port()
    procs: list[subprocess.Popen] = []
    for rank in range(nproc):
        env = dict(os.environ)
        env.update(
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            WORLD_SIZE=str(nproc),
            LOCAL_WORLD_SIZE=str(nproc),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
        )
        out = None if rank == 0 else subprocess.DEVNULL
        procs.append(
            subprocess.Popen([sys.executable, "-m", "metaunsup", *args], env=env, stdout=out)
        )
    try:
        failed = _wait(procs, poll)
    except BaseException:
        _stop(procs)
        raise
    if failed is not None:
        rank, code = failed
        _stop(procs)
        how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
        raise DistributedError(
            f"rank {rank} of {nproc} {how}; the other processes were stopped and the last "
            "checkpoint is kept: continue with --resume"
        )


def _wait(procs: list[subprocess.Popen], poll: float) -> tuple[int, int] | None:
    """Wait until all processes end (``None``) or one fails: its rank and exit code.

    A peer's failure shows a moment after its cause, often within the same poll, so the
    failure reported is the likeliest cause (:func:`_likely_cause`), not the lowest rank.
    """
    while True:
        codes = [p.poll() for p in procs]
        failed = [(rank, c) for rank, c in enumerate(codes) if c is not None and c != 0]
        if failed:
            time.sleep(poll)
            codes = [p.poll() for p in procs]
            failed = [(rank, c) for rank, c in enumerate(codes) if c is not None and c != 0]
            return min(failed, key=_likely_cause)
        if all(code == 0 for code in codes):
            return None
        time.sleep(poll)


def _likely_cause(failure: tuple[int, int]) -> tuple[int, int]:
    """Sort key of a failed ``(rank, exit code)``: smallest for the likeliest cause.

    A process killed from outside (any signal but ``SIGABRT``) comes first; then one that
    aborted (gloo aborts a process whose peer vanished while it tears its connections down);
    then one that exited with a status (a rank whose collective failed because a peer stopped
    exits 2 after saying so). Ties go to the lowest rank.
    """
    rank, code = failure
    if code < 0:
        return (0 if -code != signal.SIGABRT else 1), rank
    return 2, rank


def _stop(procs: list[subprocess.Popen], grace: float = 5.0) -> None:
    """Terminate the processes still running (then kill those that do not stop)."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
