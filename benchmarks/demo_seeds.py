"""The demo's spread over seeds, and a diagnosis of its weak seeds.

Runs ``metaunsup demo --seed N --tasks T --threads 1`` for each seed (a fresh run each time,
in ``--work/seedN``), reads each ``results.json``, and reports the accuracy of the meta-trained
model and of its SimCLR pre-training alone (+ K-means) on the same test tasks. The demo's model
is its run's ``best.safetensors``: the final weights (the moving average of the weights with
``train.ema``), or, for a config that validates on held-out pseudo-tasks, the step that
validation chose, with the last step's weights scored on the same tasks beside it to show what
the choice changed. To say *why* a
seed is weak it then reads, after the fact, the labels of the digits the run's CACTUs
pseudo-classes were made from (the run never did): the Hungarian accuracy of each of its
partitions against the digits, and how many digits each partition merges with another (a digit
whose images mostly fall in a cluster that another digit dominates).

    OMP_WAIT_POLICY=PASSIVE python benchmarks/demo_seeds.py --seeds 0 1 2 3 4 5 6 7 8 9 --jobs 2

``--jobs`` runs that many seeds at once (each still on one thread).

Prints a table and writes ``docs/results/demo_seeds.md`` and ``.json`` (``--name``: another
file name, e.g. for seeds that were not used to choose the demo's settings).
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from metaunsup.data import load
from metaunsup.evaluation.clustering import evaluate_clustering, learner_method
from metaunsup.fileio import atomic_write_json, atomic_write_text
from metaunsup.learners import load_learner
from metaunsup.metrics import ari, clustering_accuracy
from metaunsup.tasks.pseudo.cactus import load_partitions
from metaunsup.training.unsupervised import PARTITIONS_FILE

ROOT = Path(__file__).resolve().parents[1]
MODEL = "meta-trained, no labels"
PRETRAINED = "network, pre-trained only"


def merged_digits(partition: np.ndarray, y: np.ndarray) -> int:
    """How many digits have no cluster of their own in ``partition``: the cluster holding most
    of the digit's images is dominated by another digit."""
    keep = partition >= 0
    p, t = partition[keep], y[keep]
    merged = 0
    for digit in np.unique(t):
        home = np.bincount(p[t == digit]).argmax()
        owner = np.bincount(t[p == home]).argmax()
        merged += owner != digit
    return int(merged)


def pseudo_class_quality(run: Path, y: np.ndarray) -> dict:
    parts = load_partitions(run / PARTITIONS_FILE)[0].numpy()
    accs = [clustering_accuracy(y[p >= 0], p[p >= 0]) for p in parts]
    merges = [merged_digits(p, y) for p in parts]
    pairs = [ari(a, b) for a, b in itertools.combinations(parts, 2)]
    return {
        # how alike the partitions are (1.0: one partition up to relabelling); reads no labels
        "partition_ari_mean": float(np.mean(pairs)) if pairs else 1.0,
        "partition_acc_mean": float(np.mean(accs)),
        "partition_acc_min": float(np.min(accs)),
        "partitions_merging_digits": int(sum(m > 0 for m in merges)),
        "partitions": len(merges),
    }


def checkpoint_choice(run: Path, seed: int, tasks: int) -> dict:
    """The step the run's validation kept, and the last step's accuracy on the demo's test
    tasks (the same tasks: ``seed``, ``tasks``); ``None`` without validation."""
    log = [json.loads(line) for line in (run / "train_log.jsonl").open()]
    kept = [r["step"] for r in log if r.get("best")]
    if not kept:
        return {"chosen_step": None, "last_step_acc": None}
    model = learner_method("last step", load_learner(run / "last.safetensors"))
    report = evaluate_clustering(
        load("digits", "test"), [model], n_way=10, k_shot=20, n_tasks=tasks, seed=seed
    ).to_json()
    return {"chosen_step": kept[-1], "last_step_acc": accuracy(report, "last step")}


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def accuracy(report: dict, method: str) -> float:
    row = next(r for r in report["results"] if r["method"] == method)
    return float(row["acc"]["mean"])


