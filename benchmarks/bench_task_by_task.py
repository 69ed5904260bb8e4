"""Time of one MAML meta-step task-batched and ``task_by_task``, beside ``higher``'s loop.

The setting of ``bench_inner_memory.py`` (Conv4-64 with batch norm, 28×28 Omniglot images or
random ones, 5-way 1-shot + 15 queries, meta-batch 4, inner step size 0.1, second order): for
each number of inner steps, metaunsup's MAML with its default task-batched CPU step, the same
with ``task_by_task = true`` (each task differentiated in turn, one task's graph in memory:
see ``bench_inner_memory.py`` for the memory) and ``higher.innerloop_ctx`` (the usual loop
over tasks, backward per task) run one meta-step (meta-loss + backward) each in turn, after
one warm-up step, ``--repeats`` times; the medians and their ratios are reported. One process,
``--threads`` torch threads; the three are interleaved so that a change of the machine's load
touches them alike.

Run: ``python benchmarks/bench_task_by_task.py [--steps 1 5 10 20] [--repeats 12]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from _record import write_record
from bench_inner_memory import make_step
from bench_meta_step import N_WAY, SIZE, load_images, sample_batch
from metaunsup.nets import Conv4

RESULTS = Path(__file__).resolve().parent / "results"
IMPLS = ("maml", "maml-tasks", "higher")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 5, 10, 20])
    parser.add_argument("--repeats", type=int, default=12)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=RESULTS / "bench_task_by_task.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    x, y, source = load_images(args.seed)
    batch = sample_batch(x, y, torch.Generator().manual_seed(args.seed))
    rows = []
    for steps in args.steps:
        runs = {}
        for impl in IMPLS:
            torch.manual_seed(args.seed)
            net = Conv4(1, N_WAY, hidden=64, image_size=SIZE, norm="batch")
            runs[impl] = (net, make_step(impl, steps, net, "cpu"))
        times: dict[str, list[float]] = {impl: [] for impl in IMPLS}
        for repeat in range(args.repeats + 1):
            for impl, (net, step) in runs.items():
                net.zero_grad(set_to_none=True)
                t0 = time.perf_counter()
                step(batch)
                if repeat:  # the first round warms up
                    times[impl].append(time.perf_counter() - t0)
        med = {impl: statistics.median(t) for impl, t in times.items()}
        rows.append({"inner_steps": steps, "median_s": med, "times_s": times})
        print(f"{steps:3d} steps: " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in med.items()),
              file=sys.stderr, flush=True)  # fmt: skip
    lines = [
        "| inner steps | task-batched (ms) | task by task (ms) | task by task / batched "
        "| higher (ms) | higher / task by task |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        m = r["median_s"]
        lines.append(
            f"| {r['inner_steps']} | {m['maml'] * 1000:.0f} | {m['maml-tasks'] * 1000:.0f} "
            f"| {m['maml-tasks'] / m['maml']:.2f}× | {m['higher'] * 1000:.0f} "
            f"| {m['higher'] / m['maml-tasks']:.2f}× |"
        )
    table = "\n".join(lines)
    print(table)
    write_record(
        "bench_task_by_task",
        argv,
        args.json,
        data=source,
        threads=args.threads,
        repeats=args.repeats,
        rows=rows,
        table=table,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
