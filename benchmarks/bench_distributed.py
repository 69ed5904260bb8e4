"""Throughput of distributed meta-training: 1 process against 2 on this machine (gloo).

The run is ``configs/omniglot-maml-5w1s.toml`` (second-order MAML, Conv4-64, 5-way 1-shot,
15 queries, meta-batch 8) for ``--steps`` meta-steps, trained three ways with the same seed
and global meta-batch:

* ``1 process × 1 thread``;
* ``1 process × 2 threads`` (one process using both cores);
* ``2 processes × 1 thread`` (``metaunsup train --nproc 2``: 4 tasks each, one all-reduce
  per step).

Steps per second come from the run's own log (the Trainer's ``seconds``, which exclude data
loading, process start and validation), over the steps after ``--warmup``. The final weights
of the 2-process run are compared with the 1-process run's (float32: the largest absolute
difference after ``--steps`` Adam steps, the tolerance the docs state).

Run: ``python benchmarks/bench_distributed.py [--steps 40] [--warmup 5] [--json PATH]``
(needs Omniglot under ``METAUNSUP_DATA``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from _record import write_record
from metaunsup.checkpoint import read_checkpoint

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CONFIG = ROOT / "configs" / "omniglot-maml-5w1s.toml"
SETUPS = (
    ("1 process × 1 thread", 1, 1),
    ("1 process × 2 threads", 1, 2),
    ("2 processes × 1 thread", 2, 1),
)


def run(out: Path, nproc: int, threads: int, steps: int) -> float:
    cmd = [sys.executable, "-m", "metaunsup", "train", str(CONFIG), "--out", str(out)]
    cmd += ["--steps", str(steps), "--threads", str(threads), "--nproc", str(nproc), "--quiet"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    return 0.0


def seconds_by_step(out: Path) -> dict[int, float]:
    lines = (out / "train_log.jsonl").read_text().splitlines()
    return {r["step"]: r["seconds"] for r in map(json.loads, lines) if "seconds" in r}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--json", type=Path, default=RESULTS / "bench_distributed.json")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        weights = {}
        for name, nproc, threads in SETUPS:
            out = Path(tmp) / f"{nproc}x{threads}"
            run(out, nproc, threads, args.steps)
            s = seconds_by_step(out)
            rate = (args.steps - args.warmup) / (s[args.steps] - s[args.warmup])
            tensors, _ = read_checkpoint(out / "last.safetensors")
            weights[name] = {k: v for k, v in tensors.items() if k.startswith("model.")}
            rows.append(
                {"setup": name, "processes": nproc, "threads": threads, "steps_per_s": rate}
            )
            print(f"{name}: {rate:.3f} steps/s", file=sys.stderr)
        one, two = weights[SETUPS[0][0]], weights[SETUPS[2][0]]
        diff = max(float((one[k] - two[k]).abs().max()) for k in one)
        scale = max(float(one[k].abs().max()) for k in one)
    base = rows[0]["steps_per_s"]
    lines = ["| setup | meta-steps / s | vs 1 process × 1 thread |", "|---|---:|---:|"]
    lines += [
        f"| {r['setup']} | {r['steps_per_s']:.3f} | {r['steps_per_s'] / base:.2f}× |" for r in rows
    ]
    lines.append(
        f"\nfloat32, after {args.steps} steps: largest weight difference 2 processes vs 1: "
        f"{diff:.2e} (largest weight {scale:.2f})"
    )
    table = "\n".join(lines)
    print(table)
    write_record(
        "bench_distributed",
        argv,
        args.json,
        config=str(CONFIG.relative_to(ROOT)),
        torch=torch.__version__,
        python=platform.python_version(),
        cpus=os.cpu_count(),
        load_average_at_end=os.getloadavg(),
        rows=rows,
        float32_max_weight_difference=diff,
        table=table,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
