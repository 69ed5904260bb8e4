"""Peak memory of one MAML-family meta-step against the number of inner steps, with the peers.

Setting (as ``bench_meta_step.py``): Conv4-64 with batch norm (batch statistics), 28×28
single-channel images, 5-way 1-shot with 15 queries per class, meta-batch 4, inner step size
0.1 (small enough that 50 steps stay finite), the same initial weights and tasks for all.
One meta-step = meta-loss + backward (no optimiser step). Implementations:

* ``maml``: metaunsup second-order MAML (graph of every inner step stored);
* ``maml-tasks``: the same with ``task_by_task = true`` (the meta-batch's tasks differentiated
  one after the other: one task's graph alive at a time, as in the peers' loops);
* ``maml-ckpt``: the same with ``inner_checkpoint = true`` (recomputed in backward);
* ``fomaml``: first-order MAML;
* ``imaml``: implicit MAML (``lam = 1``, 5 conjugate-gradient steps);
* ``learn2learn``: ``l2l.algorithms.MAML(first_order=False)``, the usual loop over tasks
  (``clone``, ``adapt`` per step, query loss / B, ``backward`` per task);
* ``higher``: ``higher.innerloop_ctx`` second order, the same loop.

Each (implementation, inner steps) runs in a fresh process; the figure is the peak resident
memory above what the process held after set-up (model, optimiser-free learner, tasks,
library imports), see ``peak_memory.py``; on CUDA (``--device cuda``) the peak of
``torch.cuda.max_memory_allocated``. The processes run with glibc's ``mmap`` threshold fixed at
64 KiB (``MALLOC_MMAP_THRESHOLD_``, unless set already): with its default, dynamic threshold,
freed blocks stay resident depending on the order of earlier frees, which moved the same
measurement by ±20 MB from run to run; fixed, large tensors return to the system when freed
and the figure is the peak of live memory, the same in every run. The first meta-step of the
process is measured (so one-time allocations such as oneDNN's primitive caches count for every
implementation alike); its wall time is recorded too, for orientation only
(``bench_meta_step.py`` times steps).

learn2learn 0.2.0 does not build from its sdist on Python 3.11 (its pre-generated C files
include ``longintrepr.h``); it builds after regenerating them with a current Cython, and its
top-level import needs torchvision and gym. This script imports only its MAML (pure Python:
``algorithms/maml.py``, ``algorithms/base_learner.py``, ``utils``) from wherever
``learn2learn`` is installed, without running the package's ``__init__``.

Run: ``python benchmarks/bench_inner_memory.py [--steps 1 5 10 20 50] [--threads 1]
[--device cpu] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import types
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_meta_step import N_QUERY, N_WAY, SIZE, load_images, peer_model, sample_batch
from metaunsup.learners import IMAML, MAML
from metaunsup.nets import Conv4
from peak_memory import measure

RESULTS = Path(__file__).resolve().parent / "results"
IMPLS = ("maml", "maml-tasks", "maml-ckpt", "fomaml", "imaml", "learn2learn", "higher")
INNER_LR = 0.1


def learn2learn_maml():
    """learn2learn's ``MAML`` class without the package's heavy ``__init__`` (see module doc);
    ``None`` when learn2learn is not installed."""
    loaded = sys.modules.get("learn2learn.algorithms.maml")
    if loaded is not None:
        return loaded.MAML
    spec = importlib.util.find_spec("learn2learn")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations)))
    for name, path in (("learn2learn", root), ("learn2learn.algorithms", root / "algorithms")):
        if name not in sys.modules:
            module = types.ModuleType(name)
            module.__path__ = [str(path)]
            sys.modules[name] = module
    from learn2learn.algorithms.maml import MAML as L2LMAML

    return L2LMAML


def learn2learn_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("learn2learn")
    except Exception:
        return None


def make_step(impl: str, steps: int, net: Conv4, device: str):
    """A zero-argument meta-step for ``impl`` (its set-up done here, before measuring)."""
    if impl in ("maml", "maml-tasks", "maml-ckpt", "fomaml"):
        learner = MAML(
            net,
            inner_lr=INNER_LR,
            inner_steps=steps,
            first_order=impl == "fomaml",
            inner_checkpoint=impl == "maml-ckpt",
            task_by_task=impl == "maml-tasks",
        ).to(device)
        return lambda batch: learner.meta_loss(batch)[0].backward()
    if impl == "imaml":
        learner = IMAML(net, inner_lr=INNER_LR, inner_steps=steps, lam=1.0, cg_steps=5)
        learner = learner.to(device)
        return lambda batch: learner.meta_loss(batch)[0].backward()
    model = peer_model(net).to(device)
    if impl == "learn2learn":
        L2LMAML = learn2learn_maml()
        if L2LMAML is None:
            raise SystemExit("learn2learn is not installed")
        maml = L2LMAML(model, lr=INNER_LR, first_order=False)

        def l2l_step(batch):
            sx, sy, qx, qy = batch.support_x, batch.support_y, batch.query_x, batch.query_y
            for t in range(batch.n_tasks):
                learner = maml.clone()
                for _ in range(steps):
                    learner.adapt(F.cross_entropy(learner(sx[t]), sy[t]))
                (F.cross_entropy(learner(qx[t]), qy[t]) / batch.n_tasks).backward()

        return l2l_step
    if impl == "higher":
        import higher

        opt = torch.optim.SGD(model.parameters(), lr=INNER_LR)

        def higher_step(batch):
            sx, sy, qx, qy = batch.support_x, batch.support_y, batch.query_x, batch.query_y
            for t in range(batch.n_tasks):
                with higher.innerloop_ctx(model, opt, copy_initial_weights=False) as (fm, diffopt):
                    for _ in range(steps):
                        diffopt.step(F.cross_entropy(fm(sx[t]), sy[t]))
                    (F.cross_entropy(fm(qx[t]), qy[t]) / batch.n_tasks).backward()

        return higher_step
    raise SystemExit(f"unknown implementation {impl!r}")


def child(impl: str, steps: int, threads: int, device: str, seed: int) -> dict:
    """One measurement in this (fresh) process."""
    torch.set_num_threads(threads)
    x, y, source = load_images(seed)
    batch = sample_batch(x, y, torch.Generator().manual_seed(seed)).to(device)
    torch.manual_seed(seed)
    net = Conv4(1, N_WAY, hidden=64, image_size=SIZE, norm="batch").to(device)
    step = make_step(impl, steps, net, device)
    peak, seconds, _ = measure(lambda: step(batch), device)
    return {"impl": impl, "inner_steps": steps, "peak_mb": peak, "seconds": seconds, "data": source}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 5, 10, 20, 50])
    parser.add_argument("--impls", nargs="+", default=list(IMPLS), choices=IMPLS)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=RESULTS / "bench_inner_memory.json")
    parser.add_argument("--child", nargs=2, metavar=("IMPL", "STEPS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        record = child(args.child[0], int(args.child[1]), args.threads, args.device, args.seed)
        print(json.dumps(record))
        return 0
    impls = [i for i in args.impls if i != "learn2learn" or learn2learn_maml() is not None]
    rows = []
    for impl in impls:
        for steps in args.steps:
            cmd = [sys.executable, __file__, "--child", impl, str(steps)]
            cmd += ["--threads", str(args.threads), "--device", args.device]
            env = {"MALLOC_MMAP_THRESHOLD_": "65536", **os.environ}
            done = subprocess.run(
                [*cmd, "--seed", str(args.seed)],
                capture_output=True,
                text=True,
                timeout=1800,
                env=env,
            )
            if done.returncode != 0:
                tail = done.stderr.strip().splitlines()[-1:] or ["(no output)"]
                rows.append({"impl": impl, "inner_steps": steps, "error": tail[0]})
                print(f"{impl} {steps}: failed: {tail[0]}", file=sys.stderr)
                continue
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"{impl:12s} {steps:3d} steps: {rows[-1]['peak_mb']:8.1f} MB", file=sys.stderr)
    table = _table(rows, args.steps, impls)
    print(table)
    record = {
        "benchmark": "bench_inner_memory",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python benchmarks/bench_inner_memory.py " + " ".join(argv or sys.argv[1:]),
        "torch": torch.__version__,
        "learn2learn": learn2learn_version(),
        "python": platform.python_version(),
        "machine": platform.processor() or platform.machine(),
        "device": args.device,
        "threads": args.threads,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(default)"),
        "malloc_mmap_threshold": os.environ.get("MALLOC_MMAP_THRESHOLD_", "65536"),
        "setting": {
            "net": "conv4-64 batchnorm",
            "image": [1, SIZE, SIZE],
            "n_way": N_WAY,
            "k_shot": 1,
            "n_query": N_QUERY,
            "meta_batch": 4,
            "inner_lr": INNER_LR,
        },
        "rows": rows,
        "table": table,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


def _table(rows: list[dict], steps: list[int], impls: list[str]) -> str:
    peak = {(r["impl"], r["inner_steps"]): r.get("peak_mb") for r in rows}
    head = " | ".join(f"{s} steps" for s in steps)
    lines = [
        f"| implementation | {head} | {steps[-1]} / {steps[0]} |",
        "|---|" + "---:|" * (len(steps) + 1),
    ]
    for impl in impls:
        cells = [f"{peak[(impl, s)]:.0f}" if peak.get((impl, s)) else "–" for s in steps]
        first, last = peak.get((impl, steps[0])), peak.get((impl, steps[-1]))
        ratio = f"{last / first:.2f}×" if first and last else "–"
        lines.append(f"| {impl} | {' | '.join(cells)} | {ratio} |")
    return "\n".join(lines) + "\n\npeak MB above set-up of one meta-step (meta-batch 4)"


if __name__ == "__main__":
    raise SystemExit(main())
