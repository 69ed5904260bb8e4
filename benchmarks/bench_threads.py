"""The default thread count under load: ``cluster``, ``evaluate`` and ``train`` beside one busy
process, default threads against ``--threads 1`` (and against PyTorch's own default).

One competing process (``python -c "while True: pass"``, one busy core) runs for the whole
benchmark. Each command runs as its own process, wall time from start to exit, ``--repeats``
times per setting, the settings interleaved in rotating order:

* ``default``: no ``--threads`` (metaunsup picks the idle CPUs, ``metaunsup.training.threads``);
* ``1``: ``--threads 1``;
* ``torch``: ``--threads N`` with ``N`` PyTorch's own default (the physical cores), what the
  commands used before.

Commands: ``cluster`` of the 1797 scikit-learn digits (``.npy``) into 10 clusters with 30
meta-training steps; ``evaluate --checkpoint mnist`` on 50 MNIST test tasks of 10 × 20;
``train configs/omniglot-maml-5w1s.toml --steps 10`` (its final validation included). The
thread count the default chose is read from the command's log (``-v``). The goal: the default
at most 1.2× the time of ``--threads 1``.

Run: ``python benchmarks/bench_threads.py [--repeats 3] [--json PATH]`` (MNIST and Omniglot
under ``METAUNSUP_DATA``).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits

from _record import write_record

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def commands(tmp: Path) -> dict[str, list[str]]:
    digits = tmp / "digits.npy"
    np.save(digits, load_digits().data)
    cluster = f"cluster {digits} --k 10 --meta-steps 30 --quiet --out {tmp / 'labels.csv'}"
    evaluate = "evaluate --dataset mnist --split test --checkpoint mnist --tasks 50 --quiet"
    config = ROOT / "configs" / "omniglot-maml-5w1s.toml"
    train = f"train {config} --steps 10 --out {tmp / 'run'} --overwrite --quiet"
    return {"cluster": cluster.split(), "evaluate": evaluate.split(), "train": train.split()}


def run(args: list[str], setting: str, torch_threads: int) -> tuple[float, int | None]:
    threads = {"default": [], "1": ["--threads", "1"], "torch": ["--threads", str(torch_threads)]}
    extra = threads[setting]
    cmd = [sys.executable, "-m", "metaunsup", "-v", *args, *extra]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr}")
    found = re.search(r"torch threads: (\d+)", done.stderr)
    return seconds, int(found.group(1)) if found else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--commands", nargs="+", default=["cluster", "evaluate", "train"])
    parser.add_argument("--json", type=Path, default=RESULTS / "bench_threads.json")
    args = parser.parse_args(argv)
    torch_threads = torch.get_num_threads()
    settings = ("default", "1", "torch")
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    rows = []
    try:
        time.sleep(1.0)  # the competitor is running before anything is measured
        with tempfile.TemporaryDirectory() as tmp:
            cmds = commands(Path(tmp))
            for name in args.commands:
                times: dict[str, list[float]] = {s: [] for s in settings}
                chosen: list[int | None] = []
                for i in range(args.repeats):
                    for j in range(len(settings)):
                        setting = settings[(i + j) % len(settings)]
                        seconds, threads = run(cmds[name], setting, torch_threads)
                        times[setting].append(seconds)
                        if setting == "default":
                            chosen.append(threads)
                med = {s: statistics.median(v) for s, v in times.items()}
                rows.append({"command": name, "median_s": med, "times": times,
                             "default_threads": chosen,
                             "default_vs_1": med["default"] / med["1"],
                             "torch_vs_1": med["torch"] / med["1"]})  # fmt: skip
                line = f"default {med['default']:.1f} s (threads {chosen})"
                line += f", 1 thread {med['1']:.1f} s"
                print(f"{name}: {line}, torch's {med['torch']:.1f} s", file=sys.stderr)
    finally:
        busy.kill()
        busy.wait()
    lines = [
        f"| command | --threads 1 (s) | default (s) | default / 1 | threads chosen "
        f"| torch's default ({torch_threads}) (s) | torch's / 1 |",
        "|---|---:|---:|---:|---|---:|---:|",
    ]
    for r in rows:
        m = r["median_s"]
        lines.append(
            f"| {r['command']} | {m['1']:.1f} | {m['default']:.1f} | {r['default_vs_1']:.2f}× "
            f"| {r['default_threads']} | {m['torch']:.1f} | {r['torch_vs_1']:.2f}× |"
        )
    table = "\n".join(lines)
    print(table)
    write_record(
        "bench_threads",
        argv,
        args.json,
        cpus=os.cpu_count(),
        torch_default_threads=torch_threads,
        competitor="one process: python -c 'while True: pass'",
        load_average_at_end=os.getloadavg(),
        torch=torch.__version__,
        python=platform.python_version(),
        rows=rows,
        table=table,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