def page(rows: list[dict], command: str, minutes: float, jobs: int, tasks: int) -> str:
    """The Markdown page of the seeds' ``rows``. The columns of the checkpoint choice (the
    step the label-free validation kept, the last step's accuracy) appear only when the runs
    validated; otherwise the model is the run's final weights."""
    meta = np.array([r["meta_trained"] for r in rows])
    pre = np.array([r["pretrained_only"] for r in rows])
    chosen = any(r["chosen_step"] is not None for r in rows)
    model = (
        "the checkpoint its label-free validation chose (the step in the next column), and of "
        "its last step on the same tasks"
        if chosen
        else "its final weights (the run chooses no step: with `train.ema` they are the moving "
        "average of the weights over the run)"
    )
    choice_head, choice_rule = ("chosen step | last step | ", "---:|---:|") if chosen else ("", "")
    lines = [
        "# The demo over seeds",
        "",
        f"Measured {dt.date.today().isoformat()} ({minutes:.0f} min, 1 thread each, {jobs} at "
        "once, on a 2-core CPU shared with other jobs) with",
        "",
        "```bash",
        command,
        "```",
        "",
        f"Each seed is a fresh `metaunsup demo --seed N --tasks {tasks} --threads 1`; accuracy "
        f"on its test tasks (10 digits x 20, digits/test) of {model}. The last columns read the "
        "digits' labels after the run to judge its CACTUs pseudo-classes (made from "
        "digits/train): the mean and worst Hungarian accuracy of its partitions, and how many "
        "of them merge two digits; the ARI between its partitions (mean over pairs; 1.00: "
        "one partition up to relabelling) reads no labels.",
        "",
        f"| seed | meta-trained | {choice_head}pre-training only | K-means | "
        "gain over pre-training | partition acc. mean / worst | partitions merging digits | "
        "ARI between partitions |",
        f"|---:|---:|{choice_rule}---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        choice = (
            f"{fmt(r['chosen_step'], 'd')} | {fmt(r['last_step_acc'], '.3f')} | " if chosen else ""
        )
        lines.append(
            f"| {r['seed']} | {r['meta_trained']:.3f} | {choice}{r['pretrained_only']:.3f} | "
            f"{r['kmeans']:.3f} | {r['meta_trained'] - r['pretrained_only']:+.3f} | "
            f"{r['partition_acc_mean']:.3f} / {r['partition_acc_min']:.3f} | "
            f"{r['partitions_merging_digits']}/{r['partitions']} | "
            f"{r['partition_ari_mean']:.2f} |"
        )
    corr = float(np.corrcoef(meta, [r["partition_acc_mean"] for r in rows])[0, 1])
    last = [r["last_step_acc"] for r in rows if r["last_step_acc"] is not None]
    instead = (
        f" The last step instead: mean {np.mean(last):.3f}, worst {np.min(last):.3f}."
        if chosen and len(last) == len(rows)
        else ""
    )
    lines += [
        "",
        f"Meta-trained: mean {meta.mean():.3f}, worst {meta.min():.3f}, best {meta.max():.3f} "
        f"(pre-training only: mean {pre.mean():.3f}, worst {pre.min():.3f}); "
        f"beats the pre-training alone on {int((meta > pre).sum())} of {len(rows)} seeds. "
        f"Correlation over seeds between the meta-trained accuracy and its partitions' mean "
        f"accuracy: {corr:.2f}.{instead}",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--tasks", type=int, default=300)
    parser.add_argument("--jobs", type=int, default=1, help="seeds run at once")
    parser.add_argument("--work", type=Path, default=Path("runs/demo-seeds"))
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results")
    parser.add_argument("--name", default="demo_seeds", help="file name of the page and JSON")
    args = parser.parse_args(argv)
    y = load("digits", "train").y.numpy()
    t0 = time.perf_counter()

    def run(seed: int) -> dict:
        out = args.work / f"seed{seed}"
        cmd = [sys.executable, "-m", "metaunsup", "demo", "--seed", str(seed), "--tasks",
               str(args.tasks), "--threads", "1", "--out", str(out), "--quiet"]  # fmt: skip
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        report = json.loads((out / "results.json").read_text())
        row = {
            "seed": seed,
            "meta_trained": accuracy(report, MODEL),
            "pretrained_only": accuracy(report, PRETRAINED),
            "kmeans": accuracy(report, "kmeans"),
            "seconds": round(time.perf_counter() - start, 1),
            **checkpoint_choice(out / "run", seed, args.tasks),
            **pseudo_class_quality(out / "run", y),
        }
        print(json.dumps(row), flush=True)
        return row

    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(run, args.seeds))
    minutes = (time.perf_counter() - t0) / 60
    command = "python benchmarks/demo_seeds.py " + " ".join(sys.argv[1:])
    text = page(rows, command, minutes, args.jobs, args.tasks)
    print(text)
    record = {
        "benchmark": "demo_seeds",
        "command": command,
        "date": dt.date.today().isoformat(),
        "rows": rows,
    }
    atomic_write_json(args.out / f"{args.name}.json", record)
    atomic_write_text(args.out / f"{args.name}.md", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
