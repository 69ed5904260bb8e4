"""Peak memory of ``metaunsup evaluate`` against the number of tasks (it should not grow).

Each run is ``metaunsup evaluate --dataset digits --split test --task clustering --n-way 5
--k-shot 10 --checkpoint digits --method kmeans --tasks N --threads 1`` (the packaged
Meta-K-means model beside K-means, both on every task), in a fresh process whose peak resident
memory (``VmHWM``, the whole run: imports, data, model, all chunks) is reported with its wall
time. Small tasks (5 × 10 digits) keep 100,000 tasks within minutes; the protocol streams the
same way for any task shape. glibc's ``mmap`` threshold is fixed at 64 KiB in the child (see
``bench_inner_memory.py``) so the figure is the peak of live memory.

Run: ``python benchmarks/bench_eval_memory.py [--tasks 1000 100000] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from _record import write_record

RESULTS = Path(__file__).resolve().parent / "results"
ARGS = [
    "evaluate",
    "--dataset",
    "digits",
    "--split",
    "test",
    "--task",
    "clustering",
    "--n-way",
    "5",
    "--k-shot",
    "10",
    "--checkpoint",
    "digits",
    "--method",
    "kmeans",
    "--threads",
    "1",
    "--quiet",
]


def child(tasks: int, out: Path) -> None:
    """Run the evaluation in this process, then print its peak and final resident memory."""
    from metaunsup.app.cli import main
    from peak_memory import _status

    t0 = time.perf_counter()
    status = main([*ARGS, "--tasks", str(tasks), "--json", str(out)])
    seconds = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "tasks": tasks,
                "status": status,
                "seconds": seconds,
                "peak_mb": _status("VmHWM") / 2**20,
                "report": json.loads(out.read_text()),
            }
        )
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, nargs="+", default=[1000, 100_000])
    parser.add_argument("--json", type=Path, default=RESULTS / "bench_eval_memory.json")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.child_out)
        return 0
    rows = []
    for n in args.tasks:
        out = args.json.with_name(f".eval_{n}.json")
        env = {"MALLOC_MMAP_THRESHOLD_": "65536", **os.environ}
        cmd = [sys.executable, __file__, "--child", str(n), "--child-out", str(out)]
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        out.unlink(missing_ok=True)
        if done.returncode != 0:
            raise SystemExit(done.stderr)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"{n:>7d} tasks: peak {r['peak_mb']:.1f} MB, {r['seconds']:.0f} s", file=sys.stderr)
    base = rows[0]["peak_mb"]
    lines = ["| tasks | peak MB (whole process) | vs first | seconds |", "|---:|---:|---:|---:|"]
    lines += [
        f"| {r['tasks']} | {r['peak_mb']:.1f} | {r['peak_mb'] / base:.3f}× | {r['seconds']:.0f} |"
        for r in rows
    ]
    table = "\n".join(lines)
    print(table)
    write_record(
        "bench_eval_memory",
        argv,
        args.json,
        evaluate="metaunsup " + " ".join(ARGS) + " --tasks N",
        python=platform.python_version(),
        machine=platform.processor() or platform.machine(),
        rows=rows,
        table=table,
    )
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    raise SystemExit(main())
